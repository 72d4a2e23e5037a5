"""The Blueprint class of every API blueprint (one argument parser for all of them)."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint as SmorestBlueprint
from marshmallow import Schema
from webargs.flaskparser import FlaskParser
from werkzeug.datastructures import CombinedMultiDict


class Parser(FlaskParser):
    """webargs, with two changes:

    * a "multipart" location: the form fields and files of one multipart body, loaded (and
      documented) with a single schema;
    * unknown query parameters are refused like unknown JSON fields (a typo such as
      ``?stat=closed`` must not silently return every case).
    """

    __location_map__ = {**FlaskParser.__location_map__, "multipart": "load_multipart"}
    DEFAULT_UNKNOWN_BY_LOCATION = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "query": None,
        "querystring": None,
    }

    def load_multipart(self, req: Any, schema: Schema) -> Any:
        return self._makeproxy(CombinedMultiDict([req.form, req.files]), schema)


class Blueprint(SmorestBlueprint):
    # two @arguments (location="form" and "files") would leave an OpenAPI 2 "in: formData"
    # parameter in the 3.1 document and a request body without the form fields
    ARGUMENTS_PARSER = Parser()
    DEFAULT_LOCATION_CONTENT_TYPE_MAPPING = {
        **SmorestBlueprint.DEFAULT_LOCATION_CONTENT_TYPE_MAPPING,
        "multipart": "multipart/form-data",
    }

"""The Blueprint class of every API blueprint (one argument parser for all of them)."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint as SmorestBlueprint
from flask_smorest.utils import resolve_schema_instance
from marshmallow import Schema
from webargs.flaskparser import FlaskParser
from werkzeug.datastructures import CombinedMultiDict

from api.fastdump import compile_dump


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

    def response(self, status_code: Any, schema: Any = None, **kwargs: Any) -> Any:
        """flask-smorest's ``response``, its schema's ``dump`` compiled (api/fastdump.py):
        the same output, without marshmallow's per-value calls on every response."""
        if schema is not None and not isinstance(schema, str | dict):
            schema = resolve_schema_instance(schema)
            fast = compile_dump(schema)
            if fast is not None:
                schema.dump = fast  # this instance only: the one smorest calls
        return super().response(status_code, schema, **kwargs)

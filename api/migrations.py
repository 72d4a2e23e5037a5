"""Migration of running cases to a newer definition version (administrators only)."""

from __future__ import annotations

from typing import Any

from flask import jsonify, url_for
from marshmallow import Schema, fields, validate

from api import context as ctx
from api.blueprint import Blueprint
from api.schemas import StrictSchema
from workflow.errors import NotFound, NotPermitted, ValidationFailed
from workflow.migration import Migrator, parse_where, runs
from workflow.model import MigrationRun

blp = Blueprint(
    "migrations",
    __name__,
    url_prefix="/api/v1",
    description="Moving running cases to a newer definition version",
)

REF = validate.Regexp(r"^[a-z][a-z0-9_]*@[1-9][0-9]*$", error="use key@version, e.g. drug_rehab@1")


class WhereIn(StrictSchema):
    state = fields.List(fields.String(validate=validate.Length(min=1, max=64)))
    unit = fields.List(fields.String(validate=validate.Regexp(r"^\d{2}(\d{3})?$")))


class MigrationIn(StrictSchema):
    from_ = fields.String(data_key="from", required=True, validate=REF)
    to = fields.String(required=True, validate=REF)
    where = fields.Nested(WhereIn, load_default=dict)
    dry_run = fields.Boolean(load_default=True)


class StateRow(Schema):
    from_state = fields.String()
    to_state = fields.String(allow_none=True)
    cases = fields.Integer()
    reason = fields.Dict(allow_none=True)


class DeadlineRow(Schema):
    key = fields.String()
    policy = fields.String()
    cases = fields.Integer()
    changed = fields.Integer(metadata={"description": "cases whose due date moves"})


class DocumentRow(Schema):
    state = fields.String()
    document = fields.String()
    cases_missing = fields.Integer()


class Unmovable(Schema):
    case_id = fields.Integer()
    number = fields.String(allow_none=True)
    state = fields.String()
    reason = fields.Dict(allow_none=True)


class DryRunOut(Schema):
    from_ = fields.String(data_key="from", attribute="from")
    to = fields.String()
    where = fields.Dict()
    cases = fields.Integer()
    movable = fields.Integer()
    unmovable_count = fields.Integer()
    states = fields.List(fields.Nested(StateRow))
    deadlines = fields.List(fields.Nested(DeadlineRow))
    new_documents = fields.List(fields.Nested(DocumentRow))
    unmovable = fields.List(fields.Nested(Unmovable))


class RunOut(Schema):
    id = fields.Integer()
    definition_key = fields.String()
    from_version = fields.Integer()
    to_version = fields.Integer()
    criteria = fields.Dict(data_key="where")
    actor = fields.String()
    status = fields.String(metadata={"description": "queued | running | finished"})
    started_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)
    moved = fields.Integer()
    skipped = fields.Integer(metadata={"description": "cases that could not move (when done)"})


def _admin() -> Any:
    actor = ctx.actor()
    if not actor.is_admin:
        raise NotPermitted("only administrators may migrate cases")
    return actor


@blp.route("/migrations", methods=["POST"])
@blp.arguments(MigrationIn)
@blp.response(200, DryRunOut, description="dry run: what would happen, nothing changed")
@blp.alt_response(202, schema=RunOut, description="the run is queued; the worker moves the cases")
def create_migration(body: dict[str, Any]) -> Any:
    """Dry-run (default) or queue a migration of running cases, following the plan that the
    newer version declares. A queued run is carried out by the background worker, one case per
    transaction, each audited; poll ``GET /migrations/{id}``."""
    actor = _admin()
    migrator = Migrator(ctx.services().cases)
    where = parse_where({k: v for k, v in body["where"].items() if v})
    if body["dry_run"]:
        return migrator.dry_run(body["from_"], body["to"], where, ctx.now())
    if migrator.count(body["from_"], where) == 0:
        raise ValidationFailed(
            "no case matches: nothing to migrate", errors={"where": ["matches no case"]}
        )
    run_id = migrator.start(body["from_"], body["to"], where, actor, ctx.now(), status="queued")
    with ctx.services().session_factory() as s:
        run = s.get(MigrationRun, run_id)
        out = RunOut().dump(run)
    resp = jsonify(out)
    resp.status_code = 202
    resp.headers["Location"] = url_for("migrations.get_migration", run_id=run_id)
    return resp


@blp.route("/migrations")
@blp.response(200, RunOut(many=True))
def list_migrations() -> list[Any]:
    """Migration runs, newest first."""
    _admin()
    return runs(ctx.services().cases)


@blp.route("/migrations/<int:run_id>")
@blp.response(200, RunOut)
def get_migration(run_id: int) -> Any:
    """One migration run and how far it has got."""
    _admin()
    with ctx.services().session_factory() as s:
        run = s.get(MigrationRun, run_id)
        if run is None:
            raise NotFound(f"migration run {run_id} not found", run_id=run_id)
        return run

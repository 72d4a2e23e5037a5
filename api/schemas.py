"""Marshmallow schemas of every request and response body (they also make the OpenAPI spec)."""

from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

MAX_ID = 2**63 - 1  # ids are 64-bit integers: larger numbers must never reach the database


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class SubjectIn(StrictSchema):
    full_name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    unit_code = fields.String(required=True, metadata={"description": "commune/ward code"})
    date_of_birth = fields.Date(allow_none=True)
    sex = fields.String(allow_none=True, validate=validate.OneOf(["male", "female", "other"]))
    national_id = fields.String(allow_none=True, validate=validate.Length(max=12))
    address = fields.String(allow_none=True, validate=validate.Length(max=500))


class CaseCreate(StrictSchema):
    definition = fields.String(load_default="drug_rehab", metadata={"description": "key"})
    version = fields.Integer(allow_none=True, load_default=None, strict=True)
    subject = fields.Nested(SubjectIn, required=True)
    data = fields.Dict(keys=fields.String(), load_default=dict)


class FormIn(StrictSchema):
    data = fields.Dict(keys=fields.String(), load_default=dict)


class RevokeIn(StrictSchema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000))


class CaseListArgs(StrictSchema):
    state = fields.String()
    group = fields.String()
    unit = fields.String()
    overdue = fields.Boolean(load_default=False)
    q = fields.String(validate=validate.Length(min=1, max=100))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String()
    lang = fields.String(validate=validate.OneOf(["vi", "en"]))


class CommandOut(Schema):
    case_id = fields.Integer()
    number = fields.String()
    state = fields.String()
    version = fields.Integer()
    audit_seq = fields.Integer()
    action = fields.String()
    from_state = fields.String(allow_none=True)


class DefinitionRef(Schema):
    key = fields.String()
    version = fields.Integer()


class DeadlineOut(Schema):
    id = fields.Integer()
    key = fields.String()
    label = fields.String()
    due_on = fields.Date()
    overdue = fields.Boolean()
    working_days_left = fields.Integer()
    escalation_level = fields.Integer()


class DocumentOut(Schema):
    id = fields.Integer()
    type = fields.String()
    filename = fields.String()
    media_type = fields.String()
    size = fields.Integer()
    sha256 = fields.String()
    uploaded_at = fields.DateTime()
    revoked = fields.Boolean()
    revoke_reason = fields.String(allow_none=True)


class AvailabilityOut(Schema):
    key = fields.String()
    label = fields.String()
    to = fields.String()
    ready = fields.Boolean()
    missing_documents = fields.List(fields.Raw())
    unmet_guards = fields.List(fields.String())
    form_guards = fields.List(fields.String())


class SubjectOut(Schema):
    full_name = fields.String()
    date_of_birth = fields.Date(allow_none=True)
    sex = fields.String(allow_none=True)
    national_id = fields.String(allow_none=True)
    address = fields.String(allow_none=True)
    unit_code = fields.String()


class _CaseFields(Schema):
    id = fields.Integer()
    number = fields.String()
    state = fields.String()
    group = fields.String()
    version = fields.Integer()
    definition = fields.Nested(DefinitionRef)
    unit_code = fields.String()
    province_code = fields.String()
    opened_at = fields.DateTime()
    state_entered_at = fields.DateTime()
    closed_at = fields.DateTime(allow_none=True)


class CaseSummaryOut(_CaseFields):
    full_name = fields.String(
        allow_none=True, metadata={"description": "null for agencies that do not see the person"}
    )


class CaseOut(_CaseFields):
    fields_ = fields.Dict(data_key="fields")
    subject = fields.Nested(
        SubjectOut,
        allow_none=True,
        metadata={"description": "null for agencies that do not see the person (definition)"},
    )
    deadlines = fields.List(fields.Nested(DeadlineOut))
    documents = fields.List(fields.Nested(DocumentOut))
    available_transitions = fields.List(fields.Nested(AvailabilityOut))
    available_activities = fields.List(fields.String())


class CasePageOut(Schema):
    items = fields.List(fields.Nested(CaseSummaryOut))
    next = fields.String(allow_none=True)


class AuditEventOut(Schema):
    seq = fields.Integer()
    at = fields.DateTime()
    actor = fields.String()
    agency = fields.String(allow_none=True)
    role = fields.String(allow_none=True)
    action = fields.String()
    from_state = fields.String(allow_none=True)
    to_state = fields.String(allow_none=True)
    definition = fields.String(allow_none=True)
    data_hash = fields.String(allow_none=True)
    documents = fields.List(fields.Dict())
    extra = fields.Dict(
        metadata={"description": "a hand-over (transfer) or a version migration, when any"}
    )
    hash = fields.String()
    prev_hash = fields.String()


class VerifyOut(Schema):
    ok = fields.Boolean()
    checked = fields.Integer()
    first_bad_event = fields.Integer(allow_none=True)
    reason = fields.String()


class AccessLogArgs(StrictSchema):
    case = fields.Integer(validate=validate.Range(min=0, max=MAX_ID))
    limit = fields.Integer(load_default=200, validate=validate.Range(min=1, max=1000))


class AccessLogOut(Schema):
    id = fields.Integer()
    at = fields.DateTime()
    user_id = fields.Integer()
    case_id = fields.Integer()
    document_id = fields.Integer(allow_none=True)
    action = fields.String()


class LabelOut(Schema):
    vi = fields.String()
    en = fields.String()


class DefinitionSummaryOut(Schema):
    key = fields.String()
    version = fields.Integer()
    title = fields.Nested(LabelOut)
    effective_from = fields.Date()
    effective_to = fields.Date(allow_none=True)
    in_force = fields.Boolean(metadata={"description": "the version new cases get today"})


class DefinitionOut(DefinitionSummaryOut):
    legal_basis = fields.List(fields.String())
    parameters = fields.Dict()
    document_types = fields.List(fields.Dict())
    agency_types = fields.List(fields.Dict())
    roles = fields.List(fields.Dict())
    states = fields.List(fields.Dict())
    transitions = fields.List(fields.Dict())
    activities = fields.List(fields.Dict())
    deadlines = fields.List(fields.Dict())

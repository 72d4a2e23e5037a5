"""/api/v1/definitions: what each version of a process requires, with JSON Schema forms."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from api import context as ctx
from api.blueprint import Blueprint
from api.schemas import DefinitionOut, DefinitionSummaryOut
from workflow.calendar import business_date
from workflow.definition import Action, Definition, Duration
from workflow.forms import json_schema

blp = Blueprint(
    "definitions",
    __name__,
    url_prefix="/api/v1/definitions",
    description="Versioned case definitions",
)


def _in_force(d: Definition) -> bool:
    reg = ctx.services().registry
    try:
        return reg.in_force(d.key, business_date(ctx.now())) is d
    except Exception:
        return False


def _summary(d: Definition) -> dict[str, Any]:
    return {
        "key": d.key,
        "version": d.version,
        "title": asdict(d.title),
        "effective_from": d.effective_from,
        "effective_to": d.effective_to,
        "in_force": _in_force(d),
    }


def _duration(x: Duration | None) -> dict | None:
    if x is None:
        return None
    q = x.amount
    return {"unit": x.unit, "value": q.value, "param": q.param, "field": q.field}


def _action(d: Definition, a: Action, lang: str) -> dict[str, Any]:
    return {
        "key": a.key,
        "label": asdict(a.label),
        "cite": a.cite,
        "allowed": [{"agency": p.agency, "roles": list(p.roles)} for p in a.allowed],
        "required_documents": [list(r.any_of) for r in a.documents],
        "guards": [{"key": g.key, "message": asdict(g.message), "test": g.test} for g in a.guards],
        "starts_deadlines": list(a.effects.start_deadlines),
        "notify": [{"agencies": list(n.agencies), "template": n.template} for n in a.notify],
        "form": json_schema(d, a, lang),
    }


@blp.route("")
@blp.response(200, DefinitionSummaryOut(many=True))
def list_definitions() -> list[dict[str, Any]]:
    """Every definition version, and which one new cases get today."""
    ctx.actor()
    return [_summary(d) for d in ctx.services().registry.all()]


@blp.route("/<key>/<int:version>")
@blp.response(200, DefinitionOut)
def get_definition(key: str, version: int) -> dict[str, Any]:
    """States, transitions, activities, documents and deadlines of one version."""
    ctx.actor()
    d = ctx.services().registry.get(key, version)
    lang = ctx.lang()
    return _summary(d) | {
        "legal_basis": list(d.legal_basis),
        "parameters": {
            p.name: {"value": p.value, "verified": p.verified, "cite": p.cite, "note": p.note}
            for p in d.parameters.values()
        },
        "document_types": [
            {
                "code": t.code,
                "label": asdict(t.label),
                "media_types": list(t.media_types),
                "max_size": t.max_size,
            }
            for t in d.document_types.values()
        ],
        "agency_types": [
            {"code": a.code, "label": asdict(a.label), "level": a.level}
            for a in d.agency_types.values()
        ],
        "roles": [{"code": r.code, "label": asdict(r.label)} for r in d.roles.values()],
        "states": [
            {
                "key": s.key,
                "label": asdict(s.label),
                "kind": s.kind,
                "group": s.group,
                "responsible": s.responsible,
                "max_duration": _duration(s.max_duration),
            }
            for s in d.states.values()
        ],
        "transitions": [
            _action(d, t, lang) | {"from": list(t.sources), "to": t.dest, "automatic": t.automatic}
            for t in d.transitions.values()
        ],
        "activities": [
            _action(d, a, lang) | {"states": list(a.states)} for a in d.activities.values()
        ],
        "deadlines": [
            {
                "key": x.key,
                "label": asdict(x.label),
                "duration": _duration(x.duration),
                "anchor": x.anchor,
                "reminder": _duration(x.reminder),
                "escalation": [
                    {"after": _duration(e.after), "notify": list(e.notify)} for e in x.escalation
                ],
                "met_by": list(x.met_by),
                "on_due": x.on_due,
                "cite": x.cite,
            }
            for x in d.deadlines.values()
        ],
    }

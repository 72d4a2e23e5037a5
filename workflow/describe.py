"""A plain-text description of a definition (``rehabflow definitions show``)."""

from __future__ import annotations

from workflow.definition import Definition, DocRequirement, Duration


def _duration(d: Duration | None) -> str:
    if d is None:
        return "-"
    q = d.amount
    amount = q.value if q.value is not None else (f"{{param {q.param}}}" if q.param else q.field)
    return f"{amount} {d.unit.replace('_', ' ')}"


def _docs(reqs: tuple[DocRequirement, ...]) -> str:
    return ", ".join(" | ".join(r.any_of) for r in reqs) or "-"


def describe(d: Definition, lang: str = "vi") -> str:
    """States, transitions (who, documents, fields, deadlines), activities and deadlines."""
    out = [
        f"{d.ref} — {d.title.get(lang)}",
        f"effective from {d.effective_from:%d/%m/%Y}",
        "legal basis: " + "; ".join(d.legal_basis),
        "",
        "STATES",
    ]
    for s in d.states.values():
        out.append(
            f"  {s.key:<28} {s.kind:<8} group={s.group or '-':<20} "
            f"responsible={s.responsible or '-':<22} {s.label.get(lang)}"
        )
    out += ["", "TRANSITIONS"]
    for t in d.transitions.values():
        who = (
            "system (automatic)"
            if t.automatic
            else "; ".join(f"{p.agency}[{','.join(p.roles)}]" for p in t.allowed)
        )
        out.append(f"  {t.key}: {', '.join(t.sources)} -> {t.dest}   {t.label.get(lang)}")
        out.append(f"      who: {who}")
        out.append(f"      documents: {_docs(t.documents)}")
        if t.fields:
            out.append(
                "      fields: "
                + ", ".join(f"{f.name}:{f.type}{'*' if f.required else ''}" for f in t.fields)
            )
        if t.guards:
            out.append("      guards: " + ", ".join(g.key for g in t.guards))
        if t.effects.start_deadlines:
            out.append("      starts: " + ", ".join(t.effects.start_deadlines))
        if t.notify:
            out.append("      notifies: " + ", ".join(a for n in t.notify for a in n.agencies))
    out += ["", "ACTIVITIES"]
    for a in d.activities.values():
        out.append(
            f"  {a.key} in {', '.join(a.states)}: {a.label.get(lang)}; "
            f"documents: {_docs(a.documents)}"
        )
    out += ["", "DEADLINES"]
    for dl in d.deadlines.values():
        ladder = "; ".join(f"+{_duration(e.after)} -> {','.join(e.notify)}" for e in dl.escalation)
        out.append(
            f"  {dl.key}: {_duration(dl.duration)} from {dl.anchor}"
            f"{' -> fires ' + dl.on_due if dl.on_due else ''}   {dl.label.get(lang)}"
        )
        out.append(
            f"      met by: {', '.join(dl.met_by) or '-'}; reminder: "
            f"{_duration(dl.reminder)}; escalation: {ladder or '-'}"
        )
    unverified = [p for p in d.parameters.values() if not p.verified]
    if unverified:
        out += ["", "UNVERIFIED PARAMETERS (check before relying on them)"]
        out += [f"  {p.name} = {p.value!r}: {p.note}" for p in unverified]
    return "\n".join(out)

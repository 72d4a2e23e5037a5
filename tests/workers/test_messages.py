"""Rendering notifications: Vietnamese labels from the definition, dates as dd/mm/yyyy in
Vietnam time, HTML escaped (plain text and subject not), the default template for a topic
without its own, English when a topic has no Vietnamese template; and the payloads the engine
and the sweep really write render into the inbox in Vietnamese."""

from __future__ import annotations

from datetime import date

import pytest
from jinja2 import ChoiceLoader, DictLoader
from sqlalchemy import select

from workers import messages
from workers.messages import render
from workers.relay import relay
from workers.tasks import inline_enqueue
from workflow.bootstrap import Services
from workflow.model import InboxItem, OutboxMessage
from workflow.registry import Registry
from workflow.sweep import sweep_deadlines

from ..integration.helpers import Driver, at
from .helpers import PERSONAL, add_agency

NUMBER = "17662-2035-000001"


def transition(**extra: object) -> dict:
    return {
        "case_id": 7,
        "case_number": NUMBER,
        "action": "request_determination",
        "from_state": "detected",
        "to_state": "addiction_determination",
        "definition": "drug_rehab@1",
        "at": "2035-03-04T20:30:00+00:00",  # 03:30 on 5 March in Vietnam
        **extra,
    }


def deadline(topic_extra: dict) -> dict:
    return {
        "case_id": 7,
        "case_number": NUMBER,
        "action": "deadline.reminder",
        "state": "addicted",
        "definition": "drug_rehab@1",
        "at": "2035-03-11T02:00:00+00:00",
        "deadline": "register_voluntary",
        "due_on": "2035-03-12",
        **topic_extra,
    }


def test_transition_in_vietnamese_and_english(registry: Registry) -> None:
    d = registry.get("drug_rehab", 1)
    t = d.transitions["request_determination"]
    src, dst = d.states["detected"].label, d.states["addiction_determination"].label
    vi = render("request_determination", transition(), registry, public_url="https://rf.vn/")
    assert vi.subject == f"[rehabflow] Hồ sơ {NUMBER}: {t.label.vi}"
    for body in (vi.text, vi.html):
        assert "Kính gửi quý cơ quan" in body and NUMBER in body
        assert f"Việc: {t.label.vi}" in body
        assert f"Trạng thái: {src.vi} → {dst.vi}" in body
        assert "Thời điểm: 05/03/2035 03:30" in body  # Vietnam time, not UTC's 04/03
        assert "https://rf.vn/cases/7" in body
    assert '<html lang="vi">' in vi.html and '<a href="https://rf.vn/cases/7">' in vi.html
    assert "<" not in vi.text

    en = render("request_determination", transition(), registry, lang="en")
    assert en.subject == f"[rehabflow] Case {NUMBER}: {t.label.en}"
    for body in (en.text, en.html):
        assert "Dear colleagues" in body and f"State: {src.en} → {dst.en}" in body
        assert "When: 05/03/2035 03:30" in body
        assert "/cases/" not in body  # no public URL given, no link
    assert '<html lang="en">' in en.html
    for secret in PERSONAL:
        assert secret not in vi.text + vi.html + vi.subject + en.text + en.html


def test_html_is_escaped_text_and_subject_are_not(registry: Registry) -> None:
    evil = '<script>alert("x")</script> & co'
    r = render("unknown_topic", transition(case_number=evil, action=evil), registry)
    assert evil not in r.html and "<script>" not in r.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; co" in r.html
    assert evil in r.text and evil in r.subject  # plain text: no entities
    link = render(
        "x", transition(case_id='1"><img src=x>'), registry, public_url="https://rf.vn"
    ).html
    assert '"><img' not in link and "&#34;&gt;&lt;img" in link


def test_unknown_topic_and_unknown_definition_fall_back(registry: Registry) -> None:
    r = render("no_such_topic", transition(), registry)
    assert r == render("request_determination", transition(), registry)  # both: default.vi
    bare = render("no_such_topic", transition(definition="nope@9", action="x:y"), registry)
    assert bare.subject == f"[rehabflow] Hồ sơ {NUMBER}: x:y"  # raw keys, no crash
    assert "Trạng thái: detected → addiction_determination" in bare.text
    assert render("x", transition(definition="drug_rehab@oops"), registry).subject.endswith(
        "request_determination"
    )


def test_deadline_reminder_and_escalation(registry: Registry) -> None:
    label = registry.get("drug_rehab", 1).deadlines["register_voluntary"].label
    r = render("deadline_reminder", deadline({}), registry)
    assert r.subject == f"[rehabflow] Sắp đến hạn: {label.vi} — hồ sơ {NUMBER} (hạn 12/03/2035)"
    for body in (r.text, r.html):
        assert f"Hồ sơ số {NUMBER}" in body.replace("<strong>", "").replace("</strong>", "")
        assert label.vi in body and "12/03/2035" in body and "2035-03-12" not in body

    e = render("deadline_escalated", deadline({"level": 2}), registry, public_url="https://rf.vn")
    assert e.subject == f"[rehabflow] QUÁ HẠN (cấp 2): {label.vi} — hồ sơ {NUMBER}"
    for body in (e.text, e.html):
        assert "quá hạn" in body and label.vi in body
        assert "Hạn cuối là ngày 12/03/2035" in body and "cấp 2" in body
        assert "https://rf.vn/cases/7" in body

    en = render("deadline_reminder", deadline({}), registry, lang="en")
    assert en.subject == f"[rehabflow] Due soon: {label.en} — case {NUMBER} (due 12/03/2035)"
    assert label.en in en.text and "Due date: 12/03/2035" in en.text


@pytest.mark.parametrize("topic", ["deadline_reminder", "deadline_escalated"])
def test_english_html_of_a_deadline_keeps_the_deadline(registry: Registry, topic: str) -> None:
    label = registry.get("drug_rehab", 1).deadlines["register_voluntary"].label
    en = render(topic, deadline({"level": 1}), registry, lang="en")
    assert "12/03/2035" in en.text  # the plain-text part is right ...
    assert "12/03/2035" in en.html  # ... the HTML part, which mail clients show, is not
    assert label.en in en.html or label.vi in en.html


def test_english_fallback_when_a_topic_has_no_vietnamese_template(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = DictLoader(
        {
            "checkin_missed.en.subject": "Missed check-in — case {{ p.case_number }}",
            "checkin_missed.en.txt": "Missed on {{ due_on }}: {{ labels.deadline }}",
            "checkin_missed.en.html": "<p>Missed on {{ due_on }}: {{ labels.deadline }}</p>",
            "checkin_missed.vi.subject": "Vắng điểm danh — hồ sơ {{ p.case_number }}",
        }
    )
    monkeypatch.setattr(messages._env, "loader", ChoiceLoader([extra, messages._env.loader]))
    payload = deadline({"deadline": "check_in_due"})
    label = registry.get("drug_rehab", 1).deadlines["check_in_due"].label
    r = render("checkin_missed", payload, registry)  # Vietnamese asked for
    assert r.subject == f"Vắng điểm danh — hồ sơ {NUMBER}"  # the one Vietnamese template
    # no Vietnamese body: the topic's English one (not the generic default), Vietnamese labels
    assert r.text == f"Missed on 12/03/2035: {label.vi}"
    assert r.html == f"<p>Missed on 12/03/2035: {label.vi}</p>"


def test_engine_and_sweep_payloads_reach_the_inbox_in_vietnamese(
    services: Services,
    actors,  # noqa: ANN001
) -> None:
    """Result on 03/02/2027: registration due 17/02 (after Tết), reminded on 16/02, escalated
    on 18/02; the real outbox payloads render with labels and dd/mm/yyyy dates."""
    d = services.registry.get("drug_rehab", 1)
    drive = Driver(services.cases, actors)
    cid = drive.open(date(2027, 2, 1)).case_id
    drive.fire(cid, "request_determination", date(2027, 2, 1))
    drive.fire(cid, "record_addiction_result", date(2027, 2, 3), result_date="2027-02-03")
    add_agency(services, "commune_pc")
    assert sweep_deadlines(services.cases, at(date(2027, 2, 16))).reminders == 1
    assert sweep_deadlines(services.cases, at(date(2027, 2, 18))).escalations == 1
    now = at(date(2027, 2, 18), 10)
    enqueue = inline_enqueue(services, now)
    relay(services, enqueue, now)
    enqueue.flush()
    label = d.deadlines["register_voluntary"].label.vi
    with services.session_factory() as s:
        topics = {m.id: m.topic for m in s.execute(select(OutboxMessage)).scalars()}
        items = list(s.execute(select(InboxItem).order_by(InboxItem.id)).scalars())
    by_topic: dict[str, list[InboxItem]] = {}
    for item in items:
        assert item.topic == topics[item.message_id]
        by_topic.setdefault(item.topic, []).append(item)
    assert {"deadline_reminder", "deadline_escalated", "record_addiction_result"} <= set(by_topic)
    for item in by_topic["deadline_reminder"]:
        assert item.subject.startswith("[rehabflow] Sắp đến hạn: " + label)
        assert "(hạn 17/02/2027)" in item.subject and "Hạn cuối: 17/02/2027" in item.body
    for item in by_topic["deadline_escalated"]:
        assert item.subject.startswith("[rehabflow] QUÁ HẠN (cấp 1): " + label)
        assert "Hạn cuối là ngày 17/02/2027" in item.body
    result = d.transitions["record_addiction_result"].label.vi
    for item in by_topic["record_addiction_result"]:
        assert item.subject.endswith(result) and "03/02/2027 09:00" in item.body
    for item in items:
        for secret in PERSONAL:
            assert secret not in item.subject and secret not in item.body

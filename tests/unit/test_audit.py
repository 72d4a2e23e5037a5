"""The canonical body split around its seq (``audit.hash_parts``): the parts PostgreSQL's
one-statement append hashes must give, for any seq, the bytes ``audit.chain_hash`` hashes."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from workflow import audit
from workflow.model import AuditEvent

# JSON-like values as commands put them in ``extra`` and ``documents`` (text of any script,
# quotes, backslashes, control characters, nested keys named like the body's, "seq" included)
KEYS = st.one_of(st.sampled_from(["seq", "role", "to_state", "a", "z", "Đơn"]), st.text())
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)
OPTIONAL_TEXT = st.none() | st.text(max_size=20)


@given(
    seq=st.integers(min_value=1, max_value=10**15),
    other_seq=st.integers(min_value=1, max_value=10**15),
    case_id=st.none() | st.integers(min_value=1),
    actor=st.text(max_size=20),
    role=OPTIONAL_TEXT,
    from_state=OPTIONAL_TEXT,
    to_state=OPTIONAL_TEXT,
    extra=st.dictionaries(KEYS, VALUES, max_size=4),
    documents=st.lists(st.dictionaries(KEYS, VALUES, max_size=3), max_size=3),
    at=st.datetimes(timezones=st.just(UTC)),
)
def test_the_parts_and_any_seq_give_the_canonical_body(
    seq: int,
    other_seq: int,
    case_id: int | None,
    actor: str,
    role: str | None,
    from_state: str | None,
    to_state: str | None,
    extra: dict,
    documents: list,
    at: datetime,
) -> None:
    event = AuditEvent(
        seq=seq,
        case_id=case_id,
        at=at,
        actor_id=7,
        actor=actor,
        agency_id=None,
        agency_type="commune_police",
        role=role,
        action="transition:x",
        from_state=from_state,
        to_state=to_state,
        definition="drug_rehab@3",
        data_hash=None,
        documents=documents,
        extra=extra,
    )
    before, after = audit.hash_parts(event)
    assert before + str(seq) + after == audit.canonical(audit.event_body(event))
    # the parts do not depend on the seq: the database puts in the one it gives
    event.seq = other_seq
    assert audit.hash_parts(event) == (before, after)
    prev = "ab" * 32
    sql_side = hashlib.sha256((prev + before + str(other_seq) + after).encode("utf-8"))
    assert sql_side.hexdigest() == audit.chain_hash(prev, event)

"""The in-app agency inbox: exactly once per (message, agency), thanks to a unique index."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from workflow.model import InboxItem


def put(
    session: Session,
    message_id: str,
    agency_id: int,
    case_id: int | None,
    topic: str,
    subject: str,
    body: str,
    now: datetime,
) -> bool:
    """Add the item unless it is already there; True if it was added. Caller commits."""
    exists = session.execute(
        select(InboxItem.id).where(
            InboxItem.message_id == message_id, InboxItem.agency_id == agency_id
        )
    ).first()
    if exists:
        return False
    session.add(
        InboxItem(
            message_id=message_id,
            agency_id=agency_id,
            case_id=case_id,
            topic=topic,
            subject=subject[:500],
            body=body,
            created_at=now,
        )
    )
    return True

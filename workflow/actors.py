"""Who is acting: a user of an agency, with a role, covering some administrative units."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from workflow.definition import SYSTEM_AGENCY
from workflow.errors import NotFound
from workflow.model import User


@dataclass(frozen=True)
class Actor:
    user_id: int | None
    username: str
    agency_id: int | None
    agency_type: str
    role: str
    units: frozenset[str]
    is_admin: bool = False

    @property
    def is_system(self) -> bool:
        return self.agency_type == SYSTEM_AGENCY

    def covers(self, unit_code: str, province_code: str) -> bool:
        """Jurisdiction: the actor's agency covers the commune or its whole province."""
        return self.is_system or unit_code in self.units or province_code in self.units


SYSTEM = Actor(None, "system", None, SYSTEM_AGENCY, "system", frozenset(), is_admin=True)


def actor_for(session: Session, username: str) -> Actor:
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None or not user.active:
        raise NotFound(f"no active user {username!r}", username=username)
    return actor_from_user(user)


def actor_from_user(user: User) -> Actor:
    return Actor(
        user_id=user.id,
        username=user.username,
        agency_id=user.agency_id,
        agency_type=user.agency.type,
        role=user.role,
        units=frozenset(u.unit_code for u in user.agency.units),
        is_admin=user.is_admin,
    )

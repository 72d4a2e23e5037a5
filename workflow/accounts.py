"""Users, agencies and API tokens (no web framework here: the CLI and the API both use it)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from workflow import units
from workflow.actors import Actor, actor_from_user
from workflow.db import read_only
from workflow.errors import NotFound, ValidationFailed
from workflow.model import Agency, AgencyUnit, ApiToken, User
from workflow.registry import Registry

TOKEN_PREFIX = "rf_"  # noqa: S105 - a marker, not a secret
_hasher = PasswordHasher()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class NewToken:
    token: str
    id: int
    expires_at: datetime


class Accounts:
    def __init__(self, session_factory: sessionmaker[Session], registry: Registry) -> None:
        self.session_factory = session_factory
        self.registry = registry

    def _known_agency_types(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for d in self.registry.all():
            for code, agency in d.agency_types.items():
                out[code] = agency.label.vi
        return out

    def _known_roles(self) -> set[str]:
        return {code for d in self.registry.all() for code in d.roles}

    def create_user(
        self,
        username: str,
        agency_type: str,
        role: str,
        unit_code: str,
        now: datetime,
        *,
        password: str | None = None,
        full_name: str = "",
        is_admin: bool = False,
    ) -> User:
        """Create a user in the agency of ``agency_type`` covering ``unit_code`` (made if new)."""
        errors: dict[str, list[str]] = {}
        types = self._known_agency_types()
        if agency_type not in types:
            errors["agency_type"] = [f"unknown agency type; known: {', '.join(sorted(types))}"]
        if role not in self._known_roles():
            errors["role"] = [f"unknown role; known: {', '.join(sorted(self._known_roles()))}"]
        unit = units.get(unit_code)
        if unit is None:
            errors["unit"] = ["unknown commune/ward or province code (vietnam-provinces)"]
        if (
            not username
            or len(username) > 64
            or not username.replace(".", "").replace("_", "").replace("-", "").isalnum()
        ):
            errors["username"] = ["1-64 letters, digits, '.', '_' or '-'"]
        if password is not None and len(password) < 10:
            errors["password"] = ["at least 10 characters"]
        if errors:
            raise ValidationFailed("invalid user", errors=errors)
        with self.session_factory() as session:
            if session.execute(select(User).where(User.username == username)).scalar_one_or_none():
                raise ValidationFailed("invalid user", errors={"username": ["already exists"]})
            code = f"{agency_type}-{unit.code}"
            agency = session.execute(select(Agency).where(Agency.code == code)).scalar_one_or_none()
            if agency is None:
                agency = Agency(
                    code=code,
                    type=agency_type,
                    name=f"{types[agency_type]} - {units.label(unit.code)}",
                )
                agency.units.append(AgencyUnit(unit_code=unit.code))
                session.add(agency)
                session.flush()
            user = User(
                username=username,
                full_name=full_name,
                agency_id=agency.id,
                role=role,
                is_admin=is_admin,
                active=True,
                created_at=now,
                password_hash=_hasher.hash(password) if password else None,
            )
            session.add(user)
            session.commit()
            session.refresh(user)
            return user

    def create_token(self, username: str, now: datetime, *, expires_days: int = 90) -> NewToken:
        if not 1 <= expires_days <= 3650:
            raise ValidationFailed("invalid expiry", errors={"expires_days": ["1 to 3650"]})
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.session_factory() as session:
            user = session.execute(
                select(User).where(User.username == username)
            ).scalar_one_or_none()
            if user is None:
                raise NotFound(f"no user {username!r}")
            row = ApiToken(
                user_id=user.id,
                token_hash=token_hash(token),
                prefix=token[:10],
                created_at=now,
                expires_at=now + timedelta(days=expires_days),
            )
            session.add(row)
            session.commit()
            return NewToken(token, row.id, row.expires_at)

    def revoke_token(self, token_or_id: str, now: datetime) -> int:
        """Revoke a token given as the token itself or its id; returns how many were revoked."""
        with self.session_factory() as session:
            if token_or_id.isdigit():
                stmt = select(ApiToken).where(ApiToken.id == int(token_or_id))
            else:
                stmt = select(ApiToken).where(ApiToken.token_hash == token_hash(token_or_id))
            rows = [r for r in session.execute(stmt).scalars() if r.revoked_at is None]
            for r in rows:
                r.revoked_at = now
            session.commit()
            return len(rows)

    def authenticate_token(self, token: str, now: datetime) -> Actor | None:
        """The actor of a valid (known, unexpired, unrevoked, active user) token, else None."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
            return None
        with read_only(), self.session_factory() as session:
            row = session.execute(
                select(ApiToken).where(ApiToken.token_hash == token_hash(token))
            ).scalar_one_or_none()
            if row is None or row.revoked_at is not None or row.expires_at <= now:
                return None
            if not row.user.active:
                return None
            return actor_from_user(row.user)

    def authenticate_password(self, username: str, password: str) -> Actor | None:
        with read_only(), self.session_factory() as session:
            user = session.execute(
                select(User).where(User.username == username)
            ).scalar_one_or_none()
            if user is None or not user.active or not user.password_hash:
                _hasher.hash(password)  # same work whether or not the user exists
                return None
            try:
                _hasher.verify(user.password_hash, password)
            except (VerificationError, InvalidHashError):
                return None
            return actor_from_user(user)

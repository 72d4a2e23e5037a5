"""Users, agencies and API tokens (no web framework here: the CLI and the API both use it).

The administrators' changes of an existing user or agency (deactivate, reactivate, a new
password, an agency's e-mail and webhook) are audit events without a case, in the same hash
chain as the cases' events (like :mod:`workflow.targets`); they never record a password or a
webhook secret, only that it changed.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from workflow import audit, units
from workflow.actors import Actor, actor_from_user
from workflow.db import read_only
from workflow.errors import NotFound, NotPermitted, ValidationFailed
from workflow.model import Agency, AgencyUnit, ApiToken, User
from workflow.registry import Registry
from workflow.uow import UnitOfWork

TOKEN_PREFIX = "rf_"  # noqa: S105 - a marker, not a secret
MIN_PASSWORD_LENGTH = 10
MIN_SECRET_LENGTH = 16  # a webhook's HMAC key
MAX_SECRET_LENGTH = 128  # agencies.webhook_secret
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_hasher = PasswordHasher()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class NewToken:
    token: str
    id: int
    expires_at: datetime


# the actor of a token: one round trip (token, user, agency and its units), no ORM objects,
# built once (this runs on every API request; constructing it showed in the profile of a read)
_TOKEN_ACTOR = (
    select(
        ApiToken.revoked_at,
        ApiToken.expires_at,
        User.id,
        User.username,
        User.agency_id,
        User.role,
        User.is_admin,
        User.active,
        Agency.type,
        AgencyUnit.unit_code,
    )
    .join(User, User.id == ApiToken.user_id)
    .join(Agency, Agency.id == User.agency_id)
    .outerjoin(AgencyUnit, AgencyUnit.agency_id == Agency.id)
    .where(ApiToken.token_hash == bindparam("token_hash"))
)


class _TokenRow(NamedTuple):  # a row of _TOKEN_ACTOR (one per unit of the user's agency)
    revoked_at: datetime | None
    expires_at: datetime
    id: int
    username: str
    agency_id: int
    role: str
    is_admin: bool
    active: bool
    type: str
    unit_code: str | None


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
        if password is not None and len(password) < MIN_PASSWORD_LENGTH:
            errors["password"] = [f"at least {MIN_PASSWORD_LENGTH} characters"]
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
        params = {"token_hash": token_hash(token)}
        bind = self.session_factory.kw["bind"]
        if bind.dialect.name == "postgresql":  # one statement: no BEGIN, no ROLLBACK
            # through the driver, on a pooled connection of its own in autocommit: half the
            # CPU of a SQLAlchemy connection's (bench/README.md, (15) and (21))
            with UnitOfWork(self.session_factory, autocommit=True, read_only=True) as uow:
                rows = [_TokenRow(*r) for r in uow.fetch_all(_TOKEN_ACTOR, params)]
        else:
            with read_only(), self.session_factory() as session:
                rows = [_TokenRow(*r) for r in session.execute(_TOKEN_ACTOR, params)]
        if not rows:
            return None
        first = rows[0]
        if first.revoked_at is not None or first.expires_at <= now or not first.active:
            return None
        return Actor(
            user_id=first.id,
            username=first.username,
            agency_id=first.agency_id,
            agency_type=first.type,
            role=first.role,
            units=frozenset(r.unit_code for r in rows if r.unit_code is not None),
            is_admin=first.is_admin,
        )

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

    # ------------------------------------------------------------------ administration
    @staticmethod
    def _admin(actor: Actor) -> None:
        if not actor.is_admin:
            raise NotPermitted("only administrators may change users and agencies")

    @staticmethod
    def _user(session: Session, user_id: int) -> User:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound(f"no user {user_id}", user_id=user_id)
        return user

    def set_active(self, actor: Actor, user_id: int, active: bool, now: datetime) -> User:
        """Deactivate or reactivate a user, audited (``user.deactivated``/``user.reactivated``).

        A deactivated user can no longer sign in, their web session ends at its next request
        and their API tokens are refused (:meth:`authenticate_token`); reactivating gives the
        unexpired, unrevoked tokens back. An administrator cannot deactivate themselves.
        """
        self._admin(actor)
        if not active and actor.user_id == user_id:
            raise ValidationFailed(
                "you cannot deactivate yourself", errors={"active": ["not yourself"]}
            )
        with UnitOfWork(self.session_factory) as uow:
            user = self._user(uow.session, user_id)
            if user.active != active:
                user.active = active
                action = "user.reactivated" if active else "user.deactivated"
                body = {"user_id": user.id, "username": user.username}
                audit.append_admin(uow.session, actor, now, action, body)
                uow.commit()
            return user

    def set_password(self, actor: Actor, user_id: int, password: str, now: datetime) -> User:
        """Give a user a new password, audited (``user.password_reset``, never the password).

        The user's web sessions end (they carry a fingerprint of the password hash).
        """
        self._admin(actor)
        if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
            raise ValidationFailed(
                "invalid password",
                errors={"password": [f"at least {MIN_PASSWORD_LENGTH} characters"]},
            )
        with UnitOfWork(self.session_factory) as uow:
            user = self._user(uow.session, user_id)
            user.password_hash = _hasher.hash(password)
            body = {"user_id": user.id, "username": user.username}
            audit.append_admin(uow.session, actor, now, "user.password_reset", body)
            uow.commit()
            return user

    def update_agency(
        self,
        actor: Actor,
        agency_id: int,
        now: datetime,
        *,
        email: str | None,
        webhook_url: str | None,
        webhook_secret: str | None = None,
        clear_secret: bool = False,
    ) -> Agency:
        """Set an agency's e-mail and webhook, audited (``agency.updated``: which fields).

        ``email``/``webhook_url``: the new values (empty or None: none). ``webhook_secret``:
        a new secret, or None to keep the one stored (it is never read back);
        ``clear_secret`` removes it. A webhook URL needs a secret.
        """
        self._admin(actor)
        email = (email or "").strip() or None
        webhook_url = (webhook_url or "").strip() or None
        errors = _agency_errors(email, webhook_url, webhook_secret)
        with UnitOfWork(self.session_factory) as uow:
            agency = uow.session.get(Agency, agency_id)
            if agency is None:
                raise NotFound(f"no agency {agency_id}", agency_id=agency_id)
            secret = agency.webhook_secret
            if webhook_secret:
                secret = webhook_secret
            elif clear_secret:
                secret = None
            if webhook_url and not secret and "webhook_secret" not in errors:
                errors["webhook_secret"] = ["a webhook URL needs a secret"]
            if errors:
                raise ValidationFailed("invalid agency", errors=errors)
            new = {"email": email, "webhook_url": webhook_url, "webhook_secret": secret}
            changed = sorted(k for k, v in new.items() if getattr(agency, k) != v)
            if changed:
                for k in changed:
                    setattr(agency, k, new[k])
                body = {"agency_id": agency.id, "agency": agency.code, "changed": changed}
                audit.append_admin(uow.session, actor, now, "agency.updated", body)
                uow.commit()
            return agency


def _agency_errors(
    email: str | None, webhook_url: str | None, webhook_secret: str | None
) -> dict[str, list[str]]:
    errors: dict[str, Any] = {}
    if email is not None and (len(email) > 255 or not EMAIL_RE.match(email)):
        errors["email"] = ["an e-mail address like name@example.gov.vn"]
    if webhook_url is not None and not _valid_url(webhook_url):
        errors["webhook_url"] = ["an http(s) address with a host, no spaces, no user:password"]
    if webhook_secret and not (
        MIN_SECRET_LENGTH <= len(webhook_secret) <= MAX_SECRET_LENGTH
        and webhook_secret == webhook_secret.strip()
    ):
        errors["webhook_secret"] = [
            f"{MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters, no spaces at the ends"
        ]
    return errors


def _valid_url(url: str) -> bool:
    if len(url) > 500 or any(c.isspace() for c in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and parts.username is None
        and parts.password is None
    )

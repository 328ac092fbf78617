"""Users (argon2 password hashes, roles) and server-side login sessions."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import AuthSession, User
from app.review.errors import InvalidInputError, NotFoundError

ROLES = ("reviewer", "adjudicator", "admin")
LOCAL_USER = "local"
# The automatic user on loopback may do everything, so the local demo shows every page.
LOCAL_ROLE = "admin"
SESSION_LIFETIME = timedelta(days=14)
NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_hasher = PasswordHasher()


@dataclass(frozen=True)
class UserInfo:
    """The signed-in user as the API sees it."""

    id: int
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        """True for admins."""
        return self.role == "admin"

    def as_dict(self) -> dict[str, object]:
        """JSON form."""
        return {"id": self.id, "name": self.name, "role": self.role}


def _info(user: User) -> UserInfo:
    return UserInfo(id=user.id, name=user.name, role=user.role)


def hash_password(password: str) -> str:
    """An argon2id hash of the password."""
    return _hasher.hash(password)


def count_users(*, session: Session) -> int:
    """Users who can sign in with a password (the automatic local admin does not count)."""
    return int(
        session.execute(select(func.count(User.id)).where(User.password_hash.is_not(None))).scalar_one()
    )


def create_user(*, session: Session, name: str, password: str, role: str = "reviewer") -> UserInfo:
    """Add a user; the caller commits."""
    if not NAME_RE.match(name) or name == LOCAL_USER:
        raise InvalidInputError(
            f"invalid user name {name!r}: use 1-64 letters, digits, _ . @ - (not 'local')"
        )
    if role not in ROLES:
        raise InvalidInputError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if len(password) < 8:
        raise InvalidInputError("password must have at least 8 characters")
    if session.execute(select(User.id).where(User.name == name)).first() is not None:
        raise InvalidInputError(f"user {name!r} exists already")
    user = User(name=name, password_hash=hash_password(password), role=role)
    session.add(user)
    session.flush()
    return _info(user)


def authenticate(*, session: Session, name: str, password: str) -> UserInfo | None:
    """The user when the password matches, else None (same answer for unknown names)."""
    user = session.execute(select(User).where(User.name == name)).scalar_one_or_none()
    if user is None or user.password_hash is None:
        # Hash anyway so response time does not reveal which names exist.
        _hasher.hash(password or "x")
        return None
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return _info(user)


def ensure_local_user(*, session: Session) -> UserInfo:
    """The automatic local admin used on loopback while no real user exists; created on first use."""
    user = session.execute(select(User).where(User.name == LOCAL_USER)).scalar_one_or_none()
    if user is None:
        try:
            with session.begin_nested():
                user = User(name=LOCAL_USER, password_hash=None, role=LOCAL_ROLE)
                session.add(user)
        except IntegrityError:
            # The browser's first page load sends several requests at once; another one created it.
            user = session.execute(select(User).where(User.name == LOCAL_USER)).scalar_one()
    return _info(user)


# The automatic local admin's CSRF token lives in an auth_sessions row under this marker, so every server
# process (and a restart) hands out the same token. A cookie can never match it: a cookie is looked up by
# its SHA-256 hex digest, and the marker is not hex.
LOCAL_SESSION_MARKER = "local-autologin"


def local_csrf_token(*, session: Session, user: UserInfo) -> str:
    """The automatic local admin's CSRF token, shared by every server process through the database."""
    query = select(AuthSession.csrf_token).where(AuthSession.token_hash == LOCAL_SESSION_MARKER)
    token = session.execute(query).scalar_one_or_none()
    if token is not None:
        return token
    try:
        with session.begin_nested():
            session.add(
                AuthSession(
                    token_hash=LOCAL_SESSION_MARKER,
                    user_id=user.id,
                    csrf_token=secrets.token_urlsafe(24),
                    expires_at=datetime.now(UTC) + SESSION_LIFETIME,
                )
            )
    except IntegrityError:
        # Another process (or a parallel first request) created it first.
        pass
    return session.execute(query).scalar_one()


def get_user(*, session: Session, name: str) -> UserInfo:
    """A user by name, or NotFoundError."""
    user = session.execute(select(User).where(User.name == name)).scalar_one_or_none()
    if user is None:
        raise NotFoundError(f"no user named {name!r}")
    return _info(user)


def list_users(*, session: Session) -> list[UserInfo]:
    """Every user, by name."""
    return [_info(u) for u in session.execute(select(User).order_by(User.name)).scalars()]


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(*, session: Session, user: UserInfo) -> tuple[str, str]:
    """Create a login session; returns (cookie token, CSRF token). Only the token's hash is stored."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    session.add(
        AuthSession(
            token_hash=_token_hash(token),
            user_id=user.id,
            csrf_token=csrf,
            expires_at=datetime.now(UTC) + SESSION_LIFETIME,
        )
    )
    session.flush()
    return token, csrf


def resolve_session(*, session: Session, token: str) -> tuple[UserInfo, str] | None:
    """The user and CSRF token of a live session cookie, or None."""
    row = session.execute(
        select(AuthSession, User)
        .join(User, User.id == AuthSession.user_id)
        .where(AuthSession.token_hash == _token_hash(token))
    ).first()
    if row is None:
        return None
    auth, user = row
    expires = auth.expires_at if auth.expires_at.tzinfo else auth.expires_at.replace(tzinfo=UTC)
    if expires < datetime.now(UTC):
        return None
    return _info(user), auth.csrf_token


def end_session(*, session: Session, token: str) -> None:
    """Forget a login session."""
    session.execute(delete(AuthSession).where(AuthSession.token_hash == _token_hash(token)))

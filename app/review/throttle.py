"""Sign-in throttling in the database: atomic counters per name and client, shared by every server process."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.db.models import LoginAttempt, utcnow
from app.review.errors import TooManyAttemptsError

WINDOW = timedelta(minutes=5)


@dataclass(frozen=True)
class Limit:
    """At most `attempts` sign-in attempts per WINDOW for one key of this kind."""

    kind: str
    attempts: int
    why: str


# A guesser at one name from one client is stopped after a few tries, while the same person signing in from
# elsewhere is not locked out. A client spraying many names is stopped too. A name tried from many clients
# at once gets a higher cap: it bounds distributed guessing, and a lock-out then needs that many clients.
PAIR = Limit("pair", 5, "too many failed sign-ins for this name from here; wait a few minutes")
CLIENT = Limit("client", 30, "too many sign-in attempts from this address; wait a few minutes")
NAME = Limit("name", 100, "too many sign-in attempts for this name; wait a few minutes")


def _keys(name: str, client: str) -> list[tuple[Limit, str]]:
    return [(PAIR, f"pair:{client}:{name}"), (CLIENT, f"client:{client}"), (NAME, f"name:{name}")]


def _bump(session: Session, key: str, now: datetime) -> int:
    """Count one attempt for `key` in one atomic statement; a window that has passed starts again at 1."""
    table = LoginAttempt.__table__
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    insert = dialect.insert(table).values(key=key, window_start=now, attempts=1)
    stale = table.c.window_start < now - WINDOW
    upsert = insert.on_conflict_do_update(
        index_elements=[table.c.key],
        set_={
            "attempts": case((stale, 1), else_=table.c.attempts + 1),
            "window_start": case((stale, insert.excluded.window_start), else_=table.c.window_start),
        },
    ).returning(table.c.attempts)
    return int(session.execute(upsert).scalar_one())


def reserve_attempt(*, session: Session, name: str, client: str) -> None:
    """Count this sign-in attempt before the password is checked; TooManyAttemptsError when over a limit.

    Counted first and committed at once, so parallel attempts cannot all slip through between a read and a
    write, and the slow password hash is never run for a refused attempt.
    """
    now = utcnow()
    counts = [(limit, _bump(session, key, now)) for limit, key in _keys(name, client)]
    session.commit()
    for limit, count in counts:
        if count > limit.attempts:
            raise TooManyAttemptsError(limit.why)


def forget_failures(*, session: Session, name: str, client: str) -> None:
    """After a good sign-in: it no longer counts, so the counters hold failures (and attempts under way).

    This name from this client starts afresh; the client's and the name's counts lose this one attempt, so
    a team signing in from behind one address is never limited by its own good sign-ins.
    """
    (_, pair), *others = _keys(name, client)
    session.execute(delete(LoginAttempt).where(LoginAttempt.key == pair))
    keys = [key for _, key in others]
    session.execute(
        update(LoginAttempt)
        .where(LoginAttempt.key.in_(keys), LoginAttempt.attempts > 0)
        .values(attempts=LoginAttempt.attempts - 1)
    )
    session.commit()

"""Sign in, sign out, who am I."""

from __future__ import annotations

import logging
import os
from functools import partial
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from app.api.deps import ReleasingRoute, get_settings
from app.api.schemas import SignedIn, SignedOut, error_responses
from app.api.security import COOKIE_NAME, CurrentUser, Db, current_user, no_store
from app.config import Settings
from app.review.errors import TooManyAttemptsError
from app.review.throttle import forget_failures, reserve_attempt
from app.review.users import SESSION_LIFETIME, UserInfo, authenticate, end_session, start_session

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/api/auth", tags=["auth"], dependencies=[Depends(no_store)], route_class=ReleasingRoute
)


class LoginBody(BaseModel):
    """Credentials."""

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


# Password guessing: after this many failures for one name within the window, refuse for the rest of it.
# Argon2 costs 64 MiB and ~0.1 s of a core per sign-in (also for unknown names, so timing tells nothing).
# Hashing runs on its own few threads, so a flood of sign-ins queues here instead of taking every worker
# thread (and the memory) that readers need; beyond the queue length it is refused at once.
PASSWORD_HASH_THREADS = max(1, min(4, (os.cpu_count() or 2) // 2))
PASSWORD_QUEUE_MAX = 32
BUSY_DELAY_S = 1.0


def _password_limiter(request: Request) -> anyio.CapacityLimiter:
    limiter: anyio.CapacityLimiter | None = getattr(request.app.state, "password_limiter", None)
    if limiter is None:
        limiter = anyio.CapacityLimiter(PASSWORD_HASH_THREADS)
        request.app.state.password_limiter = limiter
    return limiter


@router.post("/login", response_model=SignedIn, responses=error_responses(401, 422, 429, 503))
async def login(
    body: LoginBody,
    request: Request,
    response: Response,
    db: Db,
    settings: Annotated[Settings, Depends(get_settings)],
) -> Any:
    """Check the password, start a session and set the session cookie."""
    client = request.client.host if request.client else "?"
    try:
        # Counted in the database before the password check: atomic, and shared by every server process.
        await run_in_threadpool(_reserve, db, body.username, client)
    except TooManyAttemptsError:
        log.warning("sign-in refused for %r from %s: too many attempts", body.username, client)
        raise
    limiter = _password_limiter(request)
    if limiter.statistics().tasks_waiting >= PASSWORD_QUEUE_MAX:
        log.warning("sign-in refused for %r from %s: password check queue full", body.username, client)
        # Answer slowly (a sleeping coroutine costs nothing): a client retrying at once would otherwise
        # spin on cheap refusals and take the CPU that readers need.
        await anyio.sleep(BUSY_DELAY_S)
        raise HTTPException(
            status_code=503,
            detail={"detail": "too many sign-ins at once; try again shortly", "code": "busy"},
            headers={"Retry-After": "2"},
        )
    check = partial(_sign_in, db, body.username, body.password, client)
    signed_in = await anyio.to_thread.run_sync(check, limiter=limiter)
    if signed_in is None:
        log.warning("failed sign-in for %r from %s", body.username, client)
        raise HTTPException(
            status_code=401, detail={"detail": "wrong user name or password", "code": "bad_login"}
        )
    user, token, csrf = signed_in
    log.info("signed in %r from %s", user.name, client)
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies(),
        path="/",
    )
    return {"user": user.as_dict(), "csrf_token": csrf}


def _reserve(db: Session, name: str, client: str) -> None:
    """Count the attempt (TooManyAttemptsError over a limit); the connection is back when it returns."""
    try:
        reserve_attempt(session=db, name=name, client=client)
    finally:
        db.close()


def _sign_in(db: Session, name: str, password: str, client: str) -> tuple[UserInfo, str, str] | None:
    """Check the password and start a session in one worker thread; the connection is back when it returns."""
    try:
        user = authenticate(session=db, name=name, password=password)
        if user is None:
            return None
        token, csrf = start_session(session=db, user=user)
        db.commit()
        forget_failures(session=db, name=name, client=client)
        return user, token, csrf
    finally:
        # Like ReleasingRoute: no connection may wait for another thread (app.api.deps).
        db.close()


@router.post("/logout", response_model=SignedOut, responses=error_responses(401, 403))
def logout(
    request: Request,
    response: Response,
    user: CurrentUser,
    db: Db,
    settings: Annotated[Settings, Depends(get_settings)],
) -> Any:
    """End the session and clear the cookie."""
    token = request.cookies.get(COOKIE_NAME)
    if token:
        end_session(session=db, token=token)
        db.commit()
    response.delete_cookie(
        COOKIE_NAME, path="/", httponly=True, samesite="lax", secure=settings.secure_cookies()
    )
    return {"signed_out": user.name}


@router.get("/me", response_model=SignedIn, responses=error_responses(401))
def me(request: Request, user: Annotated[UserInfo | None, Depends(current_user)]) -> Any:
    """The signed-in user and the CSRF token for writes; 401 when anonymous."""
    if user is None:
        raise HTTPException(status_code=401, detail="not signed in")
    return {"user": user.as_dict(), "csrf_token": request.state.csrf_token}

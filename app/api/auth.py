"""Sign in, sign out, who am I."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field

from app.api.deps import ReleasingRoute, get_settings
from app.api.schemas import SignedIn, SignedOut, error_responses
from app.api.security import COOKIE_NAME, CurrentUser, Db, current_user, no_store
from app.config import Settings
from app.review.users import SESSION_LIFETIME, UserInfo, authenticate, end_session, start_session

router = APIRouter(
    prefix="/api/auth", tags=["auth"], dependencies=[Depends(no_store)], route_class=ReleasingRoute
)


class LoginBody(BaseModel):
    """Credentials."""

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


# Password guessing: after this many failures for one name within the window, refuse for the rest of it.
MAX_FAILURES = 5
FAILURE_WINDOW_S = 300.0


def _recent_failures(request: Request, name: str) -> list[float]:
    failures: dict[str, list[float]] | None = getattr(request.app.state, "login_failures", None)
    if failures is None:
        failures = {}
        request.app.state.login_failures = failures
    now = time.monotonic()
    recent = [t for t in failures.get(name, []) if now - t < FAILURE_WINDOW_S]
    failures[name] = recent
    return recent


@router.post("/login", response_model=SignedIn, responses=error_responses(401, 422, 429))
def login(
    body: LoginBody,
    request: Request,
    response: Response,
    db: Db,
    settings: Annotated[Settings, Depends(get_settings)],
) -> Any:
    """Check the password, start a session and set the session cookie."""
    failures = _recent_failures(request, body.username)
    if len(failures) >= MAX_FAILURES:
        detail = "too many failed sign-ins for this name; wait a few minutes"
        raise HTTPException(status_code=429, detail={"detail": detail, "code": "too_many_attempts"})
    user = authenticate(session=db, name=body.username, password=body.password)
    if user is None:
        failures.append(time.monotonic())
        raise HTTPException(
            status_code=401, detail={"detail": "wrong user name or password", "code": "bad_login"}
        )
    failures.clear()
    token, csrf = start_session(session=db, user=user)
    db.commit()
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=settings.cookie_secure,
        path="/",
    )
    return {"user": user.as_dict(), "csrf_token": csrf}


@router.post("/logout", response_model=SignedOut, responses=error_responses(401, 403))
def logout(request: Request, response: Response, user: CurrentUser, db: Db) -> Any:
    """End the session and clear the cookie."""
    token = request.cookies.get(COOKIE_NAME)
    if token:
        end_session(session=db, token=token)
        db.commit()
    response.delete_cookie(COOKIE_NAME, path="/")
    return {"signed_out": user.name}


@router.get("/me", response_model=SignedIn, responses=error_responses(401))
def me(request: Request, user: Annotated[UserInfo | None, Depends(current_user)]) -> Any:
    """The signed-in user and the CSRF token for writes; 401 when anonymous."""
    if user is None:
        raise HTTPException(status_code=401, detail="not signed in")
    return {"user": user.as_dict(), "csrf_token": request.state.csrf_token}

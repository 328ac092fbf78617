"""Auth dependencies: session cookie, CSRF on cookie-authenticated writes, roles, loopback autologin."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Response
from sqlalchemy.orm import Session

from app.api.deps import get_db, get_settings
from app.config import Settings
from app.config import is_loopback_name as is_loopback
from app.review.users import UserInfo, count_users, ensure_local_user, local_csrf_token, resolve_session

COOKIE_NAME = "lesion_review_session"
CSRF_HEADER = "X-CSRF-Token"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def current_user(
    request: Request,
    db: Annotated[Session, Depends(get_db)],
    settings: Annotated[Settings, Depends(get_settings)],
) -> UserInfo | None:
    """The signed-in user (session cookie, or the automatic local admin on loopback), else None."""
    if hasattr(request.state, "user"):
        cached: UserInfo | None = request.state.user
        return cached
    user: UserInfo | None = None
    csrf: str | None = None
    token = request.cookies.get(COOKIE_NAME)
    if token:
        found = resolve_session(session=db, token=token)
        if found is not None:
            user, csrf = found
    if user is None and is_loopback(settings.host):
        client = request.client.host if request.client else None
        if is_loopback(client) and count_users(session=db) == 0:
            user = ensure_local_user(session=db)
            # In the database, not the process: a cross-site page cannot read it, and every worker agrees.
            csrf = local_csrf_token(session=db, user=user)
    request.state.user = user
    request.state.csrf_token = csrf
    # End the transaction: the connection goes back to the pool before the request waits for the next
    # worker thread (see app.api.deps.ReleasingRoute).
    db.commit()
    return user


def require_user(request: Request, user: Annotated[UserInfo | None, Depends(current_user)]) -> UserInfo:
    """The signed-in user; 401 when anonymous, 403 on a write without the session's CSRF token."""
    if user is None:
        raise HTTPException(status_code=401, detail="sign in first (POST /api/auth/login)")
    if request.method in WRITE_METHODS:
        expected = getattr(request.state, "csrf_token", None)
        given = request.headers.get(CSRF_HEADER, "")
        if not expected or not given or not secrets.compare_digest(str(expected), given):
            raise HTTPException(
                status_code=403,
                detail={"detail": f"missing or wrong {CSRF_HEADER} header", "code": "csrf_failed"},
            )
    return user


def require_admin(user: Annotated[UserInfo, Depends(require_user)]) -> UserInfo:
    """The signed-in admin; 403 for reviewers."""
    if user.role != "admin":
        raise HTTPException(status_code=403, detail="this needs the admin role")
    return user


def no_store(response: Response) -> None:
    """Review and prediction JSON must never be cached."""
    response.headers["Cache-Control"] = "no-store"


CurrentUser = Annotated[UserInfo, Depends(require_user)]
AdminUser = Annotated[UserInfo, Depends(require_admin)]
Db = Annotated[Session, Depends(get_db)]

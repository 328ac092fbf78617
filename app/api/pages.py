"""Server-rendered pages of the browser review app: thin Jinja2 shells around plain ES modules."""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.api.deps import ReleasingRoute
from app.api.security import Db, current_user
from app.review.page_vocabulary import page_vocabulary
from app.review.series import key_image_stored
from app.review.users import UserInfo

router = APIRouter(include_in_schema=False, route_class=ReleasingRoute)
MaybeUser = Annotated[UserInfo | None, Depends(current_user)]

KEY_SLICE_RE = re.compile(r"^\d{6}_\d{2}_\d{2}_\d{3,4}\.png$")

NAV = (
    ("/", "Work list"),
    ("/overview", "Overview"),
    ("/evaluation", "Evaluation"),
    ("/screening", "Screening"),
    ("/volume", "Volume"),
    ("/team", "Team"),
)


def _login_redirect(request: Request) -> Response:
    """Send an anonymous visitor to the sign-in page, coming back here afterwards."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def _render(
    request: Request, template: str, page: str, *, status_code: int = 200, **context: Any
) -> Response:
    """Render one page template with the shared context (nav, csrf meta, vocabulary, page module name)."""
    templates = request.app.state.templates
    csrf = getattr(request.state, "csrf_token", "") or ""
    context = {"page": page, "nav": NAV, "csrf_token": csrf, "vocab": page_vocabulary(), **context}
    response: Response = templates.TemplateResponse(request, template, context, status_code=status_code)
    # Pages hold no data (the JS reads the API), but a stale shell after a deploy would load old modules.
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    """Sign-in page."""
    return _render(request, "login.html", "login", title="Sign in")


@router.get("/", response_class=HTMLResponse)
def worklist_page(request: Request, user: MaybeUser) -> Response:
    """Work list of key slices with filters, progress and keyboard navigation."""
    if user is None:
        return _login_redirect(request)
    return _render(request, "worklist.html", "worklist", title="Work list")


@router.get("/viewer/{file_name}", response_class=HTMLResponse)
def viewer_page(request: Request, file_name: str, user: MaybeUser, db: Db) -> Response:
    """Slice viewer for one key slice; a well-formed name the database lacks gets a 404 page, not a viewer."""
    if not KEY_SLICE_RE.match(file_name):
        raise HTTPException(status_code=404, detail=f"not a key slice name: {file_name!r}")
    if user is None:
        return _login_redirect(request)
    stored = key_image_stored(session=db, file_name=file_name)
    if stored is None:
        return _render(
            request, "notfound.html", "notfound", status_code=404, title="Not found", file_name=file_name
        )
    return _render(
        request, "viewer.html", "viewer", title=f"Viewer {file_name}", file_name=file_name, key_stored=stored
    )


@router.get("/docs", response_class=HTMLResponse)
def api_docs_page(request: Request) -> Response:
    """Swagger UI for /openapi.json, from files the app serves itself (works offline; no inline script)."""
    response: Response = request.app.state.templates.TemplateResponse(request, "docs.html", {})
    return response


@router.get("/followup/{file_name}", response_class=HTMLResponse)
def followup_page(request: Request, file_name: str, user: MaybeUser) -> Response:
    """Follow-up view: the key slice's lesions in every study of the patient, axes over time, response."""
    if not KEY_SLICE_RE.match(file_name):
        raise HTTPException(status_code=404, detail=f"not a key slice name: {file_name!r}")
    if user is None:
        return _login_redirect(request)
    return _render(request, "followup.html", "followup", title=f"Follow-up {file_name}", file_name=file_name)


@router.get("/overview", response_class=HTMLResponse)
def overview_page(request: Request, user: MaybeUser) -> Response:
    """Dataset overview: body map, progress and histograms."""
    if user is None:
        return _login_redirect(request)
    return _render(request, "overview.html", "overview", title="Dataset overview")


@router.get("/evaluation", response_class=HTMLResponse)
def evaluation_page(request: Request, user: MaybeUser) -> Response:
    """Detector evaluation page with the FROC curve."""
    if user is None:
        return _login_redirect(request)
    return _render(request, "evaluation.html", "evaluation", title="Evaluation")


@router.get("/screening", response_class=HTMLResponse)
def screening_page(request: Request, user: MaybeUser) -> Response:
    """Batch screening for possible missed lesions: admins start it, everyone sees its progress and result."""
    if user is None:
        return _login_redirect(request)
    return _render(request, "screening.html", "screening", title="Screening", can_start=user.is_admin)


@router.get("/volume", response_class=HTMLResponse)
def volume_page(request: Request, user: MaybeUser) -> Response:
    """Volume screening: admins start it; everyone reviews its candidates, best first, in the viewer."""
    if user is None:
        return _login_redirect(request)
    return _render(request, "volume.html", "volume", title="Volume screening", can_start=user.is_admin)


@router.get("/team", response_class=HTMLResponse)
def team_page(request: Request, user: MaybeUser) -> Response:
    """Team review: assignments (admins create them), my queue, links to adjudication and the report."""
    if user is None:
        return _login_redirect(request)
    return _render(request, "team.html", "team", title="Team review", is_admin=user.is_admin)


@router.get("/team/reads/{read_id}", response_class=HTMLResponse)
def team_read_page(request: Request, read_id: int, user: MaybeUser) -> Response:
    """One read of a key slice: the reader's own marks, blind to the other reader's."""
    if user is None:
        return _login_redirect(request)
    return _render(request, "teamread.html", "teamread", title=f"Read {read_id}", read_id=read_id)


@router.get("/team/adjudications", response_class=HTMLResponse)
def adjudication_page(request: Request, user: MaybeUser) -> Response:
    """The adjudication queue and one case's two reads side by side (?id=)."""
    if user is None:
        return _login_redirect(request)
    return _render(request, "adjudicate.html", "adjudicate", title="Adjudication")


@router.get("/team/report", response_class=HTMLResponse)
def team_report_page(request: Request, user: MaybeUser) -> Response:
    """Agreement per reader pair with plots and CSV downloads."""
    if user is None:
        return _login_redirect(request)
    return _render(request, "teamreport.html", "teamreport", title="Agreement report", is_admin=user.is_admin)

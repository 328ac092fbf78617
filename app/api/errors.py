"""The one module mapping domain exceptions to HTTP answers (JSON detail + code); bad input is never a 500."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.deeplesion.errors import (
    CorruptSliceError,
    CsvValidationError,
    DeepLesionError,
    InvalidGeometryError,
    InvalidWindowError,
    SliceNotFoundError,
    UnsafePathError,
)
from app.detection.errors import DetectionError
from app.review.errors import (
    DuplicateLesionError,
    EditConflictError,
    InvalidInputError,
    JobRunningError,
    NoModelError,
    NotFoundError,
    PermissionDeniedError,
    ReviewError,
    TooManyAttemptsError,
)
from app.review.serialize import iso

log = logging.getLogger(__name__)

# Status codes for the HTTPException raised directly by handlers and by the framework (unknown route...).
_HTTP_CODES: dict[int, str] = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    503: "unavailable",
}


def error_response(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    """A JSON error body in the contract's shape; extra fields are made JSON-safe."""
    body: dict[str, Any] = {"detail": detail, "code": code}
    body.update(jsonable_encoder(extra))
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def relative_file(path: str | os.PathLike[str], data_dir: Path | None) -> str:
    """A file path as shown to clients: relative to the data root, never absolute."""
    p = Path(path)
    if data_dir is not None:
        try:
            return p.resolve().relative_to(Path(data_dir).resolve()).as_posix()
        except (ValueError, OSError):
            pass
    # Outside the root (or no root known): the bare file name leaks nothing about the server's disk.
    return p.name


def without_paths(text: str, path: str | os.PathLike[str], shown: str, data_dir: Path | None) -> str:
    """A decoder message with the server's absolute paths replaced (they leak the disk layout)."""
    for absolute in sorted({str(path), os.path.realpath(path)}, key=len, reverse=True):
        text = text.replace(absolute, shown)
    if data_dir is not None:
        for root in sorted({str(data_dir), os.path.realpath(data_dir)}, key=len, reverse=True):
            text = text.replace(root, "<data>")
    return text


def _data_dir(request: Request) -> Path | None:
    settings = getattr(request.app.state, "settings", None)
    data_dir = getattr(settings, "data_dir", None)
    # Object-store errors name keys relative to the dataset root already.
    return data_dir if isinstance(data_dir, Path) else None


def deeplesion_error_response(exc: DeepLesionError, data_dir: Path | None) -> JSONResponse:
    """Map a dataset-level error to its HTTP answer."""
    if isinstance(exc, SliceNotFoundError):
        file = relative_file(exc.path, data_dir)
        return error_response(404, "slice_not_found", f"slice not stored: {file}", file=file)
    if isinstance(exc, UnsafePathError):
        return error_response(404, "not_found", "not a DeepLesion slice name")
    if isinstance(exc, CorruptSliceError):
        file = relative_file(exc.path, data_dir)
        reason = without_paths(exc.reason, exc.path, file, data_dir)
        return error_response(422, "corrupt_slice", f"corrupt slice {file}: {reason}", file=file)
    if isinstance(exc, InvalidWindowError):
        return error_response(422, "invalid_window", str(exc))
    if isinstance(exc, InvalidGeometryError):
        return error_response(422, "invalid_geometry", str(exc))
    if isinstance(exc, CsvValidationError):
        return error_response(422, "csv_invalid", str(exc).splitlines()[0], errors=exc.errors)
    return error_response(422, "invalid_input", str(exc))


def review_error_response(exc: ReviewError) -> JSONResponse:
    """Map a review-domain error to its HTTP answer."""
    if isinstance(exc, NotFoundError):
        return error_response(404, exc.code, str(exc) or "not found")
    if isinstance(exc, EditConflictError):
        changed_at = iso(exc.changed_at) if isinstance(exc.changed_at, datetime) else exc.changed_at
        return error_response(
            409,
            exc.code,
            str(exc) or "edited by someone else first",
            current=exc.current,
            changed_by=exc.changed_by,
            changed_at=changed_at,
            key_slice=exc.key_slice,
        )
    if isinstance(exc, TooManyAttemptsError):
        return error_response(429, exc.code, str(exc))
    if isinstance(exc, NoModelError):
        return error_response(503, exc.code, str(exc))
    if isinstance(exc, DuplicateLesionError):
        return error_response(409, exc.code, str(exc), lesion_id=exc.lesion_id)
    if isinstance(exc, JobRunningError):
        return error_response(409, exc.code, str(exc) or "already running", job=exc.job)
    if isinstance(exc, PermissionDeniedError):
        return error_response(403, exc.code, str(exc) or "forbidden")
    if isinstance(exc, InvalidInputError):
        return error_response(422, exc.code, str(exc) or "invalid input")
    return error_response(422, getattr(exc, "code", "review_error"), str(exc))


def _json_safe_errors(errors: Any) -> list[Any]:
    """Validation errors with their input and context made JSON-safe (bytes, exceptions, NaN...)."""
    safe: list[Any] = []
    for err in errors:
        item: dict[str, Any] = {}
        if isinstance(err, Mapping):
            for key, value in err.items():
                if key == "ctx" and isinstance(value, Mapping):
                    item[key] = {k: _scalar(v) for k, v in value.items()}
                elif key == "input":
                    item[key] = _scalar(value)
                else:
                    item[key] = jsonable_encoder(value)
        else:
            item["msg"] = str(err)
        safe.append(item)
    return safe


def _scalar(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")[:200]
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):  # not JSON
        return None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    try:
        encoded = jsonable_encoder(value)
    except Exception:
        return repr(value)[:200]
    return encoded


def install_error_handlers(app: FastAPI) -> None:
    """Register every exception handler on the app."""

    async def on_deeplesion(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DeepLesionError)
        return deeplesion_error_response(exc, _data_dir(request))

    async def on_review(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ReviewError)
        return review_error_response(exc)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = _json_safe_errors(exc.errors())
        first = errors[0].get("msg", "invalid request") if errors else "invalid request"
        return error_response(422, "invalid_input", str(first), errors=errors)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail
        if exc.status_code == 400 and detail == "There was an error parsing the body":
            # FastAPI's answer to an undecodable body; the contract says malformed JSON is a 422.
            msg = "malformed request body: not valid UTF-8 JSON"
            return error_response(422, "invalid_input", msg, errors=[{"loc": ["body"], "msg": msg}])
        if isinstance(detail, dict):
            body = {"code": _HTTP_CODES.get(exc.status_code, "error"), **detail}
            body.setdefault("detail", "error")
            response = JSONResponse(jsonable_encoder(body), status_code=exc.status_code)
        else:
            response = error_response(
                exc.status_code, _HTTP_CODES.get(exc.status_code, "error"), str(detail or "error")
            )
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    async def on_detection(request: Request, exc: Exception) -> JSONResponse:
        # The detector is optional: its failure is a 503 for this request, never the server's end.
        log.error("detector failed on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(503, "detector_failed", str(exc))

    handlers: list[tuple[type[Exception], Callable[[Request, Exception], Any]]] = [
        (DeepLesionError, on_deeplesion),
        (ReviewError, on_review),
        (DetectionError, on_detection),
        (RequestValidationError, on_validation),
        (StarletteHTTPException, on_http),
    ]
    for exc_class, handler in handlers:
        app.add_exception_handler(exc_class, handler)
    # Innermost of the middleware, so the 500 still passes the security headers and the other guards.
    app.add_middleware(CrashAnswer)


class CrashAnswer:
    """Turn an unexpected exception into a JSON 500 (no details) inside the guards, then re-raise it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.error("unhandled error on %s %s", scope.get("method"), scope.get("path"), exc_info=True)
            if not started:
                response = error_response(500, "internal_error", "internal server error")
                await response(scope, receive, send)
            # As Starlette does: servers log it too, and test clients raise it instead of a quiet 500.
            raise

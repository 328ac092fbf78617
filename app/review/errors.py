"""Errors raised by the review services; app/api/errors.py maps them to HTTP answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any


class ReviewError(Exception):
    """Base class of review-domain errors; `code` overrides the class's JSON error code."""

    code = "review_error"

    def __init__(self, *args: object, code: str | None = None) -> None:
        super().__init__(*args)
        if code is not None:
            self.code = code


class NotFoundError(ReviewError):
    """A key slice, lesion, prediction or user does not exist."""

    code = "not_found"


class EditConflictError(ReviewError):
    """The edit was based on a stale version: someone else changed the thing first."""

    code = "edit_conflict"

    def __init__(
        self,
        message: str,
        *,
        current: dict[str, Any],
        changed_by: str | None = None,
        changed_at: datetime | None = None,
        key_slice: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.current = current
        self.changed_by = changed_by
        self.changed_at = changed_at
        # The key slice as it is now, so a client can show the winner's state without another request.
        self.key_slice = key_slice


class DuplicateLesionError(ReviewError):
    """Accepting this prediction would add a second lesion where one already is; `lesion_id` is that one."""

    code = "duplicate_lesion"

    def __init__(self, message: str, *, lesion_id: int) -> None:
        super().__init__(message)
        self.lesion_id = lesion_id


class PermissionDeniedError(ReviewError):
    """The user may not do this (wrong role, or not their own change)."""

    code = "forbidden"


class InvalidInputError(ReviewError):
    """The request is well-formed but its content is not acceptable (e.g. deleting an original lesion)."""

    code = "invalid_input"


class JobRunningError(ReviewError):
    """A detector job (of any kind) is already queued or running (one at a time); `job` is its status."""

    code = "detector_job_running"

    def __init__(self, message: str, *, job: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.job = job


class NoModelError(ReviewError):
    """No detector model is loaded, so nothing can be predicted (503)."""

    code = "no_model"


class TooManyAttemptsError(ReviewError):
    """Sign-in attempts over a limit (per name and client, per client, or per name); 429."""

    code = "too_many_attempts"

"""Exceptions raised by the pure dataset code; the API maps them to HTTP answers."""

from __future__ import annotations


class DeepLesionError(Exception):
    """Base class of every dataset-level error."""


class CsvValidationError(DeepLesionError):
    """DL_info.csv failed validation; `errors` holds every problem found, each naming line and column."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        shown = "\n".join(self.errors[:50])
        more = f"\n... and {len(self.errors) - 50} more" if len(self.errors) > 50 else ""
        super().__init__(f"{len(self.errors)} error(s) in DL_info.csv:\n{shown}{more}")


class UnsafePathError(DeepLesionError):
    """A file name would resolve outside the data root, or is not a DeepLesion name."""


class SliceNotFoundError(DeepLesionError):
    """A slice PNG is not stored on disk."""

    def __init__(self, path: str, message: str | None = None) -> None:
        self.path = path
        super().__init__(message or f"slice not stored: {path}")


class CorruptSliceError(DeepLesionError):
    """A slice PNG exists but cannot be decoded as a 16-bit CT slice."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"corrupt slice {path}: {reason}")


class InvalidWindowError(DeepLesionError):
    """A display window is out of range or unknown."""


class InvalidGeometryError(DeepLesionError):
    """A RECIST measurement or box is malformed or lies outside the image."""

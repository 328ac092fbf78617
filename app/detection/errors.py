"""Exceptions of the detector package."""

from __future__ import annotations


class DetectionError(Exception):
    """Base class of detector errors."""


class ModelLoadError(DetectionError):
    """An ONNX model is missing, unreadable, or does not fit the detector contract."""


class InferenceError(DetectionError):
    """The loaded model failed while running on an input."""

"""Lesion Review: review and extend DeepLesion annotations."""

__version__ = "0.1.0"

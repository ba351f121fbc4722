"""User-facing errors: one clear line that names the file or key and the fix."""

from __future__ import annotations


class FerbenchError(Exception):
    """An expected failure caused by input or configuration, reported without a traceback."""

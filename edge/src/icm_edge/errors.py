"""The one error type that ``icm`` raises for bad input."""

from __future__ import annotations


class IcmError(ValueError):
    """Bad input that a user can act on: a malformed ``.icm`` file, an unknown
    model name, an image that cannot be read.  The message names the problem.

    It derives from :class:`ValueError` so that callers that already guard
    against bad values keep working.
    """


class BitstreamError(IcmError):
    """A ``.icm`` file is truncated, corrupted, foreign or hostile."""

"""Errors the trainer turns into a one-line message and an exit code."""

from __future__ import annotations


class BadInputError(Exception):
    """Input that no retry can fix (config, data, model): reported in one line, exit 2.

    The message names the field and what to do, so that a user reading ``kubectl describe``
    or the local runner's output knows the fix without reading a traceback.
    """

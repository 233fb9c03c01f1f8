"""The one error type the command line turns into a one-line message and a non-zero exit."""

from __future__ import annotations


class LfadsError(Exception):
    """Bad input or state the user can fix; the message names the file and the fix."""

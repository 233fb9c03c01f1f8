"""Errors of the devices layer, each rendered as one line that names the file and the fix."""

from __future__ import annotations


class InventoryError(ValueError):
    """A device source cannot be used as given (e.g. a malformed simulated inventory file)."""


class ClaimError(RuntimeError):
    """The host-wide claims directory or a claim file cannot be used."""


class ClaimsBusy(ClaimError):
    """Another process has held the host-wide claims lock too long; it mends itself when that ends."""

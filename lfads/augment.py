"""Temporal spike jitter (`--temporal_spike_jitter_width`), applied to each training batch."""

from __future__ import annotations

import numpy as np


def jitter_spikes(counts: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """Move every spike by a uniform shift in [-width, width] bins, reflecting at the trial edges
    so no spike is lost. counts: (B, T, D) non-negative integers."""
    if width <= 0:
        return counts
    steps = counts.shape[1]
    out = np.zeros_like(counts)
    for level in range(1, int(counts.max(initial=0)) + 1):
        # one pass per count level: each spike of a bin holding k spikes moves on its own
        b, t, d = np.nonzero(counts >= level)
        moved = t + rng.integers(-width, width + 1, size=t.size)
        moved = np.abs(moved)  # reflect at 0
        over = moved > steps - 1
        moved[over] = 2 * (steps - 1) - moved[over]  # reflect at T-1
        np.add.at(out, (b, np.clip(moved, 0, steps - 1), d), 1)
    return out

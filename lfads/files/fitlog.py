"""`fitlog.csv` (no header, appended per epoch) and the per-epoch console line, as the original.

The original built both strings with backslash line continuations inside the literal, so its
lines carry runs of spaces after some fields; MATLAB's reader splits on commas and trims, and
we keep the spacing so any stricter reader keeps working.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

GAP = "      "  # the indentation the original's continuation lines put into the string


class EpochSummary(NamedTuple):
    epoch: int
    step: int
    train_total: float
    train_recon: float
    train_kl: float
    valid_total: float | None
    valid_recon: float | None
    valid_kl: float | None
    l2: float
    kl_weight: float
    l2_weight: float


def csv_line(s: EpochSummary) -> str:
    if s.valid_total is not None:
        return (
            f"epoch,{s.epoch:d}, step,{s.step:d}, total,{s.train_total:.2f},{s.valid_total:.2f}, {GAP}"
            f"recon,{s.train_recon:.2f},{s.valid_recon:.2f}, kl,{s.train_kl:.2f},{s.valid_kl:.2f}, "
            f"l2,{s.l2:.5f}, {GAP}klweight,{s.kl_weight:.2f}, l2weight,{s.l2_weight:.2f}\n"
        )
    return (
        f"epoch,{s.epoch:d}, step,{s.step:d}, total,{s.train_total:.2f}, recon,{s.train_recon:.2f}, "
        f"kl,{s.train_kl:.2f}, {GAP}l2,{s.l2:.5f}, klweight,{s.kl_weight:.2f}, l2weight,{s.l2_weight:.2f}\n"
    )


def console_line(s: EpochSummary) -> str:
    if s.valid_total is not None:
        return (
            f"Epoch:{s.epoch:d}, step:{s.step:d} (TRAIN, VALID): total: {s.train_total:.2f}, {s.valid_total:.2f}"
            f"{GAP}recon: {s.train_recon:.2f}, {s.valid_recon:.2f},     kl: {s.train_kl:.2f}, {s.valid_kl:.2f},"
            f"     l2: {s.l2:.5f},{GAP}kl weight: {s.kl_weight:.2f}, l2 weight: {s.l2_weight:.2f}"
        )
    return (
        f"Epoch:{s.epoch:d}, step:{s.step:d} TRAIN: total: {s.train_total:.2f}     recon: {s.train_recon:.2f},"
        f" kl: {s.train_kl:.2f},{GAP}l2: {s.l2:.5f},    kl weight: {s.kl_weight:.2f}, l2 weight: {s.l2_weight:.2f}"
    )


def append_fitlog(path: Path, summary: EpochSummary) -> None:
    """Append one line; the file is never rewritten, so earlier epochs survive a crash. A line a
    crash cut short is ended first, so the new epoch does not run into it."""
    with path.open("a+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        torn = False
        if size:
            handle.seek(size - 1)
            torn = handle.read(1) != b"\n"
        handle.write((b"\n" if torn else b"") + csv_line(summary).encode())  # "a": always at the end
        handle.flush()
        os.fsync(handle.fileno())


def read_fitlog(path: Path) -> list[dict[str, list[float]]]:
    """Parse lines back into {field: [values]} (the way MATLAB's read_fitlog splits them)."""
    rows = []
    for line in path.read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        row: dict[str, list[float]] = {}
        key = ""
        for part in parts:
            try:
                value = float(part)
            except ValueError:
                key = part
                row[key] = []
                continue
            row[key].append(value)
        rows.append(row)
    return rows

"""Files a crash left half-written: the next epoch does not run into them, and they are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from lfads.errors import LfadsError
from lfads.files.checkpoints import read_state
from lfads.files.fitlog import EpochSummary, append_fitlog, csv_line
from manager.results import fit_log


def _epoch(number: int) -> EpochSummary:
    return EpochSummary(number, 10 * (number + 1), 900.0, 880.0, 20.0, 950.0, 940.0, 10.0, 0.5, 1.0, 1.0)


def test_an_epoch_after_a_torn_fitlog_line_starts_its_own_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    fitlog = run / "lfadsOutput" / "fitlog.csv"
    fitlog.parent.mkdir(parents=True)
    fitlog.write_text(csv_line(_epoch(0)) + csv_line(_epoch(1))[:60])  # power lost during the append
    append_fitlog(fitlog, _epoch(2))
    lines = fitlog.read_text().splitlines()
    assert lines[0] == csv_line(_epoch(0)).rstrip("\n") and lines[2] == csv_line(_epoch(2)).rstrip("\n")
    assert list(fit_log(run).epoch) == [0, 2]  # the cut-short epoch 1 is no record; 0 and 2 survive


def test_a_checkpoint_list_that_is_not_text_is_named(tmp_path: Path) -> None:
    state = tmp_path / "checkpoint"
    state.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(LfadsError, match=f"{state}: cannot read the checkpoint list .*delete the file"):
        read_state(state)

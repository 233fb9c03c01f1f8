"""Files a crash left half-written: the next epoch does not run into them, and they are named."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("tensorflow")  # lfads.files.checkpoints is TensorFlow's

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


def test_a_torn_newest_checkpoint_falls_back_to_the_previous_one_listed(tmp_path: Path, capsys) -> None:
    """A resumed run rewrote the LVE bundle of a step it had reached before, and the power went between
    its two renames: the posterior step restores the previous LVE checkpoint instead of failing."""
    import dataclasses

    import numpy as np
    from test_lfads_rules import _context

    from lfads.files import checkpoints
    from lfads.run import prepare

    ctx = _context(tmp_path, "--co_dim=1")
    name = next(name for name in ctx.built.variables if name.endswith("/W"))
    for step, value in ((10, 1.0), (20, 2.0)):
        ctx.built.variables[name].assign(np.full(ctx.built.variables[name].shape, value, np.float32))
        checkpoints.save(ctx.save_dir, ctx.built.variables, "lfads_vae", step, True, 5)
    data = ctx.save_dir / f"lfads_vae_lve.ckpt-20{checkpoints.DATA_SUFFIX}"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    capsys.readouterr()
    sampling = prepare(dataclasses.replace(ctx.flags, kind="posterior_sample_and_average",
                                           checkpoint_pb_load_name="checkpoint_lve"))
    assert np.all(sampling.built.variables[name].numpy() == 1.0)
    out = capsys.readouterr().out
    assert "lfads_vae_lve.ckpt-20 (" in out and "trying the previous checkpoint it lists" in out, out
    assert f"Restoring parameters from {ctx.save_dir / 'lfads_vae_lve.ckpt-10'}" in out

"""One `lfads` at a time per --lfads_save_dir: a second one is refused, the lock goes with the process."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from lfads.errors import LfadsError
from lfads.files.fitlog import read_fitlog
from lfads.files.folder_lock import hold_output_folder

REPO = Path(__file__).resolve().parents[2]
Runner = Callable[..., subprocess.CompletedProcess[str]]


def _io_flags(data_dir: Path, out: Path) -> list[str]:
    return [f"--data_dir={data_dir}", "--data_filename_stem=lfads", f"--lfads_save_dir={out}"]


def _can_lock(folder: Path) -> bool:
    """Whether another process could take the folder's lock now (asked from a separate process)."""
    code = ("import fcntl, os, sys\n"
            "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\n"
            "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(1)\n")
    return subprocess.run([sys.executable, "-c", code, str(folder)], timeout=60).returncode == 0


def test_a_second_lfads_on_the_same_output_folder_is_refused_and_the_first_goes_on(
        tmp_path: Path, dataset_factory: Callable[..., object], tiny_flags: list[str], run_lfads: Runner,
        lfads_training: Callable[..., contextlib.AbstractContextManager[subprocess.Popen[str]]]) -> None:
    data, out = tmp_path / "in", tmp_path / "out"
    dataset_factory(data / "lfads_dataset001.h5", trials=40, steps=12, neurons=6)
    train = ["--kind=train", *_io_flags(data, out), *tiny_flags, "--max_epochs=100000"]
    with lfads_training(train, out / "fitlog.csv") as first:
        # The queue's step and a copy of it started by hand; and sampling from a model being rewritten.
        for kind in ("train", "posterior_sample_and_average"):
            second = run_lfads([f"--kind={kind}", *_io_flags(data, out), *tiny_flags, "--max_epochs=100000",
                                "--checkpoint_pb_load_name=checkpoint"], check=False)
            assert second.returncode == 1, second.stdout + second.stderr
            last = second.stderr.strip().splitlines()[-1]
            assert last == (f"lfads: error: {out}: another process (pid {first.pid}) is using this output folder"
                            " (a second lfads on the same --lfads_save_dir, or lfads-manager delete-output);"
                            " wait for it to end or stop it, or give this one another --lfads_save_dir"), last
            assert "Traceback" not in second.stderr
        assert first.poll() is None  # the first one trains on
        first.send_signal(signal.SIGTERM)
        stdout, _ = first.communicate(timeout=60)
    assert first.returncode == 128 + signal.SIGTERM, stdout[-2000:]
    epochs = [int(row["epoch"][0]) for row in read_fitlog(out / "fitlog.csv")]
    assert epochs == list(range(len(epochs)))  # one trainer's rows only, each epoch once
    assert not list(out.glob("model_runs_*"))  # the refused sampler wrote nothing
    assert sorted(p.name for p in out.iterdir() if "lock" in p.name) == []  # no lock file left in the folder
    # The lock went with the process: training again goes on from where the first one stopped.
    again = run_lfads(["--kind=train", *_io_flags(data, out), *tiny_flags, f"--max_epochs={len(epochs) + 1}"])
    assert "Restoring parameters from" in again.stdout


def test_the_lock_is_released_on_leaving_and_never_inherited_by_a_program_lfads_starts(tmp_path: Path) -> None:
    with hold_output_folder(tmp_path) as held:
        assert held
        child = subprocess.Popen(["sleep", "60"], close_fds=False)  # a program started with every descriptor
        try:
            assert not _can_lock(tmp_path)
            with pytest.raises(LfadsError, match=rf"^{tmp_path}: another process \(pid {os.getpid()}\) is using"), \
                    hold_output_folder(tmp_path):
                pass
        except BaseException:
            child.kill()
            raise
    try:
        assert _can_lock(tmp_path)  # released, though the child still runs
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EBADF, errno.EOPNOTSUPP])
def test_a_file_system_that_cannot_lock_a_folder_does_not_stop_lfads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     code: int) -> None:
    def nfs(fd: int, operation: int) -> None:  # NFS maps flock onto byte-range locks: EBADF, or ENOLCK without lockd
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", nfs)
    with hold_output_folder(tmp_path) as held:
        assert held is False


def test_an_output_folder_that_cannot_be_opened_is_named(tmp_path: Path) -> None:
    with pytest.raises(LfadsError, match=rf"^{tmp_path / 'missing'}: cannot open the output folder"), \
            hold_output_folder(tmp_path / "missing"):
        pass

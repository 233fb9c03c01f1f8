"""How failures end: exit status and the last line the queue reads."""

from __future__ import annotations

import pytest

tf = pytest.importorskip("tensorflow")

import lfads.run  # noqa: E402
from lfads.cli import main  # noqa: E402


def _fail_with(error: BaseException) -> object:
    def run(flags: object) -> None:
        raise error

    return run


def test_a_gpu_out_of_memory_error_ends_with_a_line_the_queue_recognises(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    oom = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[4096,4096]")
    monkeypatch.setattr(lfads.run, "run", _fail_with(oom))
    assert main(["--kind=train"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("lfads: error: ResourceExhaustedError: CUDA out of memory")
    assert "--batch_size" in last


def test_an_unexpected_error_keeps_its_traceback_and_ends_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(lfads.run, "run", _fail_with(ZeroDivisionError("division by zero")))
    assert main(["--kind=prior_sample"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1] == "lfads: error: ZeroDivisionError: division by zero"


def test_a_full_disk_is_said_as_such_not_as_a_gpu_out_of_memory(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # TensorFlow's SaveV2 on a full disk raises the same class as a full GPU.
    saving = tf.errors.ResourceExhaustedError(None, None, "lfadsOutput/.tmp.ckpt.tempstate1; No space left on device [Op:SaveV2]")
    monkeypatch.setattr(lfads.run, "run", _fail_with(saving))
    assert main(["--kind=train"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no space left on device" in last and "CUDA" not in last and last.endswith("free space on that disk")

    import errno

    writing = OSError(errno.ENOSPC, "No space left on device", "/runs/r/lfadsOutput/model_runs_ds_valid")
    monkeypatch.setattr(lfads.run, "run", _fail_with(writing))
    assert main(["--kind=posterior_sample_and_average"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("lfads: error: /runs/r/lfadsOutput/model_runs_ds_valid: no space left on device")

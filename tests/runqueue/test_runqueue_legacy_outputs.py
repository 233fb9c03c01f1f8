"""Legacy (MATLAB) run folders: "done only if training really finished" for the posterior outputs too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from runqueue_testkit import gpu, make_run, queue_env, read_json, run_queue, write_gpus
from test_runqueue_legacy import FAKE_RUN_LFADS

# The fake also writes push-mean files, and skips the posterior output when told to.
FAKE = FAKE_RUN_LFADS.replace(
    'elif kind == "posterior_sample_and_average":',
    'elif kind.startswith("posterior") and os.environ.get("FAKE_LFADS_SKIP_POSTERIOR") == "1":\n'
    '    pass\n'
    'elif kind.startswith("posterior"):\n'
    '    for split in ("train", "valid"):\n'
    '        open(os.path.join(out, f"model_runs_dataset001.h5_{split}_{kind}"), "w").close()\n'
    'elif False:',
)


def _legacy(tmp_path: Path, posterior_kind: str) -> tuple[Path, dict[str, str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "run_lfads.py").write_text(FAKE)
    (bin_dir / "run_lfads.py").chmod(0o755)
    run = tmp_path / "runs/exampleRun/param_YOs74u/single_dataset001"
    common = f"--data_dir={run}/lfadsInput --data_filename_stem=lfads --lfads_save_dir={run}/lfadsOutput"
    script = (
        f"(python $(which run_lfads.py) {common}"
        f" && python $(which run_lfads.py) {common} --kind={posterior_kind} --checkpoint_pb_load_name=checkpoint_lve"
        f" && python $(which run_lfads.py) {common} --kind=write_model_params --checkpoint_pb_load_name=checkpoint_lve)"
        f" 2>&1 | tee {run}/lfads.out\n"
    )
    make_run(tmp_path / "runs", "exampleRun/param_YOs74u/single_dataset001", script,
             posterior="echo SHOULD-NOT-RUN\n", write_params="echo SHOULD-NOT-RUN\n")
    env = queue_env(tmp_path)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return run, env, write_gpus(tmp_path / "gpus.json", [gpu("GPU-legacy")])


@pytest.mark.parametrize("kind", ["posterior_sample_and_average", "posterior_push_mean"])
def test_legacy_run_whose_posterior_wrote_nothing_is_not_done(tmp_path: Path, kind: str) -> None:
    run, env, sim = _legacy(tmp_path, kind)
    env["FAKE_LFADS_SKIP_POSTERIOR"] = "1"
    result = run_queue(env, "run", tmp_path / "runs", "--simulate-gpus", sim, "--retries", "0")
    assert result.returncode == 1, result.stdout + result.stderr
    assert not (run / "lfads.done").exists()
    failure = read_json(run / "lfads.failed")
    assert failure["reason"] == "legacy_output_missing"
    assert f"lfadsOutput/model_runs_*_{kind}" in failure["message"]


def test_legacy_push_mean_chain_is_done_without_running_the_posterior_script_again(tmp_path: Path) -> None:
    run, env, sim = _legacy(tmp_path, "posterior_push_mean")
    result = run_queue(env, "run", tmp_path / "runs", "--simulate-gpus", sim, "--retries", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (run / "lfads.done").exists()
    assert "SHOULD-NOT-RUN" not in (run / "lfads.out").read_text()

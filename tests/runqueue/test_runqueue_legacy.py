"""Run folders written by the MATLAB lfads-run-manager: `( train && posterior && params ) | tee lfads.out`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from runqueue_testkit import gpu, make_run, queue_env, read_json, run_queue, step_headers, write_gpus

# A stand-in for the original run_lfads.py: prints like LFADS and writes the files each kind leaves.
FAKE_RUN_LFADS = '''#!/usr/bin/env python
import os, sys
args = dict(arg[2:].split("=", 1) for arg in sys.argv[1:] if arg.startswith("--") and "=" in arg)
kind = args.get("kind", "train")
out = args["lfads_save_dir"]
os.makedirs(out, exist_ok=True)
print(f"fake lfads {kind} starting", flush=True)
if os.environ.get("FAKE_LFADS_FAIL") == kind:
    print(f"Traceback: {kind} crashed", flush=True)
    sys.exit(1)
if kind == "train":
    print("Stopping optimization", flush=True)
    open(os.path.join(out, "checkpoint"), "w").close()
elif kind == "posterior_sample_and_average":
    for split in ("train", "valid"):
        open(os.path.join(out, f"model_runs_dataset001.h5_{split}_posterior_sample_and_average"), "w").close()
elif kind == "write_model_params" and os.environ.get("FAKE_LFADS_SKIP_WRITE") != "1":
    open(os.path.join(out, "model_params"), "w").close()
print(f"fake lfads {kind} finished", flush=True)
'''


def _matlab_train_script(run: Path) -> str:
    """lfads_train.sh as RunCollection.writeShellScriptRunQueue generates it (reference §6.3)."""
    common = f"--data_dir={run}/lfadsInput --data_filename_stem=lfads --lfads_save_dir={run}/lfadsOutput"
    flags = "--c_co_dim=0 --c_factors_dim=8 --c_learning_rate_stop=0.001000"
    return (
        "\n"
        "path_to_run_lfads=$(which run_lfads.py)\n"
        'if [ ! -n "$path_to_run_lfads" ]; then\n'
        '    echo "Error: run_lfads.py not found on PATH. Ensure you add LFADS to your system PATH."\n'
        "    exit 1\n"
        "fi\n\n"
        f"(DISPLAY=:0 python $(which run_lfads.py) {common} {flags}"
        f" && python $(which run_lfads.py) {common} --kind=posterior_sample_and_average --batch_size=512 --checkpoint_pb_load_name=checkpoint_lve {flags}"
        f" && python $(which run_lfads.py) {common} --kind=write_model_params --checkpoint_pb_load_name=checkpoint_lve {flags})"
        f" 2>&1 | tee {run}/lfads.out\n"
    )


def _legacy_run(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "run_lfads.py"
    fake.write_text(FAKE_RUN_LFADS)
    fake.chmod(0o755)
    run = tmp_path / "runs/exampleRun/param_YOs74u/single_dataset001"
    make_run(tmp_path / "runs", "exampleRun/param_YOs74u/single_dataset001", _matlab_train_script(run),
             posterior="echo SHOULD-NOT-RUN\n", write_params="echo SHOULD-NOT-RUN\n")
    (run / "lfads.out").write_text("an earlier attempt's log line\n")
    env = queue_env(tmp_path)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-legacy")])
    return run, env, sim


def test_runqueue_legacy_folder_runs_with_whole_log_and_is_done(tmp_path: Path) -> None:
    run, env, sim = _legacy_run(tmp_path)
    result = run_queue(env, "run", tmp_path / "runs", "--simulate-gpus", sim)
    assert result.returncode == 0, result.stdout + result.stderr
    log = (run / "lfads.out").read_text()
    # Not truncated by the script's own tee, our header kept, each LFADS command's output once.
    assert log.startswith("an earlier attempt's log line\n")
    headers = step_headers(log)
    assert len(headers) == 1 and "step=lfads_train.sh" in headers[0] and "legacy script" in headers[0]
    for kind in ("train", "posterior_sample_and_average", "write_model_params"):
        assert log.count(f"fake lfads {kind} finished") == 1
    assert "SHOULD-NOT-RUN" not in log  # the chained steps are not run again from their own scripts
    assert (run / "lfads.done").exists()
    assert "[param_YOs74u/single_dataset001] Stopping optimization" in result.stdout


def test_runqueue_legacy_folder_finds_lfads_without_the_venv_on_path(tmp_path: Path) -> None:
    # As under the systemd unit (ExecStart=/opt/.../.venv/bin/runqueue, no venv active): the script's
    # `python $(which run_lfads.py)` must still reach this installation's run_lfads.py and interpreter.
    run = tmp_path / "runs/exampleRun/param_YOs74u/single_dataset001"
    make_run(tmp_path / "runs", "exampleRun/param_YOs74u/single_dataset001",
             "(python $(which run_lfads.py) --kind=unknown || true) 2>&1 | tee lfads.out\n"
             "echo \"found $(which run_lfads.py)\" | tee lfads.out\n")
    env = {**queue_env(tmp_path), "PATH": "/usr/bin:/bin"}
    result = run_queue(env, "run", tmp_path / "runs", "--cpu-slots", "1", "--retries", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    log = (run / "lfads.out").read_text()
    # This installation's LFADS answered (without the model extra, with the line naming the install).
    assert "lfads: error: --kind=unknown is not one of" in log or ("lfads: error: " in log and "absl" in log)
    assert f"found {run / '.runqueue/legacy-bin/last/run_lfads.py'}" in log


@pytest.mark.parametrize("activate", [False, True])
def test_every_legacy_step_that_calls_run_lfads_reaches_this_lfads_with_or_without_tee(tmp_path: Path, activate: bool) -> None:
    # MATLAB's default train script has no tee; its separate posterior and write-params scripts neither.
    # `source activate ENV` (its virtualenv option) puts an env's python, without this package, first.
    env_bin = tmp_path / "env-bin"
    env_bin.mkdir()
    (env_bin / "python").write_text(f'#!/bin/bash\nexec {sys.executable} -S "$@"\n')  # -S: no site-packages, no lfads
    (env_bin / "python").chmod(0o755)
    activate_line = f'export PATH="{env_bin}:$PATH"\n' if activate else ""
    command = "python $(which run_lfads.py) --kind=unknown 2>&1 | grep -c 'is not one of' >> found.txt || true\n"
    run = make_run(tmp_path / "runs", "exampleRun/param_YOs74u/single_dataset001", activate_line + command,
                   posterior=activate_line + command, write_params=activate_line + command)
    env = {**queue_env(tmp_path), "PATH": "/usr/bin:/bin"}
    result = run_queue(env, "run", tmp_path / "runs", "--cpu-slots", "1", "--retries", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (run / "found.txt").read_text().split() == ["1", "1", "1"], (run / "lfads.out").read_text()


def test_a_users_own_run_lfads_py_runs_under_the_users_python(tmp_path: Path) -> None:
    # prependPathToRunLFADS: the original (TF1) run_lfads.py comes first, with the python of its environment.
    user_bin, user_lfads = tmp_path / "conda-bin", tmp_path / "original-lfads"
    user_bin.mkdir()
    user_lfads.mkdir()
    (user_bin / "python").write_text(f'#!/bin/bash\necho "the user\'s python"\nexec {sys.executable} "$@"\n')
    (user_lfads / "run_lfads.py").write_text("print('the original run_lfads.py')\n")
    for script in (user_bin / "python", user_lfads / "run_lfads.py"):
        script.chmod(0o755)
    run = tmp_path / "runs/exampleRun/param_YOs74u/single_dataset001"
    make_run(tmp_path / "runs", "exampleRun/param_YOs74u/single_dataset001",
             f'export PATH="{user_lfads}:$PATH"\n(python $(which run_lfads.py)) 2>&1 | tee lfads.out\n')
    env = {**queue_env(tmp_path), "PATH": f"{user_bin}:/usr/bin:/bin"}
    result = run_queue(env, "run", tmp_path / "runs", "--cpu-slots", "1", "--retries", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    log = (run / "lfads.out").read_text()
    assert "the user's python\nthe original run_lfads.py" in log


def test_runqueue_legacy_failed_training_is_not_done_despite_tee(tmp_path: Path) -> None:
    run, env, sim = _legacy_run(tmp_path)
    env["FAKE_LFADS_FAIL"] = "train"
    result = run_queue(env, "run", tmp_path / "runs", "--simulate-gpus", sim, "--retries", "0")
    assert result.returncode == 1
    assert not (run / "lfads.done").exists()
    failure = read_json(run / "lfads.failed")
    assert (failure["reason"], failure["exit_code"]) == ("exit_status", 1)
    assert "Traceback: train crashed" in failure["last_lines"]


@pytest.mark.parametrize("missing", ["write_model_params"])
def test_runqueue_legacy_success_without_outputs_is_not_done(tmp_path: Path, missing: str) -> None:
    run, env, sim = _legacy_run(tmp_path)
    env["FAKE_LFADS_SKIP_WRITE"] = "1"
    result = run_queue(env, "run", tmp_path / "runs", "--simulate-gpus", sim, "--retries", "0")
    assert result.returncode == 1
    failure = read_json(run / "lfads.failed")
    assert failure["reason"] == "legacy_output_missing"
    assert "lfadsOutput/model_params" in failure["message"]


def test_a_step_that_pipes_into_its_own_tee_file_fails_when_its_command_fails(tmp_path: Path) -> None:
    # A MATLAB-style posterior script tees into a file of its own: without pipefail its status is tee's.
    run = make_run(tmp_path / "runs", "c/param_T/r0", "echo trained\n",
                   posterior="(echo sampling; false) 2>&1 | tee lfads_pm.out\n")
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--cpu-slots", "1", "--retries", "0")
    assert result.returncode == 1, result.stdout + result.stderr
    assert read_json(run / "lfads.failed")["step"] == "lfads_posterior_mean_sample.sh"
    assert "(pipes into tee: pipefail)" in (run / "lfads.out").read_text()


def test_a_copied_matlab_run_whose_script_points_at_the_original_is_refused_not_run(tmp_path: Path) -> None:
    original = tmp_path / "old/runs/exampleRun/param_YOs74u/single_dataset001"
    (original / "lfadsOutput").mkdir(parents=True)
    (original / "lfadsOutput/checkpoint").write_text("the original's model")
    copy = make_run(tmp_path / "runs", "exampleRun/param_YOs74u/single_dataset001",
                    _matlab_train_script(original).replace(f"tee {original}/lfads.out", "tee lfads.out"))
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--cpu-slots", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    failure = read_json(copy / "lfads.failed")
    assert failure["reason"] == "legacy_script_refused" and failure["attempt"] == 1  # not retried
    assert f"--data_dir={original}/lfadsInput, outside this run folder" in failure["message"]
    assert (original / "lfadsOutput/checkpoint").read_text() == "the original's model"
    assert sorted(path.name for path in (original / "lfadsOutput").iterdir()) == ["checkpoint"]


@pytest.mark.parametrize("tee", ["|& tee lfads.out", "2>&1 | tee \\\n    lfads.out"])
def test_hand_edited_tee_forms_into_lfads_out_keep_the_log_whole_and_fail_with_the_command(tmp_path: Path, tee: str) -> None:
    run = make_run(tmp_path / "runs", "c/param_E/r0", f'(echo "attempt $RUNQUEUE_ATTEMPT"; [ "$RUNQUEUE_ATTEMPT" = 2 ]) {tee}\n')
    (run / "lfads.out").write_text("an earlier line\n")
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--cpu-slots", "1", "--retry-backoff", "0")
    assert result.returncode == 0, result.stdout + result.stderr  # attempt 1 failed despite tee (pipefail)
    log = (run / "lfads.out").read_text()
    assert log.startswith("an earlier line\n") and log.count("attempt 1\n") == 1 and log.count("attempt 2\n") == 1, log
    assert len(step_headers(log)) == 2 and (run / "lfads.done").exists()


def test_a_tee_by_path_into_lfads_out_is_refused_as_it_would_truncate_the_log(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", "c/param_E/r0", "(echo trained) 2>&1 | /usr/bin/tee lfads.out\n")
    (run / "lfads.out").write_text("an earlier line\n")
    result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--cpu-slots", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    failure = read_json(run / "lfads.failed")
    assert failure["reason"] == "legacy_script_refused" and failure["attempt"] == 1
    assert "pipes into /usr/bin/tee lfads.out, which would truncate the log" in failure["message"]
    assert (run / "lfads.out").read_text().startswith("an earlier line\n")

"""`lfads-manager demo --profile seed` builds the seed's tree, name for name, with working scripts."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from manager_test_helpers import SEED_TINY, run_manager_cli, small_collection, write_npz_dataset

import manager.prepare as prepare_module
import manager.written_files as written_files_module
from manager.collection import RunCollection
from manager.errors import ManagerError
from manager.params import RunParams
from manager.scripts import flag_pairs

SPECS = {"all": ["dataset001", "dataset002", "dataset003"], "single_dataset001": ["dataset001"],
         "single_dataset002": ["dataset002"], "single_dataset003": ["dataset003"]}
# The flags the MATLAB run manager writes for the seed (docs/running.md shows the same set).
ORIGINAL_FLAGS = {
    "allow_gpu_growth", "max_ckpt_to_keep", "max_ckpt_to_keep_lve", "device", "learning_rate_init",
    "learning_rate_decay_factor", "learning_rate_n_to_compare", "learning_rate_stop", "max_grad_norm", "batch_size",
    "cell_clip_value", "temporal_spike_jitter_width", "keep_prob", "l2_gen_scale", "l2_con_scale", "co_mean_corr_scale",
    "kl_ic_weight", "kl_co_weight", "kl_start_step", "l2_start_step", "kl_increase_steps", "l2_increase_steps",
    "ext_input_dim", "inject_ext_input_to_gen", "co_dim", "prior_ar_atau", "do_train_prior_ar_atau", "prior_ar_nvar",
    "do_train_prior_ar_nvar", "do_causal_controller", "do_feed_factors_to_controller", "feedback_factors_or_rates",
    "controller_input_lag", "ci_enc_dim", "con_dim", "co_prior_var_scale", "num_steps_for_gen_ic", "ic_dim", "ic_enc_dim",
    "ic_prior_var_min", "ic_prior_var_scale", "ic_prior_var_max", "ic_post_var_min", "cell_weight_scale", "gen_dim",
    "gen_cell_input_weight_scale", "gen_cell_rec_weight_scale", "factors_dim", "output_dist", "do_train_readin",
    "tf_debug_cli", "tf_debug_tensorboard", "tf_debug_tensorboard_hostport", "debug_verbose", "debug_print_each_step",
}


def expected_tree() -> set[str]:
    names = {f"datasets/dataset00{i}.mat" for i in range(1, 5)}
    base = "runs/exampleRun"
    names |= {f"{base}/summary.txt", f"{base}/launch_tensorboard.sh", f"{base}/run_lfads.py", f"{base}/.lfads-manager-written.json"}
    for spec, datasets in SPECS.items():
        data = f"{base}/data_RE1kuL/{spec}"
        run = f"{base}/param_Qr2PeG/{spec}"
        names |= {f"{data}/.export_stamp.json"}
        names |= {f"{run}/lfads_train.sh", f"{run}/lfads_posterior_mean_sample.sh", f"{run}/lfads_write_model_params.sh"}
        for ds in datasets:
            for file in (f"lfads_{ds}.h5", f"inputInfo_{ds}.mat"):
                names |= {f"{data}/{file}", f"{run}/lfadsInput/{file}"}
    return names | {f"{base}/data_RE1kuL/all/alignment_reconstruction.png"}


def test_seed_demo_cli_builds_the_seed_tree(tmp_path):
    knobs = [arg for key, value in SEED_TINY.items() for arg in ("--lorenz", f"{key}={value}")]
    result = run_manager_cli("demo", str(tmp_path), "--profile", "seed", "--print-collection", *knobs)
    assert result.returncode == 0, result.stderr
    collection_dir = tmp_path / "runs" / "exampleRun"
    assert result.stdout == f"{collection_dir}\n"  # only the folder; progress went to stderr
    assert "exporting" in result.stderr
    found = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() or p.is_symlink()}
    assert found == expected_tree()
    for spec, datasets in SPECS.items():
        run = collection_dir / "param_Qr2PeG" / spec
        for entry in (run / "lfadsInput").iterdir():
            target = os.readlink(entry)
            assert target == f"../../../data_RE1kuL/{spec}/{entry.name}"
            assert entry.resolve() == (collection_dir / "data_RE1kuL" / spec / entry.name).resolve()
            assert entry.resolve().is_file()
        for script in ("lfads_train.sh", "lfads_posterior_mean_sample.sh", "lfads_write_model_params.sh"):
            assert (run / script).stat().st_mode & stat.S_IXUSR
        assert sorted(p.name[6:-3] for p in (run / "lfadsInput").glob("lfads*")) == datasets
    assert (collection_dir / "run_lfads.py").stat().st_mode & stat.S_IXUSR
    # launch_tensorboard.sh finds the preparing environment's tensorboard (an extra installs it), and
    # without it says how to install it there.
    board = subprocess.run(["bash", str(collection_dir / "launch_tensorboard.sh"), "--version_tb"],
                           capture_output=True, text=True, timeout=120)
    if importlib.util.find_spec("tensorboard") is not None:
        assert board.returncode == 0 and board.stdout.strip()[:1].isdigit(), board.stderr
    else:
        assert board.returncode == 1
        assert f"tensorboard not found; install it with: {sys.executable} -m pip install tensorboard" in board.stderr
    summary = (collection_dir / "summary.txt").read_text()
    assert 'RunCollection "exampleRun" (4 runs total)' in summary
    assert "[1 param_Qr2PeG data_RE1kuL]" in summary and "useAlignmentMatrix: true" in summary

    # Running the demo again destroys nothing and rewrites nothing.
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = run_manager_cli("demo", str(tmp_path), "--profile", "seed", *knobs)
    assert again.returncode == 0, again.stderr
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before


def test_scripts_carry_exactly_the_original_flags(seed_demo):
    (stitched,) = seed_demo.find_runs("all")
    pairs = dict(flag_pairs(stitched.params, stitched.n_datasets))
    assert set(pairs) == ORIGINAL_FLAGS
    # steps scale with the number of datasets; doubles print without %f padding
    assert pairs["kl_increase_steps"] == "2700" and pairs["l2_increase_steps"] == "2700"
    assert pairs["learning_rate_stop"] == "0.001" and pairs["keep_prob"] == "0.95" and pairs["max_grad_norm"] == "200"
    single = seed_demo.find_runs("single_dataset001")[0]
    assert dict(flag_pairs(single.params, 1))["kl_increase_steps"] == "900"

    train_text = (stitched.path / "lfads_train.sh").read_text()
    assert "set -euo pipefail" in train_text and "tee" not in train_text
    train = command_tokens(train_text)
    assert train[:4] == [sys.executable, "-m", "lfads", "--kind=train"]
    assert train.count("-m") == 1  # training only; the queue chains the steps and keeps the log
    posterior = command_tokens((stitched.path / "lfads_posterior_mean_sample.sh").read_text())
    assert posterior[3:6] == ["--kind=posterior_sample_and_average", "--batch_size=512", "--checkpoint_pb_load_name=checkpoint_lve"]
    assert sum(t.startswith("--batch_size=") for t in posterior) == 1
    assert not any(t.startswith("--temporal_spike_jitter_width") for t in posterior)
    params_step = command_tokens((stitched.path / "lfads_write_model_params.sh").read_text())
    assert params_step[3:5] == ["--kind=write_model_params", "--checkpoint_pb_load_name=checkpoint_lve"]
    assert "--batch_size=150" in params_step and not any(t.startswith("--temporal_spike") for t in params_step)


def command_tokens(script: str) -> list[str]:
    """The exec'd command line of a generated step script, as the shell would split it."""
    command = script[script.index("\nexec ") + 6:].replace("\\\n", " ")
    return shlex.split(command.replace("$run_dir", "RUN"))


def test_small_values_and_added_flags():
    params = RunParams(c_learning_rate_stop=1e-7, c_ic_post_var_min=2.5e-9, c_max_epochs=60, c_seed=0)
    pairs = dict(flag_pairs(params, 2))
    assert pairs["learning_rate_stop"] == "1e-07" and pairs["ic_post_var_min"] == "2.5e-09"
    assert pairs["max_epochs"] == "60" and pairs["seed"] == "0"
    assert "max_epochs" not in dict(flag_pairs(RunParams(), 1)) and "seed" not in dict(flag_pairs(RunParams(), 1))


def recorder(path: Path, log: Path) -> str:
    """A stand-in interpreter that records its arguments, to run the generated scripts for real."""
    path.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$PWD" "$@" > {log}\n')
    path.chmod(0o755)
    return str(path)


def test_step_scripts_and_run_lfads_py_run_by_hand_from_anywhere(tmp_path, seed_demo):
    log = tmp_path / "argv.txt"
    fake_python = recorder(tmp_path / "fake-python", log)
    collection = RunCollection(seed_demo.root, seed_demo.name, seed_demo.dataset_collection, python=fake_python)
    collection.params, collection.run_specs = seed_demo.params, seed_demo.run_specs
    collection.prepare()
    moved = tmp_path / "moved"
    os.rename(collection.root, moved)  # relative paths: the tree still works after a move
    run_dir = moved / "exampleRun" / "param_Qr2PeG" / "single_dataset002"
    subprocess.run(["bash", str(run_dir / "lfads_train.sh")], cwd="/", check=True, timeout=30)
    argv = log.read_text().splitlines()
    assert argv[0] == str(run_dir)  # it runs in its folder, whatever the caller's
    assert argv[1:5] == ["-m", "lfads", "--kind=train", "--data_dir=lfadsInput"]
    assert argv[5:7] == ["--data_filename_stem=lfads", "--lfads_save_dir=lfadsOutput"]
    assert "--factors_dim=8" in argv and "--kl_increase_steps=900" in argv

    subprocess.run(["python3", str(moved / "exampleRun" / "run_lfads.py"), "--cpu-slots", "2"], cwd="/", check=True, timeout=30)
    assert log.read_text().splitlines()[1:] == ["-m", "runqueue", "run", str(moved / "exampleRun"), "--cpu-slots", "2"]

    # Its interpreter gone (a deleted venv): a Python that has the queue runs it; one without says what to do.
    os.unlink(fake_python)
    queue = [str(moved / "exampleRun" / "run_lfads.py"), "--help"]
    ran = subprocess.run([sys.executable, *queue], cwd="/", capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and f"is not here; running the queue with {sys.executable}" in ran.stderr, ran.stderr
    assert "usage: runqueue run" in ran.stdout
    refused = subprocess.run([sys.executable, "-S", *queue], cwd="/", capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"run_lfads.py: {fake_python}, the Python this collection was prepared with, is not here" in refused.stderr


def test_summary_difference_line_leaves_out_name_and_version_and_says_default() -> None:
    from manager.summary import short_differences

    # RunParams.m: name and version never appear there; nothing different from the defaults is 'default'.
    assert short_differences(RunParams()) == "default"
    assert short_differences(RunParams(name="mine", version=20180131, c_factors_dim=8)) == "c_factors_dim=8"


def test_lfads_train_sh_is_written_last_in_each_run_folder(tmp_path, monkeypatch):
    """A watching queue takes a folder for a run as soon as lfads_train.sh appears and plans only
    the step scripts present then: every other file of the run must already be there."""
    (tmp_path / "datasets").mkdir()
    write_npz_dataset(tmp_path / "datasets" / "a.npz")
    collection = small_collection(tmp_path, ["a.npz"], c_max_epochs=3)
    collection.gpu_memory_mb = 1500  # runqueue.json too
    order: list[Path] = []
    real_write, real_link = prepare_module.write_if_changed, prepare_module._link

    def write(path, *args, **kwargs):
        order.append(Path(path))
        return real_write(path, *args, **kwargs)

    def link(path, *args, **kwargs):
        order.append(Path(path))
        return real_link(path, *args, **kwargs)

    monkeypatch.setattr(prepare_module, "write_if_changed", write)
    monkeypatch.setattr(written_files_module, "write_if_changed", write)  # generated files are written through the record
    monkeypatch.setattr(prepare_module, "_link", link)
    collection.prepare()
    (run,) = collection.runs
    in_run = [path for path in order if run.path in path.parents]
    assert {path.name for path in in_run} >= {"lfads_train.sh", "lfads_posterior_mean_sample.sh",
                                              "lfads_write_model_params.sh", "runqueue.json"}
    assert in_run[-1].name == "lfads_train.sh", [str(path.relative_to(run.path)) for path in in_run]


def test_temp_files_of_a_killed_prepare_are_removed_and_nobody_elses(tmp_path):
    (tmp_path / "datasets").mkdir()
    write_npz_dataset(tmp_path / "datasets" / "a.npz")
    collection = small_collection(tmp_path, ["a.npz"])
    collection.prepare()
    (run,) = collection.runs
    data_dir = run.path_common_data
    # What prepare's atomic writers leave when killed with -9 half-way (names as mkstemp makes them).
    ours = [data_dir / ".lfads_a.h5.k06gevuo.tmp", data_dir / ".inputInfo_a.mat.b0y8l433.tmp",
            data_dir / "..export_stamp.json.x_1yz2w3.tmp", run.path / ".lfads_train.sh.9ivoyprn.tmp",
            run.path / ".runqueue.json.abcdefgh.tmp", run.path / "lfadsInput" / ".lfads_a.h5.4242.0123abcd.link-tmp",
            collection.path / ".summary.txt.zzzzzzzz.tmp"]
    # ...and temp files that are not prepare's: a live supervisor's marker, LFADS's, a user's.
    theirs = [run.path / ".lfads.done.abcdefgh.tmp", run.path / "lfadsOutput" / ".fitlog.csv.abcdefgh.tmp",
              run.path / ".notes.txt.abcdefgh.tmp", run.path / ".runqueue" / ".state.json.abcdefgh.tmp"]
    for path in ours + theirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    report = collection.prepare()
    assert [path for path in ours if path.exists()] == []
    assert set(ours) <= set(report.files_removed)
    assert all(path.exists() for path in theirs)


def test_a_second_prepare_of_the_same_collection_at_once_is_refused(tmp_path):
    (tmp_path / "datasets").mkdir()
    write_npz_dataset(tmp_path / "datasets" / "a.npz")
    collection = small_collection(tmp_path, ["a.npz"])
    collection.prepare()
    fd = os.open(collection.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a prepare running in another process holds it
        with pytest.raises(ManagerError, match="another `lfads-manager prepare` is writing this collection"):
            collection.prepare()
    finally:
        os.close(fd)
    collection.prepare()


def test_a_prepare_that_loses_the_race_for_a_new_collection_leaves_the_winners_folder(tmp_path, monkeypatch):
    from manager.leftovers import collection_lock

    folder = tmp_path / "runs" / "new"
    folder.mkdir(parents=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    real_exists = Path.exists
    looked: list[Path] = []

    def exists_before_the_winner_made_it(path: Path) -> bool:
        if path == folder and not looked:  # the loser looked just before the winner's mkdir
            looked.append(path)
            return False
        return real_exists(path)

    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the winner, another process, holds the new folder
        monkeypatch.setattr(Path, "exists", exists_before_the_winner_made_it)
        with pytest.raises(ManagerError, match="another `lfads-manager prepare` is writing this collection"), \
                collection_lock(folder):
            pass
        monkeypatch.undo()
        assert looked and folder.is_dir()  # still there for the winner, its lock on a live folder
    finally:
        os.close(fd)
    # A prepare that held the lock and failed removes what it made.
    with pytest.raises(ZeroDivisionError), collection_lock(tmp_path / "runs" / "other" / "c"):
        raise ZeroDivisionError
    assert not (tmp_path / "runs" / "other").exists() and (tmp_path / "runs").is_dir()


def test_launch_tensorboard_names_logdirs_tensorboard_can_split_in_any_collection_path(tmp_path):
    from manager.scripts import tensorboard_script

    collection = tmp_path / "my demo, v2: lab" / "runs" / "exp"  # TensorBoard splits --logdir_spec on , and :
    rels = ["param_AAAAAA/all", "param_BBBBBB/one"]
    for rel in rels:
        (collection / rel / "lfadsOutput").mkdir(parents=True)
    fake = tmp_path / "bin"
    fake.mkdir()
    # A stand-in that parses the spec the way TensorBoard does (entries on ',', name:path on the first ':').
    (fake / "tensorboard").write_text(
        "#!/usr/bin/env python3\n"
        "import os, sys\n"
        "spec = sys.argv[1].split('=', 1)[1]\n"
        "for entry in spec.split(','):\n"
        "    name, path = entry.split(':', 1)\n"
        "    print(name, os.path.isdir(path), sys.argv[2:])\n")
    (fake / "tensorboard").chmod(0o755)
    script = collection / "launch_tensorboard.sh"
    script.write_text(tensorboard_script(rels, str(fake / "python")))
    result = subprocess.run(["bash", str(script), "--port=6007"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{rel} True ['--port=6007']" for rel in rels]


def test_launch_tensorboard_without_tensorboard_names_the_interpreter_as_written(tmp_path):
    from manager.scripts import tensorboard_script

    python = "/opt/$HOME `touch pwned`/bin/python"  # nothing in it may be expanded or run
    script = tmp_path / "launch_tensorboard.sh"
    script.write_text(tensorboard_script(["param_A/all"], python))
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert f"install it with: {python} -m pip install tensorboard" in result.stderr
    assert not (tmp_path / "pwned").exists()

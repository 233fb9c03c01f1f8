"""Changing a run spec's datasets or data: lfadsInput/ and the export follow, and trained runs are flagged stale."""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from manager_test_helpers import file_states, run_manager_cli, write_npz_dataset

from manager import DatasetCollection, ManagerError, RunCollection, RunParams, RunSpec, StaleResultsWarning
from manager.export_history import HISTORY_KEY, retrain_hint, stale_since
from manager.results import load_posterior_means
from runqueue import runlock
from runqueue.layout import RunPaths


def experiment(tmp_path: Path, datasets: list[str], alignment: bool = True) -> Path:
    toml = tmp_path / "e.toml"
    toml.write_text(f"""
[collection]
root = "runs"
name = "exp"
[datasets]
folder = "data"
glob = "*.npz"
[params]
c_batch_size = 4
c_factors_dim = 3
useAlignmentMatrix = {"true" if alignment else "false"}
[[runspec]]
name = "all"
datasets = {datasets!r}
""".replace("'", '"'))
    return toml


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for seed, name in enumerate(("ds001", "ds002", "ds003")):
        write_npz_dataset(folder / f"{name}.npz", seed=seed)
    return folder


def api_collection(tmp_path: Path, data: Path, name: str, spec: str, names: list[str]) -> RunCollection:
    """One param set, one run spec over `names`, built through the Python API."""
    datasets = DatasetCollection(data)
    datasets.add_files([f"{n}.npz" for n in names])
    collection = RunCollection(tmp_path / "runs", name, datasets)
    collection.add_params(RunParams(c_batch_size=4, c_factors_dim=3))
    collection.add_run_spec(RunSpec(spec, datasets, names))
    return collection


def sweep_experiment(tmp_path: Path, gen_dims: list[int]) -> Path:
    """One dataset, one run spec, a sweep over c_gen_dim: every run shares one export."""
    toml = tmp_path / "sweep.toml"
    toml.write_text(f"""
[collection]
root = "runs"
name = "sweep"
[datasets]
folder = "data"
files = ["ds001.npz"]
[params]
c_batch_size = 4
c_factors_dim = 3
[sweep]
c_gen_dim = {gen_dims!r}
[[runspec]]
name = "one"
datasets = ["ds001"]
""")
    return toml


def lfads_loads(run_dir: Path) -> list[str]:
    """What LFADS opens: every name in lfadsInput/ that starts with its --data_filename_stem."""
    return sorted(p.name for p in (run_dir / "lfadsInput").iterdir() if p.name.startswith("lfads"))


@pytest.mark.parametrize("regenerate", [False, True])
def test_dropping_a_dataset_removes_its_links_and_export(tmp_path, data, regenerate):
    assert run_manager_cli("prepare", str(experiment(tmp_path, ["ds001", "ds002", "ds003"]))).returncode == 0
    toml = experiment(tmp_path, ["ds001", "ds002"])
    result = run_manager_cli("prepare", str(toml), *(["--regenerate"] if regenerate else []))
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs" / "exp").glob("param_*/all")
    (data_dir,) = (tmp_path / "runs" / "exp").glob("data_*/all")
    assert lfads_loads(run_dir) == ["lfads_ds001.h5", "lfads_ds002.h5"]
    assert sorted(p.name for p in (run_dir / "lfadsInput").iterdir()) == [
        "inputInfo_ds001.mat", "inputInfo_ds002.mat", "lfads_ds001.h5", "lfads_ds002.h5"]
    assert sorted(p.name for p in data_dir.iterdir()) == [
        ".export_stamp.json", "alignment_reconstruction.png", "inputInfo_ds001.mat", "inputInfo_ds002.mat",
        "lfads_ds001.h5", "lfads_ds002.h5"]
    # and a further prepare finds nothing to do
    before = file_states(tmp_path / "runs")
    assert run_manager_cli("prepare", str(toml)).returncode == 0
    assert file_states(tmp_path / "runs") == before


def test_renamed_dataset_and_single_dataset_spec_without_alignment(tmp_path, data):
    datasets = DatasetCollection(data)
    datasets.add_files(["ds001.npz", "ds002.npz", "ds003.npz"])
    collection = RunCollection(tmp_path / "runs", "api", datasets)
    collection.add_params(RunParams(c_batch_size=4, c_factors_dim=3, useAlignmentMatrix=True))
    collection.add_run_spec(RunSpec("s", datasets, ["ds001", "ds002"]))
    collection.prepare()
    (run,) = collection.runs
    user_notes = [run.path_common_data / "notes.txt", run.paths.lfads_input / "notes.txt"]
    for note in user_notes:
        note.write_text("mine")
    run.paths.done_marker.write_text("")  # trained on the old pair
    collection.run_specs = [RunSpec("s", datasets, ["ds003"])]  # same folder, another dataset
    said: list[str] = []
    report = collection.prepare(progress=said.append)
    assert f"note: {run.path} was trained before its data changed" in "\n".join(said)
    assert report.stale_runs == [run.path]
    assert run.paths.done_marker.exists()  # the user decides
    assert lfads_loads(run.path) == ["lfads_ds003.h5"]
    assert {p.name for p in report.files_removed} == {
        "lfads_ds001.h5", "lfads_ds002.h5", "inputInfo_ds001.mat", "inputInfo_ds002.mat", "alignment_reconstruction.png"}
    assert sorted(p.name for p in run.path_common_data.iterdir()) == [
        ".export_stamp.json", "inputInfo_ds003.mat", "lfads_ds003.h5", "notes.txt"]
    assert all(note.read_text() == "mine" for note in user_notes)  # never a file the user put there


def test_a_file_lfads_would_load_that_prepare_did_not_make_is_refused(tmp_path, data):
    assert run_manager_cli("prepare", str(experiment(tmp_path, ["ds001", "ds002", "ds003"]))).returncode == 0
    (run_dir,) = (tmp_path / "runs" / "exp").glob("param_*/all")
    foreign = run_dir / "lfadsInput" / "lfads_extra.h5"
    foreign.write_text("a user's file")
    before = file_states(tmp_path / "runs")
    result = run_manager_cli("prepare", str(experiment(tmp_path, ["ds001", "ds002"])))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"lfads-manager: error: {foreign}: LFADS would load this as a dataset, but run spec 'all' has only "
        "ds001, ds002; move it out of lfadsInput/, then prepare again")
    assert foreign.read_text() == "a user's file"
    assert file_states(tmp_path / "runs") == before  # refused before anything was written


def _train_by_hand(run_dir: Path) -> None:
    """What prepare can see of a training: LFADS's first files in lfadsOutput/ and lfads.done."""
    (run_dir / "lfadsOutput" / "lfads_log").mkdir(parents=True)
    (run_dir / "lfadsOutput" / "hyperparameters-0.txt").write_text("{}")
    (run_dir / "lfadsOutput" / "lfads_log" / f"events.out.tfevents.{int(time.time())}.host.1.v2").write_bytes(b"")
    (run_dir / "lfads.done").write_text("{}")


def test_changed_source_data_under_a_trained_run_gets_a_note_until_it_is_retrained(tmp_path, data):
    toml = experiment(tmp_path, ["ds001", "ds002"])
    assert run_manager_cli("prepare", str(toml)).returncode == 0
    (run_dir,) = (tmp_path / "runs" / "exp").glob("param_*/all")
    _train_by_hand(run_dir)
    unchanged = run_manager_cli("prepare", str(toml))
    assert unchanged.returncode == 0 and "note:" not in unchanged.stderr
    os.utime(data / "ds002.npz")  # touched (or copied, restored): the export is redone, its content is not new
    touched = run_manager_cli("prepare", str(toml))
    assert touched.returncode == 0 and "note:" not in touched.stderr
    regenerated = run_manager_cli("prepare", str(toml), "--regenerate")
    assert regenerated.returncode == 0 and "note:" not in regenerated.stderr

    write_npz_dataset(data / "ds002.npz", seed=7)  # the recording was re-sorted, say
    note = f"note: {run_dir} was trained before its data changed"
    for extra in ((), ("--regenerate",), ()):  # said every time, not only when the export is redone
        result = run_manager_cli("prepare", str(toml), *extra)
        assert result.returncode == 0, result.stderr
        assert note in result.stderr and f"lfads-manager delete-output {run_dir}" in result.stderr
    assert (run_dir / "lfadsOutput").is_dir() and (run_dir / "lfads.done").exists()  # never deleted for the user
    with pytest.raises(ManagerError, match="its data changed after it was trained"):
        load_posterior_means(run_dir)

    assert run_manager_cli("delete-output", str(run_dir), "--yes").returncode == 0
    _train_by_hand(run_dir)  # trained again, on the current export
    again = run_manager_cli("prepare", str(toml))
    assert again.returncode == 0 and "note:" not in again.stderr


def test_the_api_warns_about_stale_runs_when_nobody_reads_progress(tmp_path, data):
    collection = api_collection(tmp_path, data, "api", "s", ["ds001"])
    collection.prepare()
    (run,) = collection.runs
    _train_by_hand(run.path)
    write_npz_dataset(data / "ds001.npz", seed=11)
    with pytest.warns(StaleResultsWarning, match="was trained before its data changed"):
        report = collection.prepare()
    assert report.stale_runs == [run.path]


def test_a_stitched_run_whose_spec_lost_a_dataset_is_stale(tmp_path, data):
    # Without alignment the files of the datasets it keeps stay byte for byte as they were.
    toml = experiment(tmp_path, ["ds001", "ds002", "ds003"], alignment=False)
    assert run_manager_cli("prepare", str(toml)).returncode == 0
    (run_dir,) = (tmp_path / "runs" / "exp").glob("param_*/all")
    kept = (run_dir / "lfadsInput" / "lfads_ds001.h5").stat().st_mtime_ns
    _train_by_hand(run_dir)
    result = run_manager_cli("prepare", str(experiment(tmp_path, ["ds001", "ds002"], alignment=False)))
    assert (run_dir / "lfadsInput" / "lfads_ds001.h5").stat().st_mtime_ns == kept
    assert result.returncode == 0, result.stderr
    assert f"note: {run_dir} was trained before its data changed" in result.stderr


def test_an_export_rebuilt_from_nothing_is_not_judged_but_said_once(tmp_path, data):
    toml = experiment(tmp_path, ["ds001", "ds002"])
    assert run_manager_cli("prepare", str(toml)).returncode == 0
    (run_dir,) = (tmp_path / "runs" / "exp").glob("param_*/all")
    _train_by_hand(run_dir)
    for export in (tmp_path / "runs" / "exp").glob("data_*"):
        shutil.rmtree(export)  # lost, or cleaned up by hand: nothing is known about what it held
    result = run_manager_cli("prepare", str(toml))
    assert result.returncode == 0 and "was trained before its data changed" not in result.stderr, result.stderr
    assert f"note: {run_dir} is trained, but its export was made again with no record" in result.stderr
    again = run_manager_cli("prepare", str(toml))
    assert again.returncode == 0 and "note:" not in again.stderr


def test_an_export_made_before_the_history_is_judged_by_the_files_it_replaces(tmp_path, data):
    toml = experiment(tmp_path, ["ds001", "ds002"])
    assert run_manager_cli("prepare", str(toml)).returncode == 0
    (run_dir,) = (tmp_path / "runs" / "exp").glob("param_*/all")
    (stamp_path,) = (tmp_path / "runs" / "exp").glob("data_*/all/.export_stamp.json")
    stamp = json.loads(stamp_path.read_text())
    del stamp["content_history"]  # what older versions wrote
    stamp_path.write_text(json.dumps(stamp))
    _train_by_hand(run_dir)
    original = (data / "ds002.npz").read_bytes()
    write_npz_dataset(data / "ds002.npz", seed=7)
    assert "was trained before its data changed" in run_manager_cli("prepare", str(toml)).stderr
    (data / "ds002.npz").write_bytes(original)  # the old data back: the run matches its input again
    restored = run_manager_cli("prepare", str(toml))
    assert restored.returncode == 0 and "note:" not in restored.stderr, restored.stderr


def test_the_flag_survives_a_copy_that_resets_modification_times(tmp_path, data):
    toml = experiment(tmp_path, ["ds001", "ds002"])
    assert run_manager_cli("prepare", str(toml)).returncode == 0
    (run_dir,) = (tmp_path / "runs" / "exp").glob("param_*/all")
    _train_by_hand(run_dir)
    time.sleep(1.1)  # the event file's name holds whole seconds
    write_npz_dataset(data / "ds002.npz", seed=7)
    assert "was trained before its data changed" in run_manager_cli("prepare", str(toml)).stderr
    copy = tmp_path.parent / f"{tmp_path.name}-copy"
    shutil.copytree(tmp_path, copy, symlinks=True, copy_function=shutil.copy)  # like cp -r: new mtimes
    copied = run_manager_cli("prepare", str(copy / "e.toml"))
    assert "was trained before its data changed" in copied.stderr, copied.stderr


def test_a_retrain_from_scratch_after_a_dead_first_attempt_is_judged_by_the_retrain(tmp_path, data):
    toml = experiment(tmp_path, ["ds001", "ds002"])
    assert run_manager_cli("prepare", str(toml)).returncode == 0
    (run_dir,) = (tmp_path / "runs" / "exp").glob("param_*/all")
    _train_by_hand(run_dir)  # an attempt that died before its first checkpoint left these
    time.sleep(1.1)
    write_npz_dataset(data / "ds002.npz", seed=7)
    assert "was trained before its data changed" in run_manager_cli("prepare", str(toml)).stderr
    time.sleep(1.1)
    output = run_dir / "lfadsOutput"
    (output / "hyperparameters-0.txt").write_text("{}")  # LFADS starts the model from scratch again
    (output / "lfads_log" / f"events.out.tfevents.{int(time.time())}.host.2.v2").write_bytes(b"")
    retrained = run_manager_cli("prepare", str(toml))
    assert retrained.returncode == 0 and "note:" not in retrained.stderr, retrained.stderr


def test_report_refuses_a_run_whose_spec_gained_a_dataset(tmp_path, data):
    toml = experiment(tmp_path, ["ds001", "ds002"])
    assert run_manager_cli("prepare", str(toml)).returncode == 0
    (run_dir,) = (tmp_path / "runs" / "exp").glob("param_*/all")
    _train_by_hand(run_dir)
    (run_dir / "lfadsOutput" / "fitlog.csv").write_text("epoch,0, step,8, total,1.0, recon,1.0, kl,0.0, l2,0.0, klweight,1.0, l2weight,1.0\n")
    assert run_manager_cli("prepare", str(experiment(tmp_path, ["ds001", "ds002", "ds003"]))).returncode == 0
    result = run_manager_cli("report", str(run_dir))
    assert result.returncode == 2 and "its data changed after it was trained" in result.stderr, result.stdout + result.stderr
    assert not (run_dir / "report").exists()


def test_prepare_leaves_the_inputs_of_a_running_run_alone(tmp_path, data):
    toml = experiment(tmp_path, ["ds001", "ds002"])
    assert run_manager_cli("prepare", str(toml)).returncode == 0
    (run_dir,) = (tmp_path / "runs" / "exp").glob("param_*/all")
    lock = runlock.try_acquire(RunPaths(run_dir).lock)  # as its supervisor does: the run is running
    assert lock is not None
    try:
        os.utime(data / "ds002.npz")  # same content: the export is rewritten the same, the run is left to run
        touched = run_manager_cli("prepare", str(toml))
        assert touched.returncode == 0, touched.stderr
        write_npz_dataset(data / "ds002.npz", seed=7)
        before = file_states(tmp_path / "runs")
        for changed in (toml, experiment(tmp_path, ["ds001", "ds002", "ds003"])):  # new data; a dataset added
            refused = run_manager_cli("prepare", str(changed))
            assert refused.returncode != 0
            assert f"{run_dir}: is running, and this prepare would change its inputs" in refused.stderr
            assert f"stop it with `runqueue cancel {run_dir}`" in refused.stderr
            assert "runqueue cancel" in refused.stderr
            assert file_states(tmp_path / "runs") == before  # nothing written
    finally:
        os.close(lock)
    assert run_manager_cli("prepare", str(toml)).returncode == 0


def test_no_queue_can_start_a_run_while_prepare_rewrites_its_inputs(tmp_path, data):
    collection = api_collection(tmp_path, data, "exp", "all", ["ds001", "ds002"])
    collection.add_run_spec(RunSpec("second", collection.dataset_collection, ["ds002"]))
    collection.prepare()
    write_npz_dataset(data / "ds002.npz", seed=7)  # both exports change
    seen: list[tuple[str, bool]] = []

    def progress(message: str) -> None:
        if message.startswith(("loading", "exporting")):
            for run in collection.runs:  # every run whose export changes, not only the one being written
                lock = RunPaths(run.path).lock
                fd = runlock.try_acquire(lock)  # what a queue's supervisor does to start the run
                seen.append((run.spec.name, fd is None and runlock.held_by(lock) is runlock.HeldBy.MANAGER))  # status tells it from running
                if fd is not None:
                    os.close(fd)

    collection.prepare(progress=progress)
    assert len(seen) == 8 and all(blocked for _, blocked in seen), seen  # 2 loads + 2 exports, 2 runs each
    assert not any(runlock.is_held(RunPaths(run.path).lock) for run in collection.runs)


def test_a_sweep_of_more_runs_than_open_files_is_prepared_again_after_its_data_changed(tmp_path, data):
    toml = sweep_experiment(tmp_path, list(range(8, 98)))  # 90 runs sharing one export
    assert run_manager_cli("prepare", str(toml)).returncode == 0
    write_npz_dataset(data / "ds001.npz", seed=11)
    # 64 open files at most, unless prepare raises its own soft limit for the runs it locks at once.
    again = subprocess.run(["bash", "-c", f"ulimit -Sn 64 && {shlex.quote(sys.executable)} -m manager prepare {shlex.quote(str(toml))}"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr


def test_the_first_prepare_of_a_collection_holds_its_lock(tmp_path, data):
    collection = api_collection(tmp_path, data, "exp", "one", ["ds001"])
    locked: list[bool] = []

    def progress(message: str) -> None:
        if message.startswith("exporting"):
            fd = os.open(collection.path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a second prepare tries
                locked.append(False)
            except BlockingIOError:
                locked.append(True)
            finally:
                os.close(fd)

    collection.prepare(progress=progress)
    assert locked == [True]


def _hold_as_running(run_dir: Path) -> int:
    fd = runlock.try_acquire(RunPaths(run_dir).lock)  # as its supervisor does
    assert fd is not None
    return fd


def test_a_running_run_of_a_param_set_that_left_the_experiment_keeps_its_inputs(tmp_path, data):
    assert run_manager_cli("prepare", str(sweep_experiment(tmp_path, [16, 32]))).returncode == 0
    before_runs = set((tmp_path / "runs" / "sweep").glob("param_*/one"))
    narrowed = sweep_experiment(tmp_path, [16])
    assert run_manager_cli("prepare", str(narrowed)).returncode == 0
    summary = (tmp_path / "runs" / "sweep" / "summary.txt").read_text()
    (left,) = [run for run in before_runs if run.parent.name not in summary]  # its folder stays on disk
    fd = _hold_as_running(left)
    try:
        write_npz_dataset(data / "ds001.npz", seed=13)
        before = file_states(tmp_path / "runs")
        refused = run_manager_cli("prepare", str(narrowed))
        assert refused.returncode != 0 and f"{left}: is running" in refused.stderr, refused.stderr
        assert file_states(tmp_path / "runs") == before
    finally:
        os.close(fd)


def test_regenerate_does_not_slip_new_content_under_a_running_run(tmp_path, data):
    toml = experiment(tmp_path, ["ds001"], alignment=False)
    assert run_manager_cli("prepare", str(toml)).returncode == 0
    (run_dir,) = (tmp_path / "runs" / "exp").glob("param_*/all")
    source = data / "ds001.npz"
    times = source.stat()
    write_npz_dataset(source, seed=21)  # the same size; its old mtime put back (as `cp -p` of other data would)
    os.utime(source, ns=(times.st_atime_ns, times.st_mtime_ns))
    assert source.stat().st_size == times.st_size
    fd = _hold_as_running(run_dir)
    try:
        refused = run_manager_cli("prepare", str(toml), "--regenerate")
        assert refused.returncode != 0 and f"{run_dir}: is running" in refused.stderr, refused.stderr
    finally:
        os.close(fd)


def test_a_pending_run_that_left_the_experiment_is_retired_when_its_inputs_change(tmp_path, data):
    assert run_manager_cli("prepare", str(sweep_experiment(tmp_path, [16, 32]))).returncode == 0
    before_runs = set((tmp_path / "runs" / "sweep").glob("param_*/one"))
    narrowed = sweep_experiment(tmp_path, [16])
    assert run_manager_cli("prepare", str(narrowed)).returncode == 0  # same inputs: left alone
    summary = (tmp_path / "runs" / "sweep" / "summary.txt").read_text()
    (left,) = [run for run in before_runs if run.parent.name not in summary]
    assert (left / "lfads_train.sh").exists()
    write_npz_dataset(data / "ds001.npz", seed=13)  # the export it reads gets new content
    prepared = run_manager_cli("prepare", str(narrowed))
    assert prepared.returncode == 0, prepared.stderr
    assert f"{left} left the experiment and its inputs changed, so it will not be trained" in prepared.stdout + prepared.stderr
    assert not (left / "lfads_train.sh").exists() and (left / "lfads_train.sh.retired").exists()
    # Back in the experiment: prepared again, as a run.
    assert run_manager_cli("prepare", str(sweep_experiment(tmp_path, [16, 32]))).returncode == 0
    assert (left / "lfads_train.sh").exists() and not (left / "lfads_train.sh.retired").exists()


def test_a_done_run_that_left_the_experiment_gets_the_stale_note_when_its_export_changes(tmp_path, data):
    assert run_manager_cli("prepare", str(sweep_experiment(tmp_path, [16, 32]))).returncode == 0
    runs = set((tmp_path / "runs" / "sweep").glob("param_*/one"))
    for run_dir in runs:
        _train_by_hand(run_dir)
    narrowed = sweep_experiment(tmp_path, [16])
    quiet = run_manager_cli("prepare", str(narrowed))
    assert quiet.returncode == 0 and "note:" not in quiet.stderr
    write_npz_dataset(data / "ds001.npz", seed=17)  # the export both read gets new content
    for _ in range(2):  # said on every prepare, as for the runs still in the experiment
        result = run_manager_cli("prepare", str(narrowed))
        assert result.returncode == 0, result.stderr
        for run_dir in runs:
            assert f"note: {run_dir} was trained before its data changed" in result.stderr, result.stderr
    (left,) = [run for run in runs if run.parent.name not in (tmp_path / "runs" / "sweep" / "summary.txt").read_text()]
    assert (left / "lfads_train.sh").exists()  # done: kept, not retired


def test_untrained_runs_that_left_the_experiment_are_named_and_pruned_on_request(tmp_path, data):
    assert run_manager_cli("prepare", str(sweep_experiment(tmp_path, [16, 32, 64]))).returncode == 0
    collection = tmp_path / "runs" / "sweep"
    before_runs = set(collection.glob("param_*/one"))
    narrowed = sweep_experiment(tmp_path, [16])
    noted = run_manager_cli("prepare", str(narrowed))
    assert noted.returncode == 0, noted.stderr
    summary = (collection / "summary.txt").read_text()
    left = sorted(run for run in before_runs if run.parent.name not in summary)
    trained, untrained = left
    (trained / "lfads.done").write_text("")
    output = noted.stdout + noted.stderr
    assert "2 run folder(s)" in output and "left the experiment but are not done" in output
    assert all(str(run.relative_to(collection)) in output for run in left)
    assert "lfads-manager prepare --prune EXPERIMENT.toml" in output
    assert all((run / "lfads_train.sh").exists() for run in left)  # a note only: nothing moved
    before = file_states(tmp_path / "runs")
    pruned = run_manager_cli("prepare", "--prune", str(narrowed))
    assert pruned.returncode == 0, pruned.stderr
    assert f"retired 1 unfinished run(s) that left the experiment ({untrained.relative_to(collection)})" in pruned.stdout + pruned.stderr
    assert (untrained / "lfads_train.sh.retired").exists() and not (untrained / "lfads_train.sh").exists()
    assert (trained / "lfads_train.sh").exists()  # done: its results stay a run
    after = file_states(tmp_path / "runs")
    assert {path for path in after if after[path] != before.get(path)} == {
        str((untrained / "lfads_train.sh.retired").relative_to(tmp_path / "runs"))}
    quiet = run_manager_cli("prepare", str(narrowed))
    assert "left the experiment" not in quiet.stdout + quiet.stderr  # nothing left to say
    assert run_manager_cli("prepare", str(sweep_experiment(tmp_path, [16, 32, 64]))).returncode == 0
    assert (untrained / "lfads_train.sh").exists() and not (untrained / "lfads_train.sh.retired").exists()


def test_prune_leaves_a_departed_run_that_is_running_alone(tmp_path, data):
    assert run_manager_cli("prepare", str(sweep_experiment(tmp_path, [16, 32]))).returncode == 0
    before_runs = set((tmp_path / "runs" / "sweep").glob("param_*/one"))
    narrowed = sweep_experiment(tmp_path, [16])
    assert run_manager_cli("prepare", str(narrowed)).returncode == 0
    summary = (tmp_path / "runs" / "sweep" / "summary.txt").read_text()
    (left,) = [run for run in before_runs if run.parent.name not in summary]
    fd = _hold_as_running(left)
    try:
        pruned = run_manager_cli("prepare", "--prune", str(narrowed))
    finally:
        os.close(fd)
    assert pruned.returncode == 0, pruned.stderr
    assert "are running now and were left alone" in pruned.stdout + pruned.stderr
    assert (left / "lfads_train.sh").exists()


def test_a_link_in_lfadsinput_that_prepare_did_not_make_is_refused_and_kept(tmp_path, data):
    toml = experiment(tmp_path, ["ds001"], alignment=False)
    assert run_manager_cli("prepare", str(toml)).returncode == 0
    (run_dir,) = (tmp_path / "runs" / "exp").glob("param_*/all")
    (tmp_path / "extra.h5").write_text("mine")
    mine = run_dir / "lfadsInput" / "lfads_extra.h5"
    mine.symlink_to(tmp_path / "extra.h5")
    refused = run_manager_cli("prepare", str(toml))
    assert refused.returncode == 2 and f"{mine}: LFADS would load this as a dataset" in refused.stderr, refused.stderr
    assert mine.is_symlink()


def test_an_old_version_alignment_export_follows_a_new_factors_dim(tmp_path, data):
    # version < 20171107 keeps c_factors_dim out of the data hash, but it sizes the alignment matrices.
    toml = experiment(tmp_path, ["ds001", "ds002"])
    toml.write_text(toml.read_text().replace("[params]\n", "[params]\nversion = 20170101\n"))
    assert run_manager_cli("prepare", str(toml)).returncode == 0
    toml.write_text(toml.read_text().replace("c_factors_dim = 3", "c_factors_dim = 4"))
    prepared = run_manager_cli("prepare", str(toml))
    assert prepared.returncode == 0, prepared.stderr
    # The width-3 run left the experiment and its inputs changed under it: retired, not trained on them.
    (old,) = (tmp_path / "runs" / "exp").glob("param_*/all/lfads_train.sh.retired")
    (run_dir,) = [script.parent for script in (tmp_path / "runs" / "exp").glob("param_*/all/lfads_train.sh")]
    assert "--factors_dim=4" in (run_dir / "lfads_train.sh").read_text() and old.parent != run_dir
    import h5py

    with h5py.File(run_dir / "lfadsInput" / "lfads_ds001.h5") as h5:
        assert h5["alignment_matrix_cxf"].shape[1] == 4


def _model(run_dir: Path, *, started: float, restarts: list[float], hyperparameters_mtime: float) -> Path:
    """An lfadsOutput/ as LFADS leaves it: an event file per (re)start, hyperparameters-0.txt."""
    out = run_dir / "lfadsOutput"
    (out / "lfads_log").mkdir(parents=True)
    for moment in (started, *restarts):
        (out / "lfads_log" / f"events.out.tfevents.{int(moment)}.host.1.v2").write_bytes(b"")
    (out / "hyperparameters-0.txt").write_text("{}\n")
    os.utime(out / "hyperparameters-0.txt", (hyperparameters_mtime, hyperparameters_mtime))
    return out


def test_a_copied_run_is_dated_by_its_first_start_not_its_last_restart(tmp_path):
    from manager.export_history import training_started

    t0 = 1_700_000_000.0
    intact = _model(tmp_path / "intact", started=t0, restarts=[t0 + 1000], hyperparameters_mtime=t0 + 2)
    assert training_started(intact.parent) == t0
    # cp -r: every mtime is the copy's; the event file names keep their times.
    copied = _model(tmp_path / "copied", started=t0, restarts=[t0 + 1000], hyperparameters_mtime=t0 + 5000)
    assert training_started(copied.parent) == t0


def test_posterior_files_sampled_on_other_data_make_a_run_stale(tmp_path):
    from manager.export_history import HISTORY_KEY, stale_since

    t0 = 1_700_000_000.0
    history = [["D1", t0], ["D2", t0 + 200], ["D1", t0 + 400]]  # the data changed, then was put back
    out = _model(tmp_path / "run", started=t0 + 100, restarts=[], hyperparameters_mtime=t0 + 100)
    assert stale_since(out.parent, {HISTORY_KEY: history}) is None  # trained on D1, which is current again
    sampled = out / "model_runs_ds.h5_valid_posterior_sample_and_average"
    sampled.write_bytes(b"")
    os.utime(sampled, (t0 + 300, t0 + 300))  # requeued while D2 was current: D2's trials
    assert stale_since(out.parent, {HISTORY_KEY: history}) == t0 + 400
    os.utime(sampled, (t0 + 500, t0 + 500))  # sampled again on D1
    assert stale_since(out.parent, {HISTORY_KEY: history}) is None


@pytest.mark.parametrize(("model_start_offset", "stale"), [(0.43, False), (0.2, True)])
def test_a_model_started_in_the_same_second_as_its_export_is_dated_to_the_fraction(tmp_path, model_start_offset, stale):
    """Event-file names hold whole seconds: a model started 0.1 s after the export it trained on was
    dated to the second before the export and called stale (report then refused its results)."""
    second = 1_795_000_000
    exported = second + 0.35
    history = [["old-digest", 0.0], ["new-digest", exported]]
    output = tmp_path / "run" / "lfadsOutput"
    (output / "lfads_log").mkdir(parents=True)
    (output / "lfads_log" / f"events.out.tfevents.{second}.host.1.v2").write_bytes(b"")
    hyper = output / "hyperparameters-0.txt"
    hyper.write_text("{}")
    os.utime(hyper, (second + model_start_offset, second + model_start_offset))
    assert (stale_since(tmp_path / "run", {HISTORY_KEY: history}) is not None) is stale


def test_the_retrain_hint_of_a_run_whose_inputs_are_gone_says_to_prepare_it_first(tmp_path):
    """A finished run of a param set that left the experiment, whose run spec dropped a dataset:
    `delete-output` and the queue alone fail on the dangling link; the hint says what comes first."""
    run = tmp_path / "runs" / "c" / "param_abcdef" / "x"
    (run / "lfadsInput").mkdir(parents=True)
    (run / "lfadsInput" / "lfads_a.h5").write_bytes(b"")
    (run / "lfadsInput" / "lfads_b.h5").symlink_to("../../../data_abcdef/x/lfads_b.h5")
    assert retrain_hint(run).startswith("first put its param set and run spec back in the experiment and run"
                                        " lfads-manager prepare (its inputs lfads_b.h5 are gone), then lfads-manager delete-output")
    (run / "lfadsInput" / "lfads_b.h5").unlink()
    assert retrain_hint(run).startswith("lfads-manager delete-output")


def test_an_export_killed_midway_is_exported_again_and_its_runs_are_refused_until_then(tmp_path, data, monkeypatch):
    import h5py

    import manager.prepare as prepare_module

    def prepare():
        return api_collection(tmp_path, data, "cut", "s", ["ds001", "ds002"]).prepare()

    prepare()
    (run_dir,) = (tmp_path / "runs" / "cut").glob("param_*/s")
    (h5,) = (tmp_path / "runs" / "cut").glob("data_*/s/lfads_ds002.h5")
    with h5py.File(h5, "r") as handle:
        learned = handle["train_data"][()]
    _train_by_hand(run_dir)
    backup = tmp_path / "ds002.backup"
    shutil.copy2(data / "ds002.npz", backup)  # with its modification time
    write_npz_dataset(data / "ds002.npz", seed=7)
    calls = []
    real_write_input_info = prepare_module.write_input_info

    def killed_after_the_second_h5(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:  # lfads_ds002.h5 is replaced, the stamp not yet: as kill -9 there
            raise KeyboardInterrupt
        return real_write_input_info(*args, **kwargs)

    monkeypatch.setattr(prepare_module, "write_input_info", killed_after_the_second_h5)
    with pytest.raises(KeyboardInterrupt):
        prepare()
    monkeypatch.undo()
    with h5py.File(h5, "r") as handle:
        assert not np.array_equal(handle["train_data"][()], learned)  # the new data, half exported
    with pytest.raises(ManagerError, match=r"the export of its input data was interrupted.*run lfads-manager prepare again"):
        load_posterior_means(run_dir)
    os.replace(backup, data / "ds002.npz")  # the old recording put back as `mv` does: size and mtime as stamped
    assert prepare().exported  # not taken as current by the stamp from before the cut
    with h5py.File(h5, "r") as handle:
        np.testing.assert_array_equal(handle["train_data"][()], learned)
    from manager.export_history import read_stamp

    assert stale_since(run_dir, read_stamp(h5.parent)) is None  # trained before the cut, on what it holds again

"""The Python API around the grid: replacing entries, finding runs, deleting output, import boundary."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from manager_test_helpers import small_collection, write_npz_dataset

from manager import DatasetCollection, ManagerError, RunParams, RunSpec
from runqueue import runlock
from runqueue.runstate import PersistedState, Phase, load_state, save_state


@pytest.fixture
def collection(tmp_path):
    (tmp_path / "datasets").mkdir()
    for name in ("a", "b"):
        write_npz_dataset(tmp_path / "datasets" / f"{name}.npz", seed=ord(name))
    return small_collection(tmp_path, ["a.npz", "b.npz"])


def test_equal_entries_replace_and_runs_are_found_by_name_index_and_hash(collection):
    params = collection.params[0]
    collection.add_params([params.copy(name="renamed"), params.copy(c_gen_dim=32)])  # same hash replaces
    assert [p.name for p in collection.params] == ["renamed", ""]
    collection.add_run_spec(RunSpec("single_a", collection.dataset_collection, ["a"]))
    with pytest.raises(ManagerError, match="already exists with datasets"):
        collection.add_run_spec(RunSpec("single_a", collection.dataset_collection, [1]))
    both = RunSpec("both", collection.dataset_collection, [True, True])
    collection.add_run_spec(both)
    assert len(collection.runs) == 6
    assert [r.rel_dir for r in collection.find_runs("both")] == [f"{p.param_hash_name}/both" for p in collection.params]
    wanted = collection.params[1]
    (run,) = collection.find_runs(1, wanted.param_hash_name)
    assert run.spec.name == "single_b" and run.params is wanted
    with pytest.raises(ManagerError, match="no param set"):
        collection.find_runs(params="param_zzzzzz")


def test_delete_lfads_output_needs_confirmation(collection, monkeypatch):
    collection.prepare()
    run = collection.runs[0]
    (run.paths.lfads_output).mkdir()
    (run.paths.lfads_output / "fitlog.csv").write_text("epoch,0")
    run.paths.done_marker.write_text("")
    run.paths.out_log.write_text("log")
    monkeypatch.setattr("builtins.input", lambda prompt: "no")
    with pytest.raises(ManagerError, match="not confirmed"):
        collection.delete_lfads_output(run)
    assert run.paths.done_marker.exists()
    # Interrupted during sampling: the queue would resume at that step, with no model left.
    save_state(run.paths, PersistedState(phase=Phase.INTERRUPTED, attempt=2, resume_step="lfads_posterior_mean_sample.sh"))
    collection.delete_lfads_output(str(run.path), confirm=True)  # a run folder does as well as a Run
    assert not run.paths.lfads_output.exists() and not run.paths.done_marker.exists() and not run.paths.out_log.exists()
    assert run.paths.train_script.exists()  # the run itself stays
    state = load_state(run.paths)
    assert (state.resume_step, state.attempt) == (None, 0)  # from training, attempt 1, as after `runqueue requeue`


def test_delete_output_refuses_a_running_run_and_keeps_a_linked_output(collection):
    collection.prepare()
    run = collection.runs[0]
    run.paths.lfads_output.mkdir()
    (run.paths.lfads_output / "lfads_vae.ckpt-10.index").write_text("checkpoint")
    held = runlock.try_acquire(run.paths.lock)  # what a run's supervisor holds while it trains
    try:
        with pytest.raises(ManagerError, match=re.escape(f"the run is running; stop it first with `runqueue cancel {run.path}`")):
            collection.delete_lfads_output(run, confirm=True)
    finally:
        os.close(held)
    assert (run.paths.lfads_output / "lfads_vae.ckpt-10.index").exists()

    elsewhere = collection.path.parent / "scratch_output"
    run.paths.lfads_output.rename(elsewhere)
    run.paths.lfads_output.symlink_to(elsewhere)
    with pytest.raises(ManagerError, match="symbolic link"):
        collection.delete_lfads_output(run, confirm=True)
    assert (elsewhere / "lfads_vae.ckpt-10.index").exists()


def test_delete_output_command(collection):
    collection.prepare()
    first, second = collection.runs[:2]
    for run in (first, second):
        run.paths.lfads_output.mkdir()
        run.paths.done_marker.write_text("")
    command = [sys.executable, "-m", "manager", "delete-output", str(first.path), str(second.path)]
    declined = subprocess.run(command, input="no\n", capture_output=True, text=True)
    assert declined.returncode == 1 and first.paths.done_marker.exists()
    unanswered = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)  # cron, a script
    assert unanswered.returncode == 1 and "nothing deleted (no answer; pass --yes" in unanswered.stderr
    assert "Traceback" not in unanswered.stderr and first.paths.done_marker.exists()
    done = subprocess.run([*command, "--yes"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "deleted lfadsOutput, lfads.done" in done.stdout
    assert not first.paths.lfads_output.exists() and not second.paths.done_marker.exists()
    not_a_run = subprocess.run([*command[:4], str(collection.path), "--yes"], capture_output=True, text=True)
    assert not_a_run.returncode == 2 and "not a run folder" in not_a_run.stderr


def test_delete_output_checks_every_path_before_asking(collection):
    collection.prepare()
    run = collection.runs[0]
    run.paths.done_marker.write_text("")
    missing = collection.path / "no-such-run"
    command = [sys.executable, "-m", "manager", "delete-output", str(run.path), str(collection.path), str(missing)]
    result = subprocess.run(command, input="yes\n", capture_output=True, text=True)
    assert result.returncode == 2 and "Type yes" not in result.stdout + result.stderr  # never asked
    assert f"lfads-manager: error: {collection.path}: not a run folder (no lfads_train.sh)" in result.stderr
    assert f"lfads-manager: error: {missing}: does not exist; check the path" in result.stderr
    assert "nothing deleted (2 of the 3 paths are not run folders)" in result.stderr
    assert run.paths.done_marker.exists()  # the good one is left alone too


def test_values_are_cast_to_the_matlab_type():
    params = RunParams(spikeBinMs=2, c_factors_dim=8.0, useAlignmentMatrix=1, num_samples_posterior=64)
    assert params.spikeBinMs == 2.0 and isinstance(params.spikeBinMs, float)
    assert params.c_factors_dim == 8 and isinstance(params.c_factors_dim, int)
    assert params.useAlignmentMatrix is True and params.num_samples_posterior == 64.0


def test_the_manager_never_imports_tensorflow():
    code = ("import sys, manager, manager.cli, manager.demo, manager.experiment, manager.report; "
            "sys.exit(any(m.split('.')[0] in ('tensorflow', 'lfads') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_run_specs_keep_their_datasets_when_the_collection_is_filtered(tmp_path):
    (tmp_path / "datasets").mkdir()
    for seed, (name, n_trials) in enumerate((("ds001", 40), ("ds002", 40), ("ds003", 12))):
        write_npz_dataset(tmp_path / "datasets" / f"{name}.npz", n_trials=n_trials, seed=seed)
    collection = small_collection(tmp_path, ["ds001.npz", "ds002.npz", "ds003.npz"])
    datasets = collection.dataset_collection
    by_name, by_index = RunSpec("by_name", datasets, ["ds002"]), RunSpec("by_index", datasets, [2])
    first = RunSpec("first", datasets, [True, False, False])
    datasets.filter_datasets([False, True, True])
    assert by_name.dataset_names == ["ds002"] and [d.name for d in by_name.datasets] == ["ds002"]
    assert by_index.dataset_names == ["ds003"] and by_index.dataset_indices == (1,)
    datasets.filter_having_minimum_trials_for_batch_size(collection.params[0])  # drops ds003 (12 trials)
    assert [d.name for d in by_name.datasets] == ["ds002"] and by_name.dataset_indices == (0,)
    collection.run_specs = [by_name, first]
    with pytest.raises(ManagerError, match=r"run spec 'first' uses dataset\(s\) ds001, no longer in the collection"):
        collection.prepare()
    assert not (tmp_path / "runs").exists()


def test_delete_output_goes_on_past_a_run_it_cannot_delete(collection):
    collection.prepare()
    first, second = collection.runs[:2]
    first.paths.lfads_output.write_text("a file where the folder should be")  # rmtree refuses it
    first.paths.done_marker.write_text("")
    second.paths.lfads_output.mkdir()
    second.paths.done_marker.write_text("")
    result = subprocess.run([sys.executable, "-m", "manager", "delete-output", str(first.path), str(second.path), "--yes"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert f"lfads-manager: error: {first.paths.lfads_output}: cannot delete (" in result.stderr
    assert first.paths.done_marker.exists()  # left as it was: no markers removed over surviving output
    assert not second.paths.lfads_output.exists() and not second.paths.done_marker.exists()


def _failing_unlink(monkeypatch, fails):
    """os.unlink failing with EROFS where `fails(path)` says (a read-only subfolder, another account's
    file: as root no permission would stop it); -> the paths it was asked to delete, in order."""
    real = os.unlink
    asked = []

    def unlink(path, *args, **kwargs):
        asked.append(Path(path))
        if fails(Path(path)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        real(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    return asked


def _trained_looking_run(collection):
    collection.prepare()
    run = collection.runs[0]
    output = run.paths.lfads_output
    (output / "zz_sub").mkdir(parents=True)
    for name in ("lfads_vae.ckpt-10.index", "model_params", "checkpoint", "fitlog.csv", "zz_sub/file"):
        (output / name).write_text("data")
    run.paths.done_marker.write_text('{"finished": "yes"}')
    run.paths.out_log.write_text("log")
    return run


def test_a_deletion_that_fails_half_way_says_what_went_and_leaves_the_run_marked_half_deleted(collection, monkeypatch):
    from manager.cleanup import delete_run_output
    from runqueue import runlock
    from runqueue.layout import RunPaths
    from runqueue.runstate import RunState, marker_state, read_failure

    run = _trained_looking_run(collection)
    output = run.paths.lfads_output
    states = set()  # what a queue would make of the run at each file deleted

    def seen(path):
        if output in path.parents:  # deleting the model (not tidying up after it stopped)
            states.add((marker_state(RunPaths(run.path)), runlock.held_by(run.paths.lock)))
        return path.name == "file"

    asked = _failing_unlink(monkeypatch, seen)
    with pytest.raises(ManagerError) as raised:
        delete_run_output(run.path)
    message = str(raised.value)
    assert message.startswith(f"{output / 'zz_sub' / 'file'}: cannot delete (Read-only file system); partly deleted:"
                              f" 4 files and folders of {output} removed, this one not;"), message
    assert "nothing was deleted" not in message and "delete the output again" in message
    # The checkpoint state went first: what is left could never be resumed as the old model.
    assert [p.name for p in asked[:2]] == ["checkpoint", "fitlog.csv"]
    assert sorted(p.name for p in output.rglob("*")) == ["file", "zz_sub"]
    # Not done any more, and not resumable: lfads.failed says what happened; the log is kept.
    assert not run.paths.done_marker.exists() and run.paths.out_log.read_text() == "log"
    failure = read_failure(run.paths)
    assert failure["reason"] == "output_half_deleted" and str(output / "zz_sub" / "file") in failure["message"]
    assert marker_state(run.paths) == RunState.FAILED
    assert sorted(p.name for p in run.paths.runtime_dir.iterdir() if "delete" in p.name) == []

    monkeypatch.undo()  # fixed: deleting again takes the rest and the run is pending, from scratch
    # While deleting, the run was never done, and the manager's lock kept every queue from starting it
    # (a queue waits for it; an lfads.failed written up front made a running queue give the run up).
    assert states == {(RunState.PENDING, runlock.HeldBy.MANAGER)}
    removed = delete_run_output(run.path)
    assert [p.name for p in removed] == ["lfadsOutput", "lfads.out", "lfads.failed"]
    assert not output.exists() and not run.paths.failed_marker.exists() and not run.paths.out_log.exists()
    assert marker_state(run.paths) == RunState.PENDING


def test_a_deletion_that_can_delete_nothing_leaves_the_markers_as_they_were(collection, monkeypatch):
    from manager.cleanup import delete_run_output

    run = _trained_looking_run(collection)
    run.paths.failed_marker.write_text('{"reason": "exit_status"}')  # both markers, as a hand-made mix
    os.utime(run.paths.done_marker, (1_600_000_000, 1_600_000_000))  # what "trained before the data changed" reads
    output = run.paths.lfads_output
    before = sorted(output.rglob("*"))
    _failing_unlink(monkeypatch, lambda path: output in path.parents)
    with pytest.raises(ManagerError, match=rf"^{output / 'checkpoint'}: cannot delete \(Read-only file system\);"
                                           " nothing was deleted; fix its permissions"):
        delete_run_output(run.path)
    assert sorted(output.rglob("*")) == before
    assert run.paths.done_marker.read_text() == '{"finished": "yes"}'
    assert run.paths.done_marker.stat().st_mtime == 1_600_000_000
    assert run.paths.failed_marker.read_text() == '{"reason": "exit_status"}'
    assert run.paths.out_log.read_text() == "log"
    assert sorted(p.name for p in run.paths.runtime_dir.iterdir() if "delete" in p.name) == []


def test_a_delete_output_killed_half_way_leaves_no_resumable_model_and_the_next_one_finishes(collection, monkeypatch):
    from manager.cleanup import delete_run_output
    from runqueue.runstate import RunState, marker_state

    run = _trained_looking_run(collection)
    run.paths.failed_marker.write_text("{}")

    class Killed(BaseException):  # nothing of delete-output's own runs after a SIGKILL
        pass

    def killed_at_the_model(path):
        if path.name == "lfads_vae.ckpt-10.index":
            raise Killed
        return False

    _failing_unlink(monkeypatch, killed_at_the_model)
    with pytest.raises(Killed):
        delete_run_output(run.path)
    monkeypatch.undo()
    # Not done; pending, and what a queue would train is a fresh model: the checkpoint list went first.
    assert not run.paths.done_marker.exists() and marker_state(run.paths) == RunState.PENDING
    assert (run.paths.lfads_output / "lfads_vae.ckpt-10.index").exists() and not (run.paths.lfads_output / "checkpoint").exists()
    # What is left is neither the old model nor nothing: queues hold the run back until delete-output finishes.
    queue = subprocess.run([sys.executable, "-m", "runqueue", "run", str(run.path), "--cpu-slots", "1"], capture_output=True,
                           text=True, timeout=120, env={**os.environ, "RUNQUEUE_CLAIMS_DIR": str(collection.root / "claims")})
    says = f"lfads-manager delete-output was interrupted while deleting {run.paths.lfads_output}"
    assert queue.returncode == 1 and says in queue.stdout and f"delete-output {run.path}` again" in queue.stdout, queue.stdout
    assert run.paths.out_log.read_text() == "log"  # never started
    assert [p.name for p in delete_run_output(run.path)] == ["lfadsOutput", "lfads.out"]
    assert marker_state(run.paths) == RunState.PENDING
    assert sorted(p.name for p in run.paths.runtime_dir.iterdir() if "delete" in p.name) == []  # parked ones too


def test_delete_output_refuses_an_output_folder_an_lfads_process_is_writing(collection):
    """`lfads_train.sh` run by hand holds no run lock, but lfads holds a flock on lfadsOutput."""
    from manager.cleanup import delete_run_output

    run = _trained_looking_run(collection)
    code = ("import sys, time\nfrom pathlib import Path\nfrom lfads.files.folder_lock import hold_output_folder\n"
            "with hold_output_folder(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run.paths.lfads_output)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(ManagerError, match=rf"^{run.paths.lfads_output}: an lfads process is writing it .*"
                                               "nothing was deleted; wait for it to end or stop it"):
            delete_run_output(run.path)
        assert (run.paths.lfads_output / "checkpoint").exists() and run.paths.done_marker.exists()
        assert not run.paths.failed_marker.exists()
    finally:
        holder.kill()
        holder.wait()
    delete_run_output(run.path)  # the lock went with the process
    assert not run.paths.lfads_output.exists()


def test_params_are_values_a_later_change_does_not_reach_the_collection(collection):
    import copy
    import pickle

    par = RunParams(c_batch_size=4)
    for factors in (2, 4, 6, 8):
        par.c_factors_dim = factors  # MATLAB's value semantics: each add keeps what it was given
        collection.add_params(par)
    assert sorted(p.c_factors_dim for p in collection.params) == [2, 3, 4, 6, 8]  # 3: the fixture's own
    for clone in (copy.copy(par), copy.deepcopy(par), pickle.loads(pickle.dumps(par))):
        assert clone == par and clone.param_hash == par.param_hash


def test_delete_output_takes_the_reports_plots_and_r2_but_not_the_users_files(collection):
    from manager.cleanup import delete_run_output

    collection.prepare()
    run = collection.runs[0]
    run.paths.lfads_output.mkdir()
    report = run.path / "report"
    report.mkdir()
    for name in ("training_curves.png", "rates_vs_truth_a.png", "r2.txt", "my_notes.txt"):
        (report / name).write_text("x")
    delete_run_output(run.path)
    assert sorted(p.name for p in report.iterdir()) == ["my_notes.txt"]
    (report / "my_notes.txt").unlink()
    (report / "r2.txt").write_text("x")
    run.paths.lfads_output.mkdir()
    delete_run_output(run.path)
    assert not report.exists()  # nothing of the user's in it: the folder goes too


def test_run_specs_take_numpy_masks_and_indices(tmp_path):
    import numpy as np

    (tmp_path / "datasets").mkdir()
    for seed, name in enumerate(("ds001", "ds002", "ds003")):
        write_npz_dataset(tmp_path / "datasets" / f"{name}.npz", seed=seed)
    datasets = small_collection(tmp_path, ["ds001.npz", "ds002.npz", "ds003.npz"]).dataset_collection
    mask = np.array([True, False, True])
    for selection in (mask, np.flatnonzero(mask), [np.int64(0), np.int64(2)], list(mask), np.int64(0)):
        expected = ["ds001"] if isinstance(selection, np.integer) else ["ds001", "ds003"]
        assert RunSpec("x", datasets, selection).dataset_names == expected
    with pytest.raises(ManagerError, match=r"dataset index 5 out of range 0\.\.2"):
        RunSpec("x", datasets, np.array([5]))


@pytest.mark.parametrize("index", [-1, 2, 99])
def test_find_runs_refuses_an_index_out_of_range_instead_of_wrapping(collection, index):
    with pytest.raises(ManagerError, match=f"no run spec at index {index}; use 0 to 1, or a name"):
        collection.find_runs(spec=index)
    with pytest.raises(ManagerError, match=f"no param set at index {index}; use 0 to 0, or a name"):
        collection.find_runs(params=index)


@pytest.mark.parametrize("command", ["prepare", "delete-output"])
def test_ctrl_c_ends_a_command_with_one_line_saying_what_to_do(tmp_path, monkeypatch, capsys, command):
    import manager.cleanup
    import manager.experiment
    from manager.cli import main

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(manager.experiment, "load_experiment", interrupted)
    monkeypatch.setattr(manager.cleanup, "delete_run_output", interrupted)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "lfads_train.sh").write_text("")  # a run folder: delete-output checks that before it starts
    argv = ["prepare", str(tmp_path / "e.toml")] if command == "prepare" else ["delete-output", "--yes", str(tmp_path / "run")]
    assert main(argv) == 130
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("lfads-manager: interrupted; ") and f"run {command}" in line, line


def test_a_generated_file_edited_since_prepare_wrote_it_is_kept_as_orig(tmp_path):
    (tmp_path / "datasets").mkdir()
    write_npz_dataset(tmp_path / "datasets" / "a.npz")
    small_collection(tmp_path, ["a.npz"]).prepare()
    collection = small_collection(tmp_path, ["a.npz"])
    (run,) = collection.runs
    script, summary = run.path / "lfads_train.sh", collection.path / "summary.txt"
    generated = {path: path.read_text() for path in (script, summary)}
    script.write_text(generated[script].replace("--kind=train", "--kind=train --my_own_flag=1"))
    summary.write_text(generated[summary] + "my notes on this sweep\n")
    edited = {path: path.read_text() for path in (script, summary)}

    notes = collection.prepare(progress=lambda _line: None).notes
    for path in (script, summary):
        assert path.read_text() == generated[path]  # prepare's own again, so the tree is as the collection says
        assert path.with_name(path.name + ".orig").read_text() == edited[path]  # and the edit is not lost
        assert f"note: {path} was edited since lfads-manager prepare wrote it; it is kept as {path.name}.orig and replaced by the generated one" in notes
    assert small_collection(tmp_path, ["a.npz"]).prepare(progress=lambda _line: None).notes == []  # unedited: quiet
    assert not script.with_name("lfads_train.sh.orig.1").exists()


def test_a_generated_file_replaced_by_a_symlink_keeps_the_link_as_orig(tmp_path):
    (tmp_path / "datasets").mkdir()
    write_npz_dataset(tmp_path / "datasets" / "a.npz")
    small_collection(tmp_path, ["a.npz"]).prepare()
    collection = small_collection(tmp_path, ["a.npz"])
    (run,) = collection.runs
    script = run.path / "lfads_train.sh"
    generated = script.read_text()
    mine = tmp_path / "my_train.sh"
    mine.write_text("#!/bin/bash\necho my own training\n")
    script.unlink()
    script.symlink_to(mine)

    notes = collection.prepare(progress=lambda _line: None).notes
    assert not script.is_symlink() and script.read_text() == generated
    aside = script.with_name("lfads_train.sh.orig")
    assert aside.is_symlink() and aside.resolve() == mine and mine.read_text().startswith("#!/bin/bash")
    assert f"note: {script} was a symlink (to {mine}); it is kept as lfads_train.sh.orig and replaced by the generated file" in notes


def test_load_info_reads_subject_and_datenum_as_mat_and_npz_files_hold_them(tmp_path):
    folder = tmp_path / "datasets"
    folder.mkdir()
    write_npz_dataset(folder / "text_date.npz", subject="monkeyA", datetime="2020-01-01")  # 0-d text arrays
    write_npz_dataset(folder / "plain.npz")
    with np.load(folder / "plain.npz") as archive:
        scipy.io.savemat(folder / "matlab.mat", {**archive, "subject": "monkeyB", "datetime": 738000.5})
    datasets = DatasetCollection(folder)
    datasets.add_files(["text_date.npz", "plain.npz", "matlab.mat"])
    datasets.filter_having_minimum_trials(5)  # reads every file's info; a text datetime is no error
    assert [(d.name, d.subject, d.datenum, d.n_trials) for d in datasets] == [
        ("text_date", "monkeyA", None, 40), ("plain", "", None, 40), ("matlab", "monkeyB", 738000.5, 40)]

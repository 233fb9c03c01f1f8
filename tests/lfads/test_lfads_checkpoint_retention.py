"""--max_ckpt_to_keep / --max_ckpt_to_keep_lve: old checkpoint files are deleted, not only forgotten."""

from __future__ import annotations

from pathlib import Path

import pytest

tf = pytest.importorskip("tensorflow")

from lfads.files import checkpoints  # noqa: E402


@pytest.mark.parametrize("lve", [False, True])
def test_checkpoints_past_max_to_keep_are_deleted_from_disk(tmp_path: Path, lve: bool) -> None:
    variables = {"LFADS/w": tf.Variable([1.0, 2.0])}
    for step in (4, 8, 12, 16):
        checkpoints.save(tmp_path, variables, "lfads_vae", step, lve, max_to_keep=2)
    state = checkpoints.read_state(tmp_path / (checkpoints.LVE_STATE if lve else checkpoints.PERIODIC_STATE))
    names = [checkpoints.prefix_name("lfads_vae", lve, step) for step in (12, 16)]
    assert state is not None and list(state.all_paths) == names
    left = sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("lfads_vae"))
    assert left == sorted(name + suffix for name in names for suffix in (checkpoints.DATA_SUFFIX, checkpoints.INDEX_SUFFIX))


def test_a_crash_while_saving_never_leaves_the_state_naming_a_deleted_checkpoint(tmp_path: Path, monkeypatch) -> None:
    """The state file moves to the new bundle before the old one is pruned (max_to_keep=1 used to
    delete the only listed checkpoint first, so a crash in between left nothing to restore)."""
    variables = {"LFADS/w": tf.Variable([1.0, 2.0])}
    checkpoints.save(tmp_path, variables, "lfads_vae", 10, False, max_to_keep=1)

    def crash(*_args: object) -> None:
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(checkpoints, "write_state", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(tmp_path, variables, "lfads_vae", 20, False, max_to_keep=1)
    prefix = checkpoints.latest_checkpoint(tmp_path, checkpoints.PERIODIC_STATE)  # raises if it dangles
    assert prefix is not None and prefix.name == "lfads_vae.ckpt-10"


def test_a_copied_folder_whose_list_holds_absolute_paths_uses_its_own_bundles_and_never_prunes_the_original(
        tmp_path: Path) -> None:
    """TF1 wrote absolute paths into `checkpoint`: a copy of such a folder lists the original's bundles."""
    import shutil

    original, copy = tmp_path / "orig" / "lfadsOutput", tmp_path / "copy" / "lfadsOutput"
    variables = {"LFADS/w": tf.Variable([1.0, 2.0])}
    checkpoints.save(original, variables, "lfads_vae", 12, False, max_to_keep=5)
    checkpoints.write_state(original / checkpoints.PERIODIC_STATE,
                            checkpoints.CheckpointState(str(original / "lfads_vae.ckpt-12"), [str(original / "lfads_vae.ckpt-12")]))
    shutil.copytree(original, copy)
    assert checkpoints.latest_checkpoint(copy, checkpoints.PERIODIC_STATE) == copy / "lfads_vae.ckpt-12"
    checkpoints.save(copy, variables, "lfads_vae", 16, False, max_to_keep=1)
    assert (original / "lfads_vae.ckpt-12.index").exists()  # the original run keeps its checkpoint
    assert not (copy / "lfads_vae.ckpt-12.index").exists()  # the copy's own old bundle was pruned
    state = checkpoints.read_state(copy / checkpoints.PERIODIC_STATE)
    assert state is not None and state.all_paths == ["lfads_vae.ckpt-16"]

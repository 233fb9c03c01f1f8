"""A custom loader's code is part of the export stamp: editing it re-exports (manager.codeprint)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
from manager_test_helpers import small_collection, write_npz_dataset

from manager import Dataset, DatasetCollection, RunCollection, RunParams, RunSpec
from manager import datasets as dataset_module
from manager.codeprint import RULES, code_fingerprint
from manager.export_history import EXPORT_STAMP_FILE

KEEP = 20  # bins the loader below keeps; a test changes it as a lab would edit its script


def _trimmed(path):
    with np.load(path) as archive:
        fields = {key: archive[key] for key in archive.files}
    return {**fields, "counts": fields["counts"][:, :, :KEEP], "truth": fields["truth"][:, :, :KEEP],
            "timeVecMs": fields["timeVecMs"][:KEEP]}


def _bins(collection: RunCollection, name: str = "x") -> int:
    (h5,) = collection.path.glob(f"data_*/single_{name}/lfads_{name}.h5")
    with h5py.File(h5, "r") as handle:
        return int(handle["train_data"].shape[1])


def _from_source(source: str, name: str = "load") -> object:
    """A function compiled from `source`, as if its file had been edited (same module and name)."""
    namespace: dict[str, object] = {"np": np, "__name__": __name__}
    exec(compile(textwrap.dedent(source), "loader.py", "exec"), namespace)
    return namespace[name]


def _prepare_with(dataset_class: type[Dataset], tmp_path: Path) -> RunCollection:
    """tmp_path/datasets/x.npz (20 bins of 1 ms, written the first time), read by `dataset_class`."""
    folder = tmp_path / "datasets"
    if not folder.exists():
        folder.mkdir()
        write_npz_dataset(folder / "x.npz", n_time=20)
    datasets = DatasetCollection(folder)
    dataset_class(datasets, "x.npz")
    collection = RunCollection(tmp_path / "runs", "sub", datasets)
    collection.add_params(RunParams(c_batch_size=4, c_factors_dim=3))
    collection.add_run_spec(RunSpec("single_x", datasets, ["x"]))
    collection.prepare()
    return collection


def _prepared_stamp(tmp_path: Path) -> tuple[Path, dict]:
    """x.npz (20 bins) prepared by the small collection: its export stamp's path and contents."""
    write_npz_dataset((tmp_path / "datasets").mkdir() or tmp_path / "datasets" / "x.npz", n_time=20)
    collection = small_collection(tmp_path, ["x.npz"])
    collection.prepare()
    (stamp_path,) = collection.path.glob(f"data_*/single_x/{EXPORT_STAMP_FILE}")
    return stamp_path, json.loads(stamp_path.read_text())


def test_a_changed_value_the_loader_reads_re_exports(tmp_path, monkeypatch):
    write_npz_dataset((tmp_path / "datasets").mkdir() or tmp_path / "datasets" / "x.npz", n_time=20)
    monkeypatch.setitem(dataset_module.LOADERS, ".npz", _trimmed)
    collection = small_collection(tmp_path, ["x.npz"])
    collection.prepare()
    assert _bins(collection) == 10  # 20 bins of 1 ms at spikeBinMs=2
    monkeypatch.setattr(sys.modules[__name__], "KEEP", 12)
    report = small_collection(tmp_path, ["x.npz"]).prepare()
    assert report.exported and _bins(collection) == 6
    assert not small_collection(tmp_path, ["x.npz"]).prepare().exported  # and then it is current


def test_an_edited_loader_function_re_exports_but_a_moved_one_does_not(tmp_path, monkeypatch):
    write_npz_dataset((tmp_path / "datasets").mkdir() or tmp_path / "datasets" / "x.npz", n_time=20)
    body = """
        def load(path):
            with np.load(path) as archive:
                fields = {key: archive[key] for key in archive.files}
            return {**fields, "counts": fields["counts"] * FACTOR}
    """
    monkeypatch.setitem(dataset_module.LOADERS, ".npz", _from_source("FACTOR = 1\n" + textwrap.dedent(body)))
    assert small_collection(tmp_path, ["x.npz"]).prepare().exported
    moved = _from_source("FACTOR = 1\n\n\n# a comment above it\n" + textwrap.dedent(body))
    monkeypatch.setitem(dataset_module.LOADERS, ".npz", moved)
    assert not small_collection(tmp_path, ["x.npz"]).prepare().exported  # line numbers are not its code
    edited = _from_source("FACTOR = 1\n" + textwrap.dedent(body).replace("* FACTOR", "* FACTOR * 2"))
    monkeypatch.setitem(dataset_module.LOADERS, ".npz", edited)
    assert small_collection(tmp_path, ["x.npz"]).prepare().exported


def test_an_edited_dataset_subclass_re_exports(tmp_path):
    class Window(Dataset):
        def load_data(self):
            fields = dict(super().load_data())
            return {**fields, "counts": fields["counts"][:, :, :16], "truth": None, "timeVecMs": fields["timeVecMs"][:16]}

    first = _prepare_with(Window, tmp_path)
    assert _bins(first) == 8

    class Window(Dataset):  # type: ignore[no-redef]  # the same class, edited
        def load_data(self):
            fields = dict(super().load_data())
            return {**fields, "counts": fields["counts"][:, :, :8], "truth": None, "timeVecMs": fields["timeVecMs"][:8]}

    assert _bins(_prepare_with(Window, tmp_path)) == 4


def test_a_dataset_subclass_that_gains_code_re_exports(tmp_path):
    class Session(Dataset):
        """No code of its own yet: its fingerprint is empty."""

    assert _bins(_prepare_with(Session, tmp_path)) == 10

    class Session(Dataset):  # type: ignore[no-redef]  # the same class, given a loader
        def load_data(self):
            fields = dict(super().load_data())
            return {**fields, "counts": fields["counts"][:, :, :8], "truth": None, "timeVecMs": fields["timeVecMs"][:8]}

    assert _bins(_prepare_with(Session, tmp_path)) == 4


def test_a_fingerprint_made_under_another_python_or_rules_counts_as_current_and_is_remade(tmp_path, monkeypatch):
    # Bytecode differs between Python versions: a cluster and a workstation on two versions must not
    # re-export in turn; the stamp takes this Python's fingerprint, and the next edit is seen.
    monkeypatch.setitem(dataset_module.LOADERS, ".npz", _trimmed)
    stamp_path, stamp = _prepared_stamp(tmp_path)
    ours = stamp["source"]["datasets"][0]["loader_code"]
    assert ours.startswith(f"py{sys.version_info.major}.{sys.version_info.minor}-r{RULES}:")
    for other in ("py2.7:0123456789abcdef/",  # another Python
                  f"py{sys.version_info.major}.{sys.version_info.minor}:0123456789abcdef/"):  # the rules before RULES 2
        stamp["source"]["datasets"][0]["loader_code"] = other
        stamp_path.write_text(json.dumps(stamp))
        assert not small_collection(tmp_path, ["x.npz"]).prepare().exported
        assert json.loads(stamp_path.read_text())["source"]["datasets"][0]["loader_code"] == ours
    monkeypatch.setattr(sys.modules[__name__], "KEEP", 12)
    assert small_collection(tmp_path, ["x.npz"]).prepare().exported


def test_an_export_of_an_older_format_is_made_again(tmp_path):
    stamp_path, stamp = _prepared_stamp(tmp_path)
    stamp["source"]["format"] = 1  # before scalar bin widths were read
    stamp_path.write_text(json.dumps(stamp))
    assert small_collection(tmp_path, ["x.npz"]).prepare().exported


def test_a_stamp_from_before_the_fingerprint_counts_as_current_and_then_gets_one(tmp_path, monkeypatch):
    monkeypatch.setitem(dataset_module.LOADERS, ".npz", _trimmed)
    stamp_path, stamp = _prepared_stamp(tmp_path)
    fingerprint = stamp["source"]["datasets"][0].pop("loader_code")
    assert fingerprint
    stamp_path.write_text(json.dumps(stamp))  # as an older version wrote it
    assert not small_collection(tmp_path, ["x.npz"]).prepare().exported
    assert json.loads(stamp_path.read_text())["source"]["datasets"][0]["loader_code"] == fingerprint
    monkeypatch.setattr(sys.modules[__name__], "KEEP", 12)  # from now on an edit is noticed
    assert small_collection(tmp_path, ["x.npz"]).prepare().exported


def test_built_in_loaders_have_no_fingerprint_and_helpers_of_the_module_count():
    assert code_fingerprint(len) == ""
    helper = _from_source("""
        def helper(x):
            return x + 1
        def load(path):
            return helper(path)
    """)
    changed = _from_source("""
        def helper(x):
            return x + 2
        def load(path):
            return helper(path)
    """)
    assert code_fingerprint(helper) and code_fingerprint(helper) != code_fingerprint(changed)


def test_the_fingerprint_is_the_same_in_every_process(tmp_path):
    # A set literal compiles to a frozenset constant, whose order follows the per-process string hash.
    script = tmp_path / "loader.py"
    script.write_text("KEYS = frozenset({'alpha', 'beta', 'gamma', 'delta'})\n"
                      "def load(path):\n    return {k: 1 for k in ('counts', 'timeMs', 'x', 'y') if k in {'counts', 'timeMs', 'x'}}\n"
                      "import sys\nsys.path.insert(0, sys.argv[1])\nfrom manager.codeprint import code_fingerprint\n"
                      "print(code_fingerprint(load))\n")
    root = str(Path(__file__).resolve().parents[2])
    prints = {subprocess.run([sys.executable, str(script), root], env={**os.environ, "PYTHONHASHSEED": seed},
                             capture_output=True, text=True, check=True).stdout for seed in ("1", "2", "3")}
    assert len(prints) == 1 and prints.pop().strip()


def test_default_arguments_and_class_settings_count():
    def load(path, keep=20):
        return keep

    def load_fewer(path, keep=10):
        return keep

    load_fewer.__name__ = load_fewer.__qualname__ = "load"
    assert code_fingerprint(load) != code_fingerprint(load_fewer)

    def window(bins: int) -> type[Dataset]:
        class Window(Dataset):
            BINS = bins

        return Window

    assert code_fingerprint(window(40), stop_at=Dataset) == code_fingerprint(window(40), stop_at=Dataset)
    assert code_fingerprint(window(40), stop_at=Dataset) != code_fingerprint(window(20), stop_at=Dataset)


def _lab_package(folder: Path, factor: int, window: int) -> None:
    """The lab's own code outside site-packages: a loader and the helpers it imports."""
    package = folder / "labcode"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "preprocess.py").write_text(f"WINDOW = {window}\n\ndef smooth(x):\n    return x * {factor}\n")
    (package / "loaders.py").write_text(
        "import json\nimport numpy as np\nfrom labcode import preprocess\nfrom labcode.preprocess import smooth\n\n"
        "def load(path):\n    return smooth(np.mean(path)) + preprocess.WINDOW + len(json.dumps(path))\n")


def _fresh_loader(folder: Path, factor: int, window: int):
    import importlib

    _lab_package(folder, factor, window)
    for name in [name for name in sys.modules if name == "labcode" or name.startswith("labcode.")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    return importlib.import_module("labcode.loaders").load


def test_helpers_in_the_labs_other_modules_count_installed_libraries_do_not(tmp_path, monkeypatch):
    from manager.codeprint import _labs_own

    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        first = code_fingerprint(_fresh_loader(tmp_path, factor=1, window=3))
        assert code_fingerprint(_fresh_loader(tmp_path, factor=1, window=3)) == first  # the same code: no re-export
        assert code_fingerprint(_fresh_loader(tmp_path, factor=2, window=3)) != first  # `from … import smooth` edited
        assert code_fingerprint(_fresh_loader(tmp_path, factor=1, window=5)) != first  # `preprocess.WINDOW` edited
        import labcode.preprocess

        assert _labs_own(labcode.preprocess.smooth) and _labs_own(labcode.preprocess)
    finally:
        for name in [name for name in sys.modules if name == "labcode" or name.startswith("labcode.")]:
            del sys.modules[name]
    # Installed code comes with its version, and this package's with its EXPORT_FORMAT.
    assert not _labs_own(np.mean) and not _labs_own(json) and not _labs_own(json.dumps)
    assert not _labs_own(code_fingerprint) and not _labs_own(Dataset)

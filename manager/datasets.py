"""Datasets (one file per session) and the collection (folder) that holds them."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from manager.errors import ManagerError, describe
from manager.matfile import read_mat
from manager.sequence import BIN_WIDTH_KEYS, SequenceData, sequence_from_fields

if TYPE_CHECKING:
    from manager.run import Run

Loader = Callable[[Path], Mapping[str, Any]]
EXPORT_MODE, ALIGNMENT_MODE = "export", "alignment"


def _read_npz(path: Path) -> dict[str, Any]:
    # np.load takes a non-zip file for a pickle and says so, which misleads about a truncated copy.
    if not zipfile.is_zipfile(path):
        raise ManagerError(path, "not a complete .npz file (no zip archive in it)", "copy it again, or save it with numpy.savez")
    with np.load(path, allow_pickle=False) as archive:
        fields = {}
        for key in archive.files:
            try:
                fields[key] = archive[key]
            except ValueError as error:
                if "allow_pickle" not in str(error):
                    raise
                # Python objects (dtype=object) load only by unpickling, which can run code: not done.
                raise ManagerError(path, f"{key!r} holds Python objects (dtype=object), which are not loaded (unpickling"
                                   " can run code)", f"save it as plain numbers or text, e.g. np.array(labels) for {key}"
                                   " labels") from None
        return fields


def _read_h5(path: Path) -> dict[str, Any]:
    with h5py.File(path, "r") as handle:
        fields = {key: _h5_value(node) for key, node in handle.items() if isinstance(node, h5py.Dataset)}
        # A bin width is often kept as an attribute of the file (f.attrs["binWidthMs"] = 10).
        fields.update({key: handle.attrs[key] for key in BIN_WIDTH_KEYS if key in handle.attrs and key not in fields})
        return fields


def _h5_value(node: h5py.Dataset) -> Any:
    """The dataset's value; text (variable- or fixed-length strings) as str, not bytes, so that
    condition labels match those of a .mat or .npz file."""
    if h5py.check_string_dtype(node.dtype) is None:
        return node[()]
    value = node.asstr(errors="replace")[()]
    return np.asarray(value, dtype=str) if isinstance(value, np.ndarray) else value


# Suffix -> loader. `register_loader` adds formats; a Dataset may also carry its own loader.
LOADERS: dict[str, Loader] = {".mat": read_mat, ".npz": _read_npz, ".h5": _read_h5, ".hdf5": _read_h5}
_BUILT_IN_LOADERS = dict(LOADERS)


def registered_loader(dataset_path: Path) -> Loader | None:
    """The loader register_loader() installed for this file's suffix, None for a built-in one: it
    belongs in an export's stamp (another loader may read other data from the same file)."""
    suffix = dataset_path.suffix.lower()
    chosen = LOADERS.get(suffix)
    return None if chosen is _BUILT_IN_LOADERS.get(suffix) else chosen


def register_loader(suffix: str, loader: Loader) -> None:
    """Teach every Dataset to read files ending in `suffix` (e.g. ".nwb"): `loader(path) -> {name: array}`.

    The mapping uses the field names of `manager.sequence` (counts, timeVecMs, conditionId, truth, …).
    """
    LOADERS[suffix.lower() if suffix.startswith(".") else "." + suffix.lower()] = loader


def dataset_name(rel_path: str | Path) -> str:
    """The name a file gives its dataset (lfads_<name>.h5, single_<name>): the stem, ',' -> '_'."""
    return Path(rel_path).stem.replace(",", "_")


def check_unique_names(rel_paths: Sequence[str | Path]) -> None:
    """Refuse a list of files in which two give the same dataset name: one would silently replace
    the other (ManagerError without a path; callers name the file that holds the list)."""
    seen: dict[str, Path] = {}
    for rel_path in map(Path, rel_paths):
        name = dataset_name(rel_path)
        if name in seen:
            first = seen[name]
            if first == rel_path:
                raise ManagerError(None, f"{rel_path} is listed twice", "list each dataset file once")
            raise ManagerError(None, f"{first} and {rel_path} both give dataset name {name!r}",
                               "rename one of the files or list only one")
        seen[name] = rel_path


@dataclass(frozen=True)
class SourceStamp:
    """Identifies a dataset file's content cheaply (for deciding whether to export again)."""

    path: str
    size: int
    mtime_ns: int


class Dataset:
    """One session's data file. Subclass and override `load_counts` for anything custom
    (the original's `generateCountsForDataset` hook; `uses_different_data_for_alignment` is the
    original's hook of that name)."""

    def __init__(self, collection: DatasetCollection, rel_path: str | Path, loader: Loader | None = None) -> None:
        self.collection = collection
        self.rel_path = Path(rel_path)
        self.loader = loader
        self.name = dataset_name(self.rel_path)
        self.subject: str = ""
        self.datenum: float | None = None
        self.n_channels: int | None = None
        self.n_trials: int | None = None
        collection.add(self)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, {str(self.path)!r})"

    @property
    def path(self) -> Path:
        return self.collection.path / self.rel_path

    @property
    def single_run_name(self) -> str:
        return f"single_{self.name}"

    def source_stamp(self) -> SourceStamp:
        try:
            stat = self.path.stat()
        except FileNotFoundError as error:
            raise ManagerError(self.path, "dataset file not found", "check the dataset path or collection folder") from error
        return SourceStamp(str(self.path.resolve()), stat.st_size, stat.st_mtime_ns)

    def load_data(self) -> Mapping[str, Any]:
        """The file's variables, through `loader` or the loader registered for its suffix."""
        loader = self.loader or LOADERS.get(self.path.suffix.lower())
        if loader is None:
            known = ", ".join(sorted(LOADERS))
            raise ManagerError(self.path, f"no loader for {self.path.suffix!r} files (known: {known})",
                               "convert the file or call manager.register_loader(suffix, function)")
        self.source_stamp()
        try:
            loaded = loader(self.path)
        except ManagerError:
            raise
        except Exception as error:  # a bad file must name itself, not end in a library's traceback
            raise ManagerError(self.path, f"cannot read the file ({describe(error)})",
                               "copy it again if it is truncated, or re-save it (see docs/manager.md for the formats)") from error
        if not isinstance(loaded, Mapping):  # a user's loader: its mistake must not surface as a TypeError far away
            name = getattr(loader, "__qualname__", type(loader).__name__)
            raise ManagerError(self.path, f"loader {name} returned {type(loaded).__name__}, not the file's variables",
                               "make the loader return a dict of name -> array (counts, timeVecMs, ...)")
        return loaded

    def load_counts(self, run: Run | None = None, mode: str = EXPORT_MODE) -> SequenceData:
        """Counts, time and truth for export and alignment; checked for bad values.

        The original's `generateCountsForDataset(run, dataset, mode)`: an override may read the run's
        parameters (`run.params`, a RunParams subclass's own properties included: they are in the data
        hash, so each `data_<hash>` folder gets an export of its own) and `mode`, "export" or
        "alignment" (asked for only when `uses_different_data_for_alignment(run)` is true). An override
        without these parameters, `load_counts(self)`, is called without them."""
        return sequence_from_fields(self.load_data(), self.path)

    def uses_different_data_for_alignment(self, run: Run) -> bool:
        """True: the alignment matrices are computed from `load_counts(run, "alignment")`."""
        return False

    def load_info(self) -> None:
        """Fill subject, datenum, n_channels and n_trials from the file (LorenzExperiment.Dataset.loadInfo)."""
        fields = self.load_data()
        data = sequence_from_fields(fields, self.path)
        self.n_trials, self.n_channels = data.n_trials, data.n_channels
        self.subject = _text(fields.get("subject")) or ""
        self.datenum = _number(fields.get("datetime"))


def _text(value: Any) -> str | None:
    """A string, also as .npz and .mat files hold one (a 0-d or one-element array of text)."""
    if isinstance(value, str):
        return value
    array = np.asarray(value) if isinstance(value, np.ndarray | bytes) else None
    if array is None or array.size != 1 or array.dtype.kind not in "US":
        return None
    item = array.ravel()[0]
    return item.decode(errors="replace") if isinstance(item, bytes) else str(item)


def _number(value: Any) -> float | None:
    """A MATLAB datenum; None for anything else (a datetime saved as text is information, not an error)."""
    if value is None:
        return None
    try:
        array = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return None
    return float(array[0]) if array.size else None


@dataclass
class DatasetCollection:
    """A folder of datasets, in the order they were added (that order is the dataset index)."""

    path: Path
    name: str = ""
    datasets: list[Dataset] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.path = Path(os.path.abspath(Path(self.path).expanduser()))
        self.name = self.name or self.path.name

    def add(self, dataset: Dataset) -> None:
        """Add `dataset`, replacing one with the same name (as the original constructor does)."""
        for index, existing in enumerate(self.datasets):
            if existing.name == dataset.name:
                self.datasets[index] = dataset
                return
        self.datasets.append(dataset)

    def add_files(self, rel_paths: Iterable[str | Path], loader: Loader | None = None) -> list[Dataset]:
        """One Dataset per file; two files of the list giving one dataset name are refused (`add`
        replaces an existing dataset of that name, which would silently drop one of them)."""
        rel_paths = list(rel_paths)
        try:
            check_unique_names(rel_paths)
        except ManagerError as error:
            raise ManagerError(self.path, error.problem, error.fix) from None
        return [Dataset(self, rel_path, loader) for rel_path in rel_paths]

    def __iter__(self) -> Iterator[Dataset]:
        return iter(self.datasets)

    def __len__(self) -> int:
        return len(self.datasets)

    def __getitem__(self, index: int) -> Dataset:
        return self.datasets[index]

    @property
    def names(self) -> list[str]:
        return [dataset.name for dataset in self.datasets]

    def index_of(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise ManagerError(self.path, f"unknown dataset {name!r} (known: {', '.join(self.names) or 'none'})",
                               "use one of the known dataset names") from None

    def load_info(self) -> None:
        for dataset in self.datasets:
            dataset.load_info()

    def filter_datasets(self, mask: Sequence[bool]) -> None:
        if len(mask) != len(self.datasets):
            raise ValueError(f"mask has {len(mask)} entries for {len(self.datasets)} datasets")
        self.datasets = [dataset for dataset, keep in zip(self.datasets, mask, strict=True) if keep]

    def filter_having_minimum_trials(self, n_trials: int) -> None:
        """Keep datasets with at least `n_trials` trials (loads their info if needed)."""
        for dataset in self.datasets:
            if dataset.n_trials is None:
                dataset.load_info()
        self.datasets = [d for d in self.datasets if (d.n_trials or 0) >= n_trials]

    def filter_having_minimum_trials_for_batch_size(self, params: Any) -> None:
        """Keep datasets with enough trials that the validation split fills one batch."""
        self.filter_having_minimum_trials(minimum_trials(params))


def minimum_trials(params: Any) -> int:
    """c_batch_size * (trainToTestRatio + 1): the original's rule for a usable dataset."""
    return int(params.c_batch_size) * (int(params.trainToTestRatio) + 1)

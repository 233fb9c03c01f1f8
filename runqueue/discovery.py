"""Finding run folders (DESIGN.md §3: a directory holding lfads_train.sh, at any depth under a root).

One `scandir` per directory gives both "is this a run?" and its markers, so a pass costs one
listing per folder. Run folders are not descended into (runs do not nest), nor are `lfadsInput`,
`lfadsOutput`, hidden folders, or a collection's `data_<hash>` export folders (`data_` plus six
hash characters beside a `param_<hash>` folder: a collection or run spec the user named `data_...`
is walked like any other). A symlink to a folder
outside the roots is a run when that folder is one (runs kept on another disk, linked into a
collection), and is walked otherwise (a collection kept on a scratch disk); each folder is walked,
and each run found, at most once per pass, so no link can make the scan loop or list a run twice. A
link to a folder inside the roots is not followed: its runs are found under their own path.

Rescans use the mtime trick: a directory whose mtime has not changed still has the same entries
(creating or deleting lfads.done changes its run folder's mtime), so it is not listed again. mtime
is only a hint: a folder changed within the last two seconds is always listed again (coarse
timestamps, NFS attribute caches), and each periodic scan lists one 24th of the other folders
again (a rolling refresh), so every folder is listed afresh within 24 scans (two minutes at the
default interval) without a full pass's cost in any one of them.

With a `DirectoryWatcher` (inotify), a *hinted* scan goes further: a folder the watcher calls clean
is not even stat'ed, so the scan an event triggers costs a walk of memory plus the changed folders.
Periodic scans never rely on inotify (it does not see other NFS clients' changes).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runqueue.fswatch import DirectoryWatcher
from runqueue.layout import DONE_MARKER, FAILED_MARKER, LFADS_INPUT, LFADS_OUTPUT, TRAIN_SCRIPT

_SKIP_NAMES = frozenset({LFADS_INPUT, LFADS_OUTPUT, "__pycache__", "node_modules"})
_EXPORT_FOLDER = re.compile(r"data_[A-Za-z0-9_-]{6}")
_PARAM_FOLDER = re.compile(r"param_[A-Za-z0-9_-]{6}")


_RACY_WINDOW_NS = 2_000_000_000
REFRESH_SHARES = 24  # a periodic scan lists again the folders of one share: all of them within 24 scans


@dataclass(frozen=True)
class FoundRun:
    path: Path
    root: Path  # the root it was found under (for naming)
    has_done: bool
    has_failed: bool


@dataclass
class _Listing:
    identity: tuple[int, int]  # (st_dev, st_ino): the folder, whatever path reached it
    mtime_ns: int
    listed_at_ns: int
    share: int  # which periodic scan (modulo REFRESH_SHARES) lists it again whatever its mtime
    subdirs: tuple[str, ...]
    linked_subdirs: tuple[str, ...]  # symlinks to folders: runs, or walked when outside the roots
    is_run: bool
    has_done: bool
    has_failed: bool
    found: FoundRun | None = None  # reused while the listing is: building Paths is most of a rescan


def _descend_into(name: str) -> bool:
    return not (name.startswith(".") or name in _SKIP_NAMES)


def searched_folder_name(name: str) -> bool:
    """Whether discovery looks into a folder of this name wherever it is (lfads-manager refuses run
    names it would skip): not a hidden or tool folder, nor one shaped like the tree's own data_<hash>
    (skipped next to a param_<hash>) or param_<hash> folders."""
    return not (name.startswith(".") or name in _SKIP_NAMES or _EXPORT_FOLDER.fullmatch(name)
                or _PARAM_FOLDER.fullmatch(name))


SKIPPED_FOLDERS_TEXT = (f"names starting with '.', data_<6 characters>, param_<6 characters>, and"
                        f" {', '.join(sorted(_SKIP_NAMES))}")


def _without_export_folders(subdirs: list[str], names: set[str]) -> list[str]:
    """A manager collection's data_<hash> folders hold exports, never runs: not worth a listing."""
    if not any(_PARAM_FOLDER.fullmatch(name) for name in names):
        return subdirs
    return [name for name in subdirs if not _EXPORT_FOLDER.fullmatch(name)]


@dataclass
class _Pass:
    """One scan's bookkeeping across its roots."""

    seen: set[str]  # paths listed
    found: dict[str, FoundRun]
    trust_watcher: bool
    real_roots: list[str]
    refresh: int | None  # the share a periodic scan lists again; None for full and hinted scans
    walked: set[tuple[int, int]] = field(default_factory=set)  # folders walked into, by identity
    runs_by_identity: dict[tuple[int, int], str] = field(default_factory=dict)  # each run under one path

    def inside_roots(self, directory: str) -> bool:
        """Whether `directory` (a link) leads into a root, or to a folder holding one (a loop upward)."""
        real = os.path.realpath(directory)
        return any(_within(real, root) or _within(root, real) for root in self.real_roots)


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


class RunScanner:
    """Scans roots for runs; remembers listings so that rescans only list what changed."""

    def __init__(self, roots: Sequence[Path], watcher: DirectoryWatcher | None = None) -> None:
        self.roots = [Path(os.path.abspath(root)) for root in roots]
        self.watcher = watcher
        self._listings: dict[str, _Listing] = {}
        self.problems: list[str] = []
        self._scans = 0  # periodic scans so far: the share they refresh
        self._listed = 0  # listings made: spreads new ones over the shares evenly

    def scan(self, *, full: bool = False, hinted: bool = False) -> list[FoundRun]:
        """Every run under the roots, in path order (the order runs are started in).

        `full`: list every folder; `hinted`: trust the listings of folders the watcher calls clean
        (after an inotify event); else a periodic scan, which also lists one share of the folders again."""
        if full:
            self._listings.clear()
        trust_watcher = hinted and not full
        refresh = None
        if not full and not hinted:
            self._scans += 1
            refresh = self._scans % REFRESH_SHARES
        self.problems = []
        seen: set[str] = set()
        found: dict[str, FoundRun] = {}
        walk = _Pass(seen, found, trust_watcher, [os.path.realpath(root) for root in self.roots], refresh)
        for root in self.roots:
            if not root.is_dir():
                self.problems.append(
                    f"{root}: no such folder (yet); its runs are picked up once it is created or mounted" if not os.path.lexists(root)
                    else f"{root}: not a directory (give a runs folder, a collection or a run folder)")
                continue
            self._walk(str(root).rstrip("/") or "/", root, walk)
        # Forget listings of folders that are gone, so a recreated folder is listed afresh.
        for stale in set(self._listings) - seen:
            del self._listings[stale]
            if self.watcher is not None:
                self.watcher.forget(stale)
        return [found[key] for key in sorted(found)]

    def _walk(self, top: str, root: Path, walk: _Pass) -> None:
        stack = [(top, False)]
        while stack:
            directory, via_link = stack.pop()
            if directory in walk.seen:
                continue  # two roots that overlap
            walk.seen.add(directory)
            if via_link and walk.inside_roots(directory):
                continue  # a link back into the tree (or above it): its runs are found under their own path
            listing = self._listing(directory, walk.trust_watcher, walk.refresh)
            if listing is None:
                continue
            if listing.is_run:
                if listing.found is None or listing.found.root is not root:
                    listing.found = FoundRun(Path(directory), root, listing.has_done, listing.has_failed)
                if walk.runs_by_identity.setdefault(listing.identity, directory) == directory:
                    walk.found[directory] = listing.found  # else: reached already under another path
                continue
            if listing.identity in walk.walked:
                continue  # reached again through a link: a loop, or a second link to one folder
            walk.walked.add(listing.identity)
            # Links below the folders (the stack is last in, first out): a run reached both ways
            # keeps its real path.
            stack.extend((f"{directory}/{name}", True) for name in sorted(listing.linked_subdirs, reverse=True))
            stack.extend((f"{directory}/{name}", False) for name in listing.subdirs)

    def _listing(self, directory: str, trust_watcher: bool, refresh: int | None) -> _Listing | None:
        cached = self._listings.get(directory)
        if cached is not None and cached.share == refresh:
            cached = None  # its turn in the rolling refresh: listed again whatever its mtime says
        watcher = self.watcher
        if cached is not None and trust_watcher and watcher is not None and watcher.is_clean(directory):
            return cached
        try:
            info = os.stat(directory)
        except OSError:
            return None
        mtime_ns = info.st_mtime_ns
        if cached is not None and cached.mtime_ns == mtime_ns and cached.listed_at_ns - mtime_ns > _RACY_WINDOW_NS:
            if watcher is not None:
                watcher.listed(directory)  # every event we watch for changes the mtime: none since
            return cached
        if watcher is not None:
            watcher.before_listing(directory)  # events from here on mark it dirty: nothing slips by
        subdirs: list[str] = []
        linked: list[str] = []
        names: set[str] = set()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    names.add(entry.name)
                    if not _descend_into(entry.name):
                        continue
                    # d_type from the listing: no stat per entry, except a link's target.
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(entry.name)
                    elif entry.is_symlink() and entry.is_dir(follow_symlinks=True):
                        linked.append(entry.name)  # runs kept elsewhere, linked into a collection
        except OSError as error:
            self.problems.append(f"{directory}: cannot list ({error.strerror}); skipped")
            return None
        listing = _Listing(
            identity=(info.st_dev, info.st_ino),
            mtime_ns=mtime_ns,
            listed_at_ns=time.time_ns(),
            share=self._listed % REFRESH_SHARES,
            subdirs=tuple(_without_export_folders(subdirs, names)),
            linked_subdirs=tuple(linked),
            is_run=TRAIN_SCRIPT in names,
            has_done=DONE_MARKER in names,
            has_failed=FAILED_MARKER in names,
        )
        self._listings[directory] = listing
        self._listed += 1
        if watcher is not None:
            watcher.listed(directory)
        return listing


def find_runs(roots: list[Path]) -> list[FoundRun]:
    """One full pass (for `status`, `requeue`, `cancel`)."""
    return RunScanner(roots).scan(full=True)

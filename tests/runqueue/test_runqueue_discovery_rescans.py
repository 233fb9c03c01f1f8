"""Discovery rescans: the two-second racy window, and watches below a folder that moved away."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from runqueue_testkit import make_run

from runqueue.discovery import RunScanner
from runqueue.fswatch import DirectoryWatcher


@pytest.fixture
def watcher() -> Iterator[DirectoryWatcher]:
    made = DirectoryWatcher.create()
    if made is None:
        pytest.skip("inotify is not available here")
    yield made
    made.close()


def test_a_folder_changed_within_its_mtime_granularity_is_listed_again(tmp_path: Path) -> None:
    # Coarse timestamps (1 s on some file systems, NFS attribute caches): lfads.done deleted in the
    # same tick as the last listing leaves the folder's mtime unchanged. Within two seconds of that
    # mtime a rescan must list the folder again, not trust the cached listing.
    run = make_run(tmp_path / "runs", "c/param_T/r0", "echo ok\n")
    (run / "lfads.done").write_text("{}")
    scanner = RunScanner([tmp_path / "runs"])
    before = os.stat(run)
    (found,) = scanner.scan()
    assert found.has_done
    (run / "lfads.done").unlink()  # requeued
    os.utime(run, ns=(before.st_atime_ns, before.st_mtime_ns))  # same mtime as when it was listed
    (found,) = scanner.scan()
    assert not found.has_done


def test_watches_below_a_folder_moved_away_are_no_longer_trusted(tmp_path: Path, watcher: DirectoryWatcher) -> None:
    # `mv c c.old; cp -r template c`: the listing cached for c/r belongs to the moved folder.
    for folder in (tmp_path / "c", tmp_path / "c" / "r"):
        folder.mkdir()
        watcher.before_listing(str(folder))
        watcher.listed(str(folder))
    (tmp_path / "c").rename(tmp_path / "c.old")
    assert watcher.read_events() is True
    assert not watcher.is_clean(str(tmp_path / "c"))
    assert not watcher.is_clean(str(tmp_path / "c" / "r"))


def test_a_hinted_scan_after_a_collection_was_swapped_sees_the_new_runs_state(tmp_path: Path, watcher: DirectoryWatcher) -> None:
    runs = tmp_path / "runs"
    old = make_run(runs, "c/param_T/r0", "echo ok\n")
    (old / "lfads.done").write_text("{}")
    scanner = RunScanner([runs], watcher)
    (found,) = scanner.scan()
    assert found.has_done
    (runs / "c").rename(tmp_path / "c.old")
    make_run(runs, "c/param_T/r0", "echo ok\n")  # the same path, a fresh (pending) run
    watcher.read_events()
    (found,) = scanner.scan(hinted=True)
    assert not found.has_done


def test_an_overflowed_event_queue_trusts_no_listing(tmp_path: Path, watcher: DirectoryWatcher) -> None:
    # The kernel drops events past fs.inotify.max_queued_events and says so with IN_Q_OVERFLOW (wd -1).
    import struct

    from runqueue.fswatch import IN_Q_OVERFLOW
    watcher.before_listing(str(tmp_path))
    watcher.listed(str(tmp_path))
    assert watcher.is_clean(str(tmp_path))
    assert watcher._apply(struct.pack("iIII", -1, IN_Q_OVERFLOW, 0, 0)) is True
    assert not watcher.is_clean(str(tmp_path))

"""inotify as a hint: the watcher's clean/dirty bookkeeping, the scanner trusting it only in hinted
scans, and a watching queue that reacts to a requeue at once although it polls once an hour; rescans
within the two-second mtime window, and watches below a folder that moved away."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runqueue_testkit import finish, gpu, make_run, queue_env, start_queue, wait_for, write_gpus

from runqueue.discovery import RunScanner
from runqueue.fswatch import DirectoryWatcher


@pytest.fixture
def watcher() -> Iterator[DirectoryWatcher]:
    made = DirectoryWatcher.create()
    if made is None:
        pytest.skip("inotify is not available here (not Linux, or RUNQUEUE_NO_INOTIFY is set)")
    yield made
    made.close()


def test_only_changes_that_alter_a_listing_make_a_folder_dirty(tmp_path: Path, watcher: DirectoryWatcher) -> None:
    run = tmp_path / "run"
    run.mkdir()
    watcher.before_listing(str(run))
    watcher.listed(str(run))
    assert watcher.is_clean(str(run)) and watcher.watched == 1
    (run / "lfads.out").write_text("a log line\n")  # logs, locks, state files: no news for discovery
    (run / "lfads.lock").touch()
    assert watcher.read_events() is False and watcher.is_clean(str(run))
    (run / "lfads.done").write_text("{}")
    assert watcher.read_events() is True and not watcher.is_clean(str(run))
    watcher.listed(str(run))
    (run / "sub").mkdir()
    assert watcher.read_events() is True and not watcher.is_clean(str(run))
    watcher.listed(str(run))
    (tmp_path / "kept-elsewhere").mkdir()
    (run / "linked").symlink_to(tmp_path / "kept-elsewhere")  # a run folder linked in: no IN_ISDIR on its event
    assert watcher.read_events() is True and not watcher.is_clean(str(run))


def test_a_folder_that_goes_away_is_no_longer_watched_or_trusted(tmp_path: Path, watcher: DirectoryWatcher) -> None:
    for folder in (tmp_path / "c", tmp_path / "c" / "r"):
        folder.mkdir()
        watcher.before_listing(str(folder))
        watcher.listed(str(folder))
    shutil.rmtree(tmp_path / "c")
    assert watcher.read_events() is True
    assert watcher.watched == 0 and not watcher.is_clean(str(tmp_path / "c" / "r"))


def test_a_folder_listed_before_its_watch_existed_is_never_clean(tmp_path: Path, watcher: DirectoryWatcher) -> None:
    watcher.listed(str(tmp_path))  # no watch: nothing would tell us about changes
    assert not watcher.is_clean(str(tmp_path))


def test_hinted_scans_trust_clean_folders_and_relist_dirty_ones(tmp_path: Path, watcher: DirectoryWatcher) -> None:
    run = make_run(tmp_path / "runs", "c/param_H/r0")
    (run / "lfads.done").write_text("{}")
    scanner = RunScanner([tmp_path / "runs"], watcher=watcher)
    assert [found.has_done for found in scanner.scan(full=True)] == [True]
    (run / "lfads.done").unlink()
    # Before the event is read the listing is trusted without a look (what makes hinted scans cheap)...
    assert [found.has_done for found in scanner.scan(hinted=True)] == [True]
    assert watcher.read_events() is True
    # ...and once it is read, the run folder alone is listed again.
    assert [found.has_done for found in scanner.scan(hinted=True)] == [False]
    new = make_run(tmp_path / "runs", "c/param_H/r1")
    assert watcher.read_events() is True
    assert [found.path for found in scanner.scan(hinted=True)] == [run, new]


def test_periodic_scans_never_rely_on_inotify(tmp_path: Path, watcher: DirectoryWatcher) -> None:
    # Another NFS client's change makes no event here: an unhinted scan must still find it by mtime.
    run = make_run(tmp_path / "runs", "c/param_N/r0")
    (run / "lfads.done").write_text("{}")
    scanner = RunScanner([tmp_path / "runs"], watcher=watcher)
    scanner.scan(full=True)
    (run / "lfads.done").unlink()
    old = time.time() - 60
    os.utime(run, (old, old + 1))  # an mtime unlike the listed one, outside the racy window
    assert [found.has_done for found in scanner.scan()] == [False]


@pytest.mark.parametrize("inotify", [True, False])
def test_watching_queue_reacts_to_a_requeue_without_waiting_for_its_poll(tmp_path: Path, inotify: bool) -> None:
    if inotify and DirectoryWatcher.create() is None:
        pytest.skip("inotify is not available here")
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-i")])
    run = make_run(tmp_path / "runs", "c/param_I/r0", 'echo "ran" >> "$RUNQUEUE_RUN_DIR/../ran.txt"\n')
    ran = run.parent / "ran.txt"
    extra = {} if inotify else {"RUNQUEUE_NO_INOTIFY": "1"}
    queue = start_queue(
        queue_env(tmp_path, **extra), "run", "--watch", tmp_path / "runs", "--simulate-gpus", sim,
        "--poll-interval", "1h", "--quiet", log=tmp_path / "queue.log",
    )
    try:
        wait_for(lambda: (run / "lfads.done").exists(), what="the first run")
        time.sleep(0.3)
        (run / "lfads.done").unlink()
        added = make_run(tmp_path / "runs", "c/param_I/r1", 'echo "ran" >> "$RUNQUEUE_RUN_DIR/../ran.txt"\n')
        if inotify:
            wait_for(lambda: (run / "lfads.done").exists() and (added / "lfads.done").exists(), timeout=10,
                     what="the requeued and the new run, seen through inotify")
            assert ran.read_text().count("ran") == 3
        else:
            time.sleep(2.0)  # polling once an hour: neither is seen yet
            assert ran.read_text().count("ran") == 1 and not (added / "lfads.done").exists()
    finally:
        queue.send_signal(2)
        finish(queue)


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

"""Host-wide claims with real processes: the lock serialises racers, dead and reused pids drop out."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from runqueue.devices.claims import Claim, ClaimStore
from runqueue.devices.errors import ClaimError

REPO = Path(__file__).resolve().parents[2]


def make_claim(run_dir: str, pid: int, device: str = "GPU-a", memory_mb: int = 2000) -> Claim:
    return Claim(run_dir=run_dir, device_uuid=device, memory_mb=memory_mb, pid=pid, sid=os.getsid(0),
                 queue_id="test", created=time.time())


RACER = """
    import os, sys, time
    from pathlib import Path
    from runqueue.devices.claims import Claim, ClaimStore
    store, release = ClaimStore(Path(sys.argv[1])), Path(sys.argv[2])
    with store.transaction() as txn:
        if any(c.device_uuid == "GPU-only" for c in txn.live_claims()):
            print("lost"); sys.exit(0)
        time.sleep(0.2)  # without the lock every racer would get here and claim the GPU
        txn.add(Claim(run_dir=f"/runs/{os.getpid()}", device_uuid="GPU-only", memory_mb=2000,
                      pid=os.getpid(), sid=os.getsid(0), queue_id=str(os.getpid()), created=time.time()))
    print("won", flush=True)
    while not release.exists():  # stay alive (claim live) until every racer has decided
        time.sleep(0.02)
"""


def test_racing_processes_claim_a_gpu_exactly_once(tmp_path: Path) -> None:
    claims_dir, release = tmp_path / "claims", tmp_path / "release"
    racers = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(RACER), str(claims_dir), str(release)],
                               cwd=REPO, text=True, stdout=subprocess.PIPE) for _ in range(4)]
    try:
        outputs: list[str] = []
        for racer in racers:
            line = racer.stdout.readline().strip() if racer.stdout else ""
            outputs.append(line)
            if line == "won":
                winner = racer
        assert sorted(outputs) == ["lost", "lost", "lost", "won"]
        live = ClaimStore(claims_dir).claims()
        assert [(c.device_uuid, c.pid) for c in live] == [("GPU-only", winner.pid)]
    finally:
        release.touch()
        for racer in racers:
            racer.wait(timeout=30)
    assert ClaimStore(claims_dir).claims() == []  # every racer exited: nothing is held any more


def test_claim_of_dead_process_is_dropped_and_its_file_removed(tmp_path: Path) -> None:
    store = ClaimStore(tmp_path / "claims")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with store.transaction() as txn:
            txn.add(make_claim("/runs/a", child.pid))
            txn.add(make_claim("/runs/b", os.getpid(), device="GPU-b"))
            assert {c.run_dir for c in txn.live_claims()} == {"/runs/a", "/runs/b"}
            assert txn.claim_for("/runs/a") is not None
    finally:
        child.kill()
        child.wait()
    assert [c.run_dir for c in store.claims()] == ["/runs/b"]  # read-only view already ignores it
    assert len(list(store.directory.glob("*.claim.json"))) == 2  # ... without deleting anything
    with store.transaction() as txn:
        assert [c.run_dir for c in txn.live_claims()] == ["/runs/b"]
        assert txn.claim_for("/runs/a") is None
    assert len(list(store.directory.glob("*.claim.json"))) == 1
    store.remove("/runs/b")
    store.remove("/runs/never-claimed")
    assert store.claims() == []


def test_reused_pid_or_other_boot_does_not_keep_a_claim_alive(tmp_path: Path) -> None:
    store = ClaimStore(tmp_path / "claims")
    with store.transaction() as txn:
        txn.add(make_claim("/runs/reused", os.getpid()))
        txn.add(make_claim("/runs/rebooted", os.getpid()))
    assert len(store.claims()) == 2
    # Same pid, different start time: the pid now belongs to another process.
    for path in store.directory.glob("*.claim.json"):
        record = json.loads(path.read_text())
        if record["run_dir"] == "/runs/reused":
            record["pid_start"] -= 1
        else:
            record["boot"] = "an-earlier-boot"
        path.write_text(json.dumps(record))
    assert store.claims() == []


def test_add_replaces_the_runs_previous_claim(tmp_path: Path) -> None:
    store = ClaimStore(tmp_path / "claims")
    with store.transaction() as txn:
        txn.add(make_claim("/runs/a", os.getpid(), device="GPU-a"))
        txn.add(make_claim("/runs/a", os.getpid(), device="GPU-b", memory_mb=4000))
        assert [(c.device_uuid, c.memory_mb) for c in txn.live_claims()] == [("GPU-b", 4000)]


def test_directory_created_shared_and_unsafe_directories_refused(tmp_path: Path) -> None:
    store = ClaimStore(tmp_path / "new" / "claims")
    with store.transaction() as txn:
        txn.add(make_claim("/runs/a", os.getpid()))
    mode = stat.S_IMODE(os.stat(store.directory).st_mode)
    assert mode == 0o1777

    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(ClaimError, match="chmod 1777"), ClaimStore(open_dir).transaction():
        pass
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ClaimError, match="not a directory"), ClaimStore(tmp_path / "link").transaction():
        pass


@pytest.mark.parametrize("planted", ["symlink", "directory", "fifo"])
def test_a_lock_file_that_is_no_plain_file_is_refused_with_the_fix(tmp_path: Path, planted: str) -> None:
    # The shared directory is world-writable (sticky): anyone could plant these before any queue ran.
    claims = tmp_path / "claims"
    claims.mkdir(mode=0o1777)
    lock = claims / ".lock"
    {"symlink": lambda: lock.symlink_to(tmp_path / "target"), "directory": lock.mkdir,
     "fifo": lambda: os.mkfifo(lock)}[planted]()
    with pytest.raises(ClaimError, match=r"\.lock: .*remove it \(it is made again\)"), ClaimStore(claims).transaction():
        pass
    assert not (tmp_path / "target").exists()


def test_env_variable_chooses_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNQUEUE_CLAIMS_DIR", str(tmp_path / "from-env"))
    assert ClaimStore().directory == tmp_path / "from-env"


AS_OTHER_USER = """
    import json, os, sys, time
    from pathlib import Path
    from runqueue.devices.claims import Claim, ClaimStore
    store = ClaimStore(Path(sys.argv[1]))
    os.setgroups([]); os.setgid(65534); os.setuid(65534)  # everything is imported: /root is 0700
    with store.transaction() as txn:
        seen = sorted(c.run_dir for c in txn.live_claims())
        txn.add(Claim(run_dir="/runs/nobody", device_uuid="GPU-a", memory_mb=1000, pid=os.getpid(),
                      sid=os.getsid(0), queue_id="nobody", created=time.time()))
    try:
        store.remove("/runs/root-live")
        removed_roots = "no error"
    except Exception as err:
        removed_roots = type(err).__name__
    print(json.dumps({"seen": seen, "after": sorted(c.run_dir for c in store.claims()), "remove": removed_roots}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second user (uid 65534)")
def test_second_user_shares_the_directory_and_cannot_delete_others_claims() -> None:
    # pytest's tmp_path sits under a 0700 directory the second user cannot traverse.
    shared = Path(tempfile.mkdtemp(prefix="devices-claims-"))
    try:
        shared.chmod(0o755)
        check_second_user(ClaimStore(shared / "claims"))
    finally:
        shutil.rmtree(shared)


def check_second_user(store: ClaimStore) -> None:
    dead = subprocess.Popen(["true"])
    with store.transaction() as txn:
        txn.add(make_claim("/runs/root-live", os.getpid()))
        txn.add(make_claim("/runs/root-dead", dead.pid))  # live at add time ...
    dead.wait()  # ... dead now, but nobody cannot unlink root's file in the sticky directory
    other = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(AS_OTHER_USER), str(store.directory)],
        cwd=REPO, text=True, capture_output=True, timeout=60)
    assert other.returncode == 0, other.stderr
    result = json.loads(other.stdout)
    assert result["seen"] == ["/runs/root-live"]  # root's dead claim is dropped even though undeletable
    assert result["after"] == ["/runs/nobody", "/runs/root-live"]  # its own claim, while it ran
    assert result["remove"] == "no error"  # root's claim file is left alone, without an error
    owners = {json.loads(p.read_text())["run_dir"]: p.stat().st_uid for p in store.directory.glob("*.claim.json")}
    assert owners == {"/runs/root-live": 0, "/runs/root-dead": 0, "/runs/nobody": 65534}
    with store.transaction() as txn:  # nobody has exited; root may clean up everybody's stale claims
        assert [c.run_dir for c in txn.live_claims()] == ["/runs/root-live"]
    assert len(list(store.directory.glob("*.claim.json"))) == 1


def test_a_claim_is_readable_by_every_account_whatever_the_umask(tmp_path: Path) -> None:
    store = ClaimStore(tmp_path / "claims")
    previous = os.umask(0o077)  # a private user's umask: other accounts' queues must still see the claim
    try:
        with store.transaction() as txn:
            txn.add(make_claim("/runs/a", os.getpid()))
    finally:
        os.umask(previous)
    (claim_file,) = store.directory.glob("*.claim.json")
    assert stat.S_IMODE(claim_file.stat().st_mode) == 0o644


def test_a_claim_name_taken_by_another_account_neither_blocks_nor_fakes_a_claim(tmp_path: Path) -> None:
    from runqueue.devices.claims import claim_file_name
    from runqueue.procinfo import boot_id, live_start_time

    store = ClaimStore(tmp_path / "claims")
    with store.transaction():
        pass  # the shared directory, sticky
    squatted = store.directory / claim_file_name("/runs/a", os.geteuid())
    squatted.write_text(json.dumps({"run_dir": "/runs/a", "device_uuid": "GPU-fake", "memory_mb": 1, "pid": os.getpid(),
                                    "sid": os.getsid(0), "queue_id": "x", "created": 0.0,
                                    "pid_start": live_start_time(os.getpid()), "boot": boot_id()}))
    os.chown(squatted, 65534, 65534)  # made by "nobody" before our queue ever claimed that run
    with store.transaction() as txn:
        assert txn.live_claims() == []  # a file its name does not match is no claim
        txn.add(make_claim("/runs/a", os.getpid()))
        (claim,) = txn.live_claims()
    assert claim.device_uuid == "GPU-a" and squatted.exists()


def test_a_claims_directory_that_cannot_be_listed_is_a_one_line_error(tmp_path: Path) -> None:
    directory = tmp_path / "claims"
    directory.mkdir(mode=0o1733)
    directory.chmod(0o1733)  # anyone may add, nobody may list: no queue could see the others' claims
    script = ("import os, sys\nfrom pathlib import Path\n"  # everything imported before becoming "nobody"
              "from runqueue.devices.claims import ClaimStore\nfrom runqueue.devices.errors import ClaimError\n"
              "os.setgid(65534); os.setuid(65534)\n"
              "try:\n    ClaimStore(Path(sys.argv[1])).claims()\nexcept ClaimError as error:\n    print(error)\n")
    result = subprocess.run([sys.executable, "-c", script, str(directory)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=30)
    if "Operation not permitted" in result.stderr:
        pytest.skip("needs root to act as another account")
    assert "cannot list the claims directory" in result.stdout and "chmod 1777" in result.stdout, result.stderr
    # Pointing this queue elsewhere is no fix unless every queue goes there too.
    assert "to one every queue on this host shares (a private one lets queues book a GPU twice)" in result.stdout


def test_a_fifo_planted_in_the_claims_folder_never_hangs_a_queue(tmp_path: Path) -> None:
    store = ClaimStore(tmp_path / "claims")
    with store.transaction() as txn:
        txn.add(make_claim("/runs/a", os.getpid()))
    os.mkfifo(store.directory / "0123-u0.claim.json")  # opening it for reading would wait for a writer
    script = ("import sys\nfrom pathlib import Path\nfrom runqueue.devices.claims import ClaimStore\n"
              "print(len(ClaimStore(Path(sys.argv[1])).claims()))\n")
    result = subprocess.run([sys.executable, "-c", script, str(store.directory)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=20)
    assert result.stdout.strip() == "1", result.stderr


def test_status_gives_the_queues_fix_for_a_claims_path_that_is_a_file_or_a_link(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    for name in ("file", "link"):  # status suggested `chmod 1777 FILE`, and read through the link
        with pytest.raises(ClaimError, match=r"claims directory is not a directory \(a symlink or file\?\); remove it"):
            ClaimStore(tmp_path / name).claims()
    assert ClaimStore(tmp_path / "missing").claims() == []


def _hold_claims_lock(directory: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process (any account could) holding the host-wide lock; returns once it holds it."""
    code = textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(directory / '.lock')!r}, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("held", flush=True)
        time.sleep({seconds})
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_claims_lock_held_too_long_is_given_up_with_the_holder_to_look_for(tmp_path: Path, monkeypatch) -> None:
    from runqueue.devices import claims as claims_module
    from runqueue.devices.errors import ClaimsBusy

    monkeypatch.setattr(claims_module, "LOCK_WAIT_S", 0.5)
    store = ClaimStore(tmp_path / "claims")
    store.ensure_directory()
    holder = _hold_claims_lock(store.directory, 30)
    try:
        start = time.monotonic()
        with pytest.raises(ClaimsBusy) as raised, store.transaction():
            pass
        assert time.monotonic() - start < 5
        assert f"fuser -v {store.directory / '.lock'}" in str(raised.value)
    finally:
        holder.kill()
        holder.wait()
    with store.transaction() as txn:  # let go: the next decision goes through at once
        assert txn.live_claims() == []


@pytest.mark.slow
def test_a_queue_waits_out_a_claims_lock_held_by_someone_else_and_then_runs(tmp_path: Path) -> None:
    # Before, the queue blocked in flock for as long as the holder liked, deaf to SIGTERM and to
    # systemd's watchdog; now it gives up after LOCK_WAIT_S, says so, and tries again.
    from runqueue_testkit import make_run, queue_env, run_queue

    store = ClaimStore(tmp_path / "claims")
    store.ensure_directory()
    run = make_run(tmp_path / "runs", "c/param_L/r")
    holder = _hold_claims_lock(store.directory, 13)
    try:
        result = run_queue(queue_env(tmp_path), "run", tmp_path / "runs", "--cpu-slots", "1", "--poll-interval", "1s",
                           timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the host-wide claims lock has been held by another process for over 10s" in result.stdout
    assert (run / "lfads.done").exists()

"""`runqueue serve`: systemd notifications, and a stop that leaves runs to be re-adopted."""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from runqueue_testkit import (
    finish,
    gpu,
    kill_session,
    make_run,
    pid_alive,
    queue_command,
    queue_env,
    read_json,
    start_queue,
    wait_for,
    write_gpus,
)

from runqueue import serve as serve_module
from runqueue.scheduler import QueueOptions, Scheduler


def _serve_with_notify_socket(tmp_path: Path, config: Path) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """`runqueue serve --config CONFIG` as systemd starts it, and the socket its notifications reach."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(30)
    service = start_queue(queue_env(tmp_path, NOTIFY_SOCKET=str(tmp_path / "notify.sock")), "serve", "--config", config,
                          log=tmp_path / "serve.log")
    return service, notify


def test_runqueue_serve_notifies_systemd_and_survives_its_own_restart(tmp_path: Path) -> None:
    sim = write_gpus(tmp_path / "gpus.json", [gpu("GPU-serve")])
    first = make_run(tmp_path / "runs", "c/param_S/quick")
    release, started = tmp_path / "release", tmp_path / "started"
    long = make_run(tmp_path / "runs", "c/param_S/zlong", f"touch {started}\nfor i in $(seq 1200); do [ -e {release} ] && break; sleep 0.05; done\n")
    config = tmp_path / "runqueue.toml"
    config.write_text(f'roots = ["runs"]\nsimulate_gpus = "{sim}"\npoll_interval = 0.2\nclaims_dir = "claims"\n')
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(30)
    env = queue_env(tmp_path, NOTIFY_SOCKET=str(tmp_path / "notify.sock"))
    service = start_queue(env, "serve", "--config", config, log=tmp_path / "serve1.log")
    try:
        messages = [notify.recv(4096).decode()]
        assert messages[0].startswith("READY=1")
        wait_for(started.exists, what="the long run to start")
        assert (first / "lfads.done").exists()
        while not any(message.startswith("STATUS=1 running") for message in messages):
            messages.append(notify.recv(4096).decode())
        supervisor = read_json(long / ".runqueue/state.json")["supervisor_pid"]
        service.send_signal(signal.SIGTERM)  # systemctl stop / restart
        assert finish(service, timeout=30) == 0
        while not any(message.startswith("STOPPING=1") for message in messages):
            messages.append(notify.recv(4096).decode())
        assert pid_alive(supervisor)  # the run kept running without its queue
        service = start_queue(env, "serve", "--config", config, log=tmp_path / "serve2.log")
        wait_for(lambda: "[param_S/zlong] re-adopted" in (tmp_path / "serve2.log").read_text(), what="re-adoption")
        release.touch()
        wait_for(lambda: (long / "lfads.done").exists(), what="the re-adopted run to finish")
    finally:
        service.send_signal(signal.SIGTERM)
        finish(service, timeout=30)
        notify.close()


@pytest.mark.parametrize(("text", "message"), [("rootz = []\n", "unknown key(s) 'rootz'"), ("roots = []\n", "roots: must be a non-empty list")])
def test_runqueue_serve_bad_config_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = subprocess.run(queue_command("serve", "--config", config), env=queue_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr and str(config) in result.stderr


def _messages_until(notify: socket.socket, prefix: str, seen: list[str]) -> list[str]:
    """Notifications up to and including the first that starts with `prefix` (appended to `seen`)."""
    while not seen or not seen[-1].startswith(prefix):
        seen.append(notify.recv(4096).decode())
    return seen


@contextlib.contextmanager
def _serving(tmp_path: Path, config_text: str) -> Iterator[tuple[subprocess.Popen[bytes], socket.socket, Path]]:
    """`runqueue serve` with tmp_path/runqueue.toml holding `config_text`, once it said READY=1;
    stopped with SIGTERM afterwards, which must end it with 0."""
    config = tmp_path / "runqueue.toml"
    config.write_text(config_text)
    service, notify = _serve_with_notify_socket(tmp_path, config)
    try:
        assert notify.recv(4096).decode().startswith("READY=1")
        yield service, notify, config
    finally:
        service.send_signal(signal.SIGTERM)
        assert finish(service, timeout=30) == 0
        notify.close()


def test_runqueue_serve_reloads_its_config_in_place_on_sighup_and_keeps_its_runs(tmp_path: Path) -> None:
    release, started = tmp_path / "release", tmp_path / "started"
    long = make_run(tmp_path / "alice", "c/param_A/long", f"touch {started}\nfor i in $(seq 1200); do [ -e {release} ] && break; sleep 0.05; done\n")
    settings = 'gpus = "none"\ncpu_slots = 2\nclaims_dir = "claims"\npoll_interval = 0.2\n'
    with _serving(tmp_path, 'roots = ["alice"]\n' + settings) as (service, notify, config):
        wait_for(started.exists, what="the long run to start")
        supervisor = read_json(long / ".runqueue/state.json")["supervisor_pid"]
        late = make_run(tmp_path / "bob", "c/param_B/late")
        config.write_text('roots = ["alice", "bob"]\n' + settings)
        service.send_signal(signal.SIGHUP)  # systemctl reload
        messages = _messages_until(notify, "RELOADING=1", [])
        assert "MONOTONIC_USEC=" in messages[-1]
        assert _messages_until(notify, "READY=1", messages)[-1].startswith("READY=1")  # the queue started again in place
        wait_for((late / "lfads.done").exists, what="the run under the root the reload added")
        assert service.poll() is None and pid_alive(supervisor)  # the same process serves on; the run kept going
        log = (tmp_path / "serve.log").read_text()
        assert "reloading: starting again in place with the new settings; 1 started run(s) keep going" in log
        assert "[param_A/long] re-adopted" in log
        release.touch()
        wait_for((long / "lfads.done").exists, what="the re-adopted run to finish")
        assert (long / "lfads.out").read_text().count("step=lfads_train.sh") == 1  # not started twice


def test_a_reload_whose_config_does_not_read_goes_on_with_the_settings_it_has(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    with _serving(tmp_path, 'roots = ["runs"]\ngpus = "none"\nclaims_dir = "claims"\npoll_interval = 0.2\n') as (service, notify, config):
        config.write_text('roots = ["runs"\n')  # an edit saved half-way
        service.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in (tmp_path / "serve.log").read_text(), what="the refusal")
        refusal = next(line for line in (tmp_path / "serve.log").read_text().splitlines() if "reload refused" in line)
        assert "going on with the settings it has" in refusal and str(config) in refusal
        run = make_run(tmp_path / "runs", "c/param_R/r")
        wait_for((run / "lfads.done").exists, what="a run placed with the old settings")
        assert service.poll() is None
        notify.settimeout(0.5)
        with pytest.raises(TimeoutError):
            while True:
                assert not notify.recv(4096).decode().startswith("RELOADING=1")


@pytest.mark.parametrize(("edit", "says"), [('gpus = "0,0"', "a GPU is listed twice"),
                                           ('simulate_gpus = "nosuch.json"', "nosuch.json")])
def test_a_reload_to_devices_that_cannot_be_made_goes_on_with_the_settings_it_has(tmp_path: Path, edit: str, says: str) -> None:
    (tmp_path / "runs").mkdir()
    base = 'roots = ["runs"]\nclaims_dir = "claims"\npoll_interval = 0.2\n'
    with _serving(tmp_path, base + 'gpus = "none"\n') as (service, _notify, config):
        config.write_text(base + edit + "\n")  # reads as TOML; only starting with it would fail
        service.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in (tmp_path / "serve.log").read_text(), what="the refusal")
        refusal = next(line for line in (tmp_path / "serve.log").read_text().splitlines() if "reload refused" in line)
        assert says in refusal and "going on with the settings it has" in refusal, refusal
        run = make_run(tmp_path / "runs", "c/param_R/r")
        wait_for((run / "lfads.done").exists, what="a run placed with the old settings")
        assert service.poll() is None  # not taken down by the typo


def test_a_reload_starts_from_the_environment_the_service_began_with(tmp_path: Path) -> None:
    # The config's claims_dir reaches the runs through the environment; a reload to a config without
    # one must fall back to the unit's (here RUNQUEUE_CLAIMS_DIR = tmp/claims), not keep the old value.
    (tmp_path / "runs").mkdir()
    with _serving(tmp_path, 'roots = ["runs"]\ngpus = "none"\nclaims_dir = "other-claims"\n') as (service, notify, config):
        record = f"queue-{socket.gethostname()}-{service.pid}.json"
        assert (tmp_path / "other-claims" / record).exists()
        config.write_text('roots = ["runs"]\ngpus = "none"\n')
        service.send_signal(signal.SIGHUP)
        _messages_until(notify, "READY=1", [])
        wait_for((tmp_path / "claims" / record).exists, what="the record in the unit's claims directory")
        assert not (tmp_path / "other-claims" / record).exists()


def test_a_stop_that_comes_with_a_reload_wins(tmp_path: Path) -> None:
    started = tmp_path / "started"
    make_run(tmp_path / "runs", "c/param_H/long", f"touch {started}\nsleep 60\n")
    config = tmp_path / "runqueue.toml"
    config.write_text('roots = ["runs"]\ngpus = "none"\nclaims_dir = "claims"\n')
    service = start_queue(queue_env(tmp_path), "serve", "--config", config, log=tmp_path / "serve.log")
    try:
        wait_for(started.exists, what="the run to start")
        # `systemctl reload` and `systemctl stop` at once: both arrive before the loop looks (the
        # kernel hands over SIGHUP first), and the queue must stop, not start again in place.
        service.send_signal(signal.SIGSTOP)
        service.send_signal(signal.SIGTERM)
        service.send_signal(signal.SIGHUP)
        service.send_signal(signal.SIGCONT)
        assert finish(service, timeout=30) == 0, (tmp_path / "serve.log").read_text()
        assert "stopping instead of reloading: asked to stop meanwhile" in (tmp_path / "serve.log").read_text()
    finally:
        if service.poll() is None:
            service.kill()
        run = tmp_path / "runs" / "c" / "param_H" / "long"
        kill_session(int(read_json(run / ".runqueue/state.json")["supervisor_pid"]))


def test_runqueue_serve_serves_the_other_roots_while_one_is_missing_and_picks_it_up_later(tmp_path: Path) -> None:
    present = make_run(tmp_path / "alice", "c/param_P/r")
    config = tmp_path / "runqueue.toml"
    config.write_text('roots = ["alice", "bob"]\ngpus = "none"\nclaims_dir = "claims"\npoll_interval = 0.2\n')
    service = start_queue(queue_env(tmp_path), "serve", "--config", config, log=tmp_path / "serve.log")
    try:
        wait_for((present / "lfads.done").exists, what="the present root's run")
        assert f"{tmp_path / 'bob'}: no such folder (yet)" in (tmp_path / "serve.log").read_text()
        late = make_run(tmp_path / "bob", "c/param_L/r")  # the automount came up
        wait_for((late / "lfads.done").exists, what="the late root's run")
    finally:
        service.send_signal(signal.SIGTERM)
        finish(service, timeout=30)


def test_runqueue_serve_says_in_its_systemd_status_why_nothing_is_placed(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    inventory = write_gpus(tmp_path / "gpus.json", [gpu("GPU-x")])
    config = tmp_path / "runqueue.toml"
    config.write_text(f'roots = ["runs"]\nsimulate_gpus = "{inventory}"\nclaims_dir = "claims"\npoll_interval = 0.2\n')
    service, notify = _serve_with_notify_socket(tmp_path, config)
    try:
        messages = [notify.recv(4096).decode()]
        assert messages[0].startswith("READY=1")
        inventory.write_text('[{"uuid": "GPU-x", "memory_used": 3}]')  # edited under the service: a key it does not know
        make_run(tmp_path / "runs", "c/param_Q/r")
        while not any("placing paused" in message for message in messages):
            messages.append(notify.recv(4096).decode())
        (paused,) = [message for message in messages if "placing paused" in message]
        assert paused.startswith("STATUS=0 running, 1 pending") and "memory_used" in paused, messages
        write_gpus(inventory, [gpu("GPU-x")])  # fixed: placing resumes, and the status says so
        while not any(message.startswith("STATUS=0 running, 0 pending, 1 done") for message in messages):
            messages.append(notify.recv(4096).decode())
    finally:
        service.send_signal(signal.SIGTERM)
        finish(service, timeout=30)
        notify.close()


def test_runqueue_serve_refuses_a_claims_dir_of_its_config_that_cannot_serve(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "claims").write_text("a file where the claims directory goes")
    config = tmp_path / "runqueue.toml"
    config.write_text('roots = ["runs"]\ngpus = "none"\nclaims_dir = "claims"\n')
    result = subprocess.run(queue_command("serve", "--config", config), env=queue_env(tmp_path), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(f"runqueue serve: error: {config}: claims_dir: {tmp_path / 'claims'}")
    assert "choose another claims_dir" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_serve_on_a_terminal_leaves_on_a_hang_up_instead_of_reloading(tmp_path: Path) -> None:
    # There SIGHUP means the terminal is gone: a queue started again in place would write into it.
    (tmp_path / "runs").mkdir()
    config = tmp_path / "runqueue.toml"
    config.write_text('roots = ["runs"]\ngpus = "none"\nclaims_dir = "claims"\n')
    leader, follower = pty.openpty()
    service = subprocess.Popen(queue_command("serve", "--config", config), env=queue_env(tmp_path),
                               stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    try:
        seen = b""
        while b"0 running" not in seen:  # its status line: the loop is up
            seen += os.read(leader, 4096)
        service.send_signal(signal.SIGHUP)
        assert finish(service, timeout=30) == 130
        with contextlib.suppress(OSError):  # EIO once the queue is gone
            while chunk := os.read(leader, 4096):
                seen += chunk
        assert b"hang-up: leaving" in seen and b"reloading" not in seen
    finally:
        if service.poll() is None:
            service.kill()
        os.close(leader)


def test_a_hang_up_on_top_of_a_stop_makes_serve_exit_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # SIGTERM then SIGHUP (a terminal closing as the service stops): no clean stop any more, so the
    # unit's exit says so, whether the hang-up was acted on in the loop or came as the loop ended.
    (tmp_path / "runs").mkdir()
    monkeypatch.setenv("RUNQUEUE_CLAIMS_DIR", str(tmp_path / "claims"))
    scheduler = Scheduler(QueueOptions(roots=[tmp_path / "runs"], watch=True, detach_on_stop=True, gpus="none", quiet=True))
    scheduler.signals[:] = [signal.SIGTERM, signal.SIGHUP]
    scheduler._act_on_signals()
    assert scheduler.stop_level >= 3 and scheduler.hung_up and not scheduler.reload_due()
    scheduler.executor.close()

    class EndsWithAHangUpPending:
        def __init__(self, options: QueueOptions, hooks: object = None) -> None:
            self.hung_up = False
            self.signals: list[int] = []

        def run(self) -> None:
            self.signals.append(signal.SIGHUP)  # arrived after the loop's last look at its signals

        def reload_due(self) -> bool:
            return False

    monkeypatch.setattr(serve_module, "Scheduler", EndsWithAHangUpPending)
    assert serve_module.serve(None, [tmp_path / "runs"]) == 130

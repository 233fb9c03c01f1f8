"""The systemd unit and tmpfiles snippet: the keys the service relies on, and systemd's own checks."""

from __future__ import annotations

import configparser
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from runqueue.devices.claims import DEFAULT_CLAIMS_DIR

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "lfads-runqueue.service"
TMPFILES = REPO / "systemd" / "lfads-runqueue.tmpfiles.conf"


def unit_sections() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_has_the_keys_the_service_relies_on() -> None:
    unit = unit_sections()
    service = unit["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"]) >= 60  # the loop pings every half interval
    assert service["ExecStart"].split()[1:] == ["serve", "--config", "/etc/lfads-runqueue/runqueue.toml"]
    assert service["KillMode"] == "process"  # a restart must not kill the runs' supervisors
    assert service["PrivateTmp"] == "no"  # the claims directory in /tmp is shared with users' queues
    assert service.get("PrivateDevices", "no") == "no"  # would hide /dev/nvidia*
    assert service["Restart"] == "always"  # a stray SIGTERM from a run must not leave the box without a queue
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"  # serve reloads its config in place on SIGHUP
    assert service["User"] and service["User"] != "root"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    # verify insists that ExecStart's binary exists: point it at this checkout's console script.
    runqueue = Path(sys.executable).parent / "runqueue"
    text = UNIT.read_text().replace("/opt/lfads-runqueue/.venv/bin/runqueue", str(runqueue))
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # unknown keys are only warnings: none allowed


@pytest.mark.skipif(shutil.which("systemd-tmpfiles") is None, reason="systemd-tmpfiles is not installed here")
def test_tmpfiles_creates_the_shared_claims_directory(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    subprocess.run(["systemd-tmpfiles", f"--root={tmp_path}", "--create", str(TMPFILES)], check=True, timeout=60)
    claims = tmp_path / "tmp" / "lfads-runqueue-claims"
    assert stat.S_IMODE(claims.stat().st_mode) == 0o1777
    assert f"d {DEFAULT_CLAIMS_DIR} 1777" in TMPFILES.read_text()

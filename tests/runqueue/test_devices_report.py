"""`runqueue gpus` in a real subprocess, and the `devices` entries `status --json` embeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from runqueue.devices.claims import Claim, ClaimStore
from runqueue.devices.inventory import make_inventory
from runqueue.devices.report import UNSEEN_DEVICE, devices_json

REPO = Path(__file__).resolve().parents[2]
GPUS = "import sys; from runqueue.devices.report import gpus_command; sys.exit(gpus_command(sys.argv[1:]))"


def gpus(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RUNQUEUE_SIMULATE_GPUS"}
    env["RUNQUEUE_CLAIMS_DIR"] = str(tmp_path / "claims")
    return subprocess.run([sys.executable, "-c", GPUS, *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=60)


def test_gpus_json_shows_devices_our_runs_and_foreign_processes(tmp_path: Path) -> None:
    simulated = tmp_path / "gpus.json"
    simulated.write_text(json.dumps([
        {"uuid": "GPU-a", "name": "Sim", "memory_total_mb": 16000, "memory_used_mb": 3500,
         "processes": [{"pid": os.getpid(), "used_mb": 500}, {"pid": 2**22 + 11, "used_mb": 3000}]},
        {"uuid": "GPU-b", "name": "Sim", "memory_total_mb": 8000},
    ]))
    with ClaimStore(tmp_path / "claims").transaction() as txn:  # this test process plays a running run
        txn.add(Claim(run_dir="/runs/r1", device_uuid="GPU-a", memory_mb=2000, pid=os.getpid(),
                      sid=os.getsid(0), queue_id="test", created=time.time()))
    result = gpus(tmp_path, "--json", "--simulate-gpus", str(simulated))
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["status"] == f"simulated: 2 GPUs from {simulated}"
    assert shown["paused"] is False and shown["problems"] == []
    first, second = shown["devices"]
    assert {k: first[k] for k in ("uuid", "index", "memory_total_mb", "memory_used_mb", "runs", "free_mb")} == {
        "uuid": "GPU-a", "index": 0, "memory_total_mb": 16000, "memory_used_mb": 3500, "runs": ["/runs/r1"],
        "free_mb": 16000 - 3500 - (2000 - 500)}
    assert [(p["pid"], p["ours"]) for p in first["processes"]] == [(os.getpid(), True), (2**22 + 11, False)]
    assert second["runs"] == [] and second["free_mb"] == 8000

    table = gpus(tmp_path, "--simulate-gpus", str(simulated))
    assert table.returncode == 0
    assert "[0] GPU-a  Sim  3500/16000 MB used, 11000 MB free" in table.stdout
    assert "run: /runs/r1 (2000 MB declared" in table.stdout
    assert f"{2**22 + 11} (foreign, 3000 MB)" in table.stdout


def test_gpus_without_gpu_shows_cpu_slots_and_bad_file_fails_in_one_line(tmp_path: Path) -> None:
    result = gpus(tmp_path, "--json", "--cpu-slots", "2")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    if shown["status"].startswith("nvml:"):
        return  # a GPU machine: nothing to check about the no-GPU state here
    assert [(d["uuid"], d["is_gpu"], d["memory_total_mb"]) for d in shown["devices"]] == [
        ("cpu-0", False, None), ("cpu-1", False, None)]
    assert shown["status"].endswith("2 CPU slots")

    bad = tmp_path / "bad.json"
    bad.write_text("[{\"uuid\": 3}]")
    failed = gpus(tmp_path, "--simulate-gpus", str(bad))
    assert failed.returncode == 2
    assert failed.stdout == ""
    assert failed.stderr.count("\n") == 1 and str(bad) in failed.stderr and "'uuid'" in failed.stderr


def test_devices_json_has_exactly_the_status_schema_keys(tmp_path: Path) -> None:
    simulated = tmp_path / "gpus.json"
    simulated.write_text(json.dumps([{"uuid": "GPU-x", "memory_total_mb": None}]))
    reading = make_inventory(gpus=None, simulate_gpus=str(simulated), cpu_slots=None).read()
    claims = [Claim("/runs/b", "GPU-x", 2000, 1, 1, "q", 0.0), Claim("/runs/a", "GPU-x", 2000, 2, 2, "q", 0.0),
              Claim("/runs/c", "GPU-other", 2000, 3, 3, "q", 0.0)]
    assert devices_json(reading, claims) == [
        {"uuid": "GPU-x", "index": 0, "name": "Simulated GPU", "memory_total_mb": None, "memory_used_mb": None,
         "runs": ["/runs/a", "/runs/b"]},
        # Another queue's claim on a device this inventory does not list still shows (index null).
        {"uuid": "GPU-other", "index": None, "name": UNSEEN_DEVICE, "memory_total_mb": None, "memory_used_mb": None,
         "runs": ["/runs/c"]},
    ]


def test_gpus_shows_claims_on_devices_outside_its_own_inventory(tmp_path: Path) -> None:
    with ClaimStore(tmp_path / "claims").transaction() as txn:  # a queue with --cpu-slots 2 runs on cpu-1
        txn.add(Claim(run_dir="/runs/r2", device_uuid="cpu-1", memory_mb=0, pid=os.getpid(),
                      sid=os.getsid(0), queue_id="other", created=time.time()))
    result = gpus(tmp_path, "--json", "--gpus", "none")  # one CPU slot: cpu-0 only
    assert result.returncode == 0, result.stderr
    entries = {entry["uuid"]: entry for entry in json.loads(result.stdout)["devices"]}
    assert entries["cpu-1"]["runs"] == ["/runs/r2"] and entries["cpu-1"]["index"] is None
    table = gpus(tmp_path, "--gpus", "none")
    assert f"[-] cpu-1  {UNSEEN_DEVICE}" in table.stdout and "run: /runs/r2" in table.stdout

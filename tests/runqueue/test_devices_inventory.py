"""Simulated, static and CPU-slot inventories: real files, re-read on every call, clear errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runqueue.devices.inventory import InventoryError, make_inventory


def write_json(path: Path, data: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


@pytest.fixture(autouse=True)
def no_simulate_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNQUEUE_SIMULATE_GPUS", raising=False)


def test_simulated_file_is_reread_on_every_call(tmp_path: Path) -> None:
    path = tmp_path / "gpus.json"
    write_json(path, [{"uuid": "GPU-aaaa", "name": "Sim A", "memory_total_mb": 16000, "memory_used_mb": 500}])
    inventory = make_inventory(gpus=None, simulate_gpus=str(path), cpu_slots=None)
    first = inventory.read()
    assert [(d.uuid, d.memory_total_mb, d.memory_used_mb, d.is_gpu) for d in first.devices] == [
        ("GPU-aaaa", 16000, 500, True)
    ]
    assert str(path) in first.status

    write_json(
        path,
        [
            {"uuid": "GPU-aaaa", "memory_total_mb": 16000, "memory_used_mb": 9000,
             "processes": [{"pid": os.getpid(), "used_mb": 8500}, {"pid": 2**22 + 7, "used_mb": 1}]},
            {"uuid": "GPU-bbbb", "memory_total_mb": 8000},
        ],
    )
    second = inventory.read()
    assert [d.uuid for d in second.devices] == ["GPU-aaaa", "GPU-bbbb"]
    assert [d.index for d in second.devices] == [0, 1]
    assert second.devices[0].memory_used_mb == 9000
    assert second.devices[1].memory_used_mb == 0  # omitted "used" means an idle card
    mine, ghost = second.devices[0].processes
    assert mine.sid == os.getsid(0)  # a real pid gets its session, so placement can tell ours apart
    assert ghost.sid is None  # a made-up pid has none: placement treats it as foreign


def test_env_variable_used_when_no_argument_and_argument_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from_env = tmp_path / "env.json"
    from_arg = tmp_path / "arg.json"
    write_json(from_env, [{"uuid": "GPU-env", "memory_total_mb": 1000}])
    write_json(from_arg, [{"uuid": "GPU-arg", "memory_total_mb": 1000}])
    monkeypatch.setenv("RUNQUEUE_SIMULATE_GPUS", str(from_env))
    assert make_inventory(gpus="0", simulate_gpus=None, cpu_slots=None).read().devices[0].uuid == "GPU-env"
    assert make_inventory(gpus=None, simulate_gpus=str(from_arg), cpu_slots=None).read().devices[0].uuid == "GPU-arg"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[{\"uuid\": \"GPU-a\", ", "not valid JSON"),
        ("{\"uuid\": \"GPU-a\"}", "expected a JSON list"),
        ("[{\"name\": \"no uuid\"}]", "'uuid' must be a non-empty string"),
        ("[{\"uuid\": \"GPU-a\", \"memory_total_mb\": \"8GB\"}]", "'memory_total_mb' must be a whole number"),
        ("[{\"uuid\": \"GPU-a\", \"memory_total_mb\": 100, \"memory_used_mb\": 200}]", "exceeds memory_total_mb"),
        ("[{\"uuid\": \"GPU-a\", \"memory_used\": 5}]", "unknown key(s) 'memory_used'; valid keys: uuid"),
        ("[{\"uuid\": \"GPU-a\"}, {\"uuid\": \"GPU-a\"}]", "appears twice"),
        ("[{\"uuid\": \"GPU-a\", \"processes\": [{\"pid\": -3}]}]", "'pid' must be a whole number from 1 to 2147483647"),
        ("[{\"uuid\": \"GPU-a\", \"processes\": [{\"pid\": 3000000000}]}]", "'pid' must be a whole number from 1 to"),
    ],
)
def test_malformed_simulated_file_is_one_line_error_naming_it(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InventoryError) as caught:
        make_inventory(gpus=None, simulate_gpus=str(path), cpu_slots=None)
    message = str(caught.value)
    assert str(path) in message
    assert expected in message
    assert "\n" not in message
    assert isinstance(caught.value, ValueError)


def test_file_broken_after_start_raises_on_read(tmp_path: Path) -> None:
    path = tmp_path / "gpus.json"
    write_json(path, [{"uuid": "GPU-a", "memory_total_mb": 1000}])
    inventory = make_inventory(gpus=None, simulate_gpus=str(path), cpu_slots=None)
    path.unlink()
    with pytest.raises(InventoryError, match="not found"):
        inventory.read()


def test_empty_simulated_list_and_no_gpu_give_cpu_slots(tmp_path: Path) -> None:
    path = tmp_path / "none.json"
    write_json(path, [])
    reading = make_inventory(gpus=None, simulate_gpus=str(path), cpu_slots=3).read()
    assert [(d.uuid, d.is_gpu) for d in reading.devices] == [("cpu-0", False), ("cpu-1", False), ("cpu-2", False)]
    assert reading.devices[0].job_environment() == {"CUDA_VISIBLE_DEVICES": ""}
    assert "3 CPU slots" in reading.status
    assert len(make_inventory(gpus=None, simulate_gpus=str(path), cpu_slots=None).read().devices) == 1
    assert make_inventory(gpus=None, simulate_gpus=str(path), cpu_slots=0).read().devices == ()
    with pytest.raises(InventoryError, match="--cpu-slots"):
        make_inventory(gpus=None, simulate_gpus=str(path), cpu_slots=-1)


def test_static_list_without_nvml_is_untracked_gpus() -> None:
    reading = make_inventory(gpus="0, 2", simulate_gpus=None, cpu_slots=None).read()
    if reading.status.startswith("nvml:"):
        pytest.skip("NVML works on this machine: --gpus resolves through it (see the NVML tests)")
    assert [(d.uuid, d.index, d.is_gpu, d.memory_total_mb) for d in reading.devices] == [
        ("0", 0, True, None),
        ("2", 2, True, None),
    ]
    assert reading.devices[1].job_environment()["CUDA_VISIBLE_DEVICES"] == "2"
    with pytest.raises(InventoryError, match="listed twice"):
        make_inventory(gpus="1,1", simulate_gpus=None, cpu_slots=None)
    with pytest.raises(InventoryError, match="comma-separated"):
        make_inventory(gpus="0,,1", simulate_gpus=None, cpu_slots=None)
    with pytest.raises(InventoryError, match="'gpu0' is neither a GPU index nor a GPU-…/MIG-… UUID"):
        make_inventory(gpus="0,gpu0", simulate_gpus=None, cpu_slots=None)  # a typo, caught without NVML too


def test_gpus_none_means_cpu_slots_only_even_with_gpus_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNQUEUE_SIMULATE_GPUS", "")
    for spelling in ("none", "None"):
        reading = make_inventory(gpus=spelling, simulate_gpus=None, cpu_slots=2).read()
        assert [(d.uuid, d.is_gpu) for d in reading.devices] == [("cpu-0", False), ("cpu-1", False)]
        assert reading.status == "no GPUs (--gpus none); 2 CPU slots"


def test_gpus_picks_among_simulated_gpus_and_a_typo_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNQUEUE_SIMULATE_GPUS", raising=False)
    sim = tmp_path / "gpus.json"
    write_json(sim, [{"uuid": "GPU-a", "memory_total_mb": 1000}, {"uuid": "GPU-b", "memory_total_mb": 1000}])
    reading = make_inventory(gpus="GPU-b", simulate_gpus=str(sim), cpu_slots=None).read()
    assert [device.uuid for device in reading.devices] == ["GPU-b"] and "(--gpus GPU-b)" in reading.status
    assert [d.uuid for d in make_inventory(gpus="0", simulate_gpus=str(sim), cpu_slots=None).read().devices] == ["GPU-a"]
    reading = make_inventory(gpus="none", simulate_gpus=str(sim), cpu_slots=2).read()  # was ignored: both GPUs
    assert [device.uuid for device in reading.devices] == ["cpu-0", "cpu-1"]
    with pytest.raises(InventoryError, match=r"--gpus 'GPU-zzzz' is not a GPU of the simulated inventory"):
        make_inventory(gpus="GPU-zzzz", simulate_gpus=str(sim), cpu_slots=None)

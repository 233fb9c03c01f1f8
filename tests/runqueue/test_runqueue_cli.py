"""The `runqueue` command line: boundaries and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from runqueue_testkit import queue_env, run_queue


def test_runqueue_cli_never_imports_tensorflow_or_the_model() -> None:
    code = (
        "import sys, runqueue.cli, runqueue.scheduler, runqueue.supervisor, runqueue.serve, runqueue.status\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
        "assert 'lfads' not in sys.modules, 'lfads imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_runqueue_python_dash_m_is_the_console_script(tmp_path: Path) -> None:
    result = run_queue(queue_env(tmp_path), "--help")
    assert result.returncode == 0
    for command in ("run", "serve", "status", "requeue", "cancel", "gpus"):
        assert command in result.stdout


def test_runqueue_bad_root_and_bad_flags_are_one_line_errors(tmp_path: Path) -> None:
    env = queue_env(tmp_path)
    missing = run_queue(env, "run", tmp_path / "nowhere")
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"runqueue run: error: {tmp_path / 'nowhere'}: is not a directory (give a runs folder, a collection or a run folder)"
    bad_limit = run_queue(env, "run", tmp_path, "--time-limit", "soon")
    assert bad_limit.returncode == 2 and "use e.g. 90s, 45m, 2h, 1h30m" in bad_limit.stderr
    bad_sim = run_queue(env, "run", tmp_path, "--simulate-gpus", tmp_path / "missing.json")
    assert bad_sim.returncode == 2 and len(bad_sim.stderr.strip().splitlines()) == 1 and "missing.json" in bad_sim.stderr


def test_runqueue_gpus_subcommand_delegates_to_the_inventory(tmp_path: Path) -> None:
    sim = tmp_path / "gpus.json"
    sim.write_text('[{"uuid": "GPU-cli", "name": "Sim", "memory_total_mb": 1000, "memory_used_mb": 10, "processes": []}]')
    result = run_queue(queue_env(tmp_path), "gpus", "--json", "--simulate-gpus", sim)
    assert result.returncode == 0 and "GPU-cli" in result.stdout

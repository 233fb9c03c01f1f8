#!/usr/bin/env bash
# The queue's GPU path checked on a machine with an NVIDIA driver: what NVML reports, the tests that
# need a real GPU (jobs holding real GPU memory), the NVML benchmark, and the queue and manager
# suites on a machine where NVML answers. Each part has its own time limit, so one hang costs little.
# Usage: scripts/gpu-check.sh [LOG_DIR]      (PYTHON=... to use another interpreter than .venv's)
# The package must be installed into that interpreter's environment (pip install [--no-deps] .), not
# only on PYTHONPATH: two suite tests check the console scripts and `python -S`.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
logs="${1:-$repo/gpu-check-logs}"
py="${PYTHON:-$repo/.venv/bin/python}"
mkdir -p "$logs"
cd "$repo"
export PYTHONUNBUFFERED=1
failed=()

part() {  # part NAME SECONDS COMMAND... : run, log to $logs/NAME.log, remember failures
  local name="$1" limit="$2"
  shift 2
  echo "=== $name ($(date +%T))"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$logs/$name.log" | tail -n 25
  local rc=${PIPESTATUS[0]}
  [[ $rc -eq 0 ]] || { echo "=== $name: exit $rc"; failed+=("$name"); }
}

part machine 30 bash -c "nvidia-smi --query-gpu=name,uuid,memory.total,memory.used,driver_version,mig.mode.current --format=csv;
  $py -c 'import sys, pynvml; print(sys.version.split()[0], \"nvidia-ml-py\", getattr(pynvml, \"__version__\", \"?\"))'"
part gpus 30 "$py" -m runqueue gpus --json
part gpu-tests 150 "$py" -m pytest -p no:cacheprovider -m gpu -v -rs tests/runqueue
part nvml-bench 60 "$py" bench/queue.py --only nvml
# SLURM tests install and start slurmctld: not part of a GPU check. Six at a time where
# pytest-xdist is installed (GPU boxes have the cores; it also shows the tests keep out of each other's way).
parallel=()
"$py" -c 'import xdist' 2>/dev/null && parallel=(-n 6)
part suites 240 "$py" -m pytest -p no:cacheprovider -q -rs "${parallel[@]}" tests/runqueue tests/manager \
  --ignore tests/runqueue/test_slurm_queue.py

if ((${#failed[@]})); then
  echo "gpu-check: FAILED: ${failed[*]} (logs in $logs)"
  exit 1
fi
echo "gpu-check: all parts passed (logs in $logs)"

#!/usr/bin/env bash
# The main job: Lorenz datasets -> run tree -> the queue trains LFADS on them
# (on the GPUs NVML finds, on CPU slots when there is none) -> plots of the fit.
# Usage: scripts/demo.sh [DIR] [--profile quick|seed] [extra runqueue flags...]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/scripts/bootstrap.sh"
venv="${LFADS_VENV:-$repo/.venv}"
dir="${1:-$HOME/lorenz_example}"
shift || true
profile=quick
if [[ "${1:-}" == "--profile" ]]; then profile="$2"; shift 2; fi
export PATH="$venv/bin:$PATH"
collection_dir="$(lfads-manager demo "$dir" --profile "$profile" --print-collection)"
python "$collection_dir/run_lfads.py" "$@"
for run in $(runqueue status "$collection_dir" --json | python -c 'import json,sys; [print(r["path"]) for r in json.load(sys.stdin)["runs"] if r["state"]=="done"]'); do
  lfads-manager report "$run"
done
echo "demo finished: run tree in $collection_dir, plots in each run's report/ folder"

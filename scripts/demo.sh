#!/usr/bin/env bash
# The main job: Lorenz datasets -> run tree -> the queue trains LFADS on them
# (on the GPUs NVML finds, on CPU slots when there is none) -> plots of the fit.
# Usage: scripts/demo.sh [DIR] [--profile quick|seed] [extra runqueue flags...]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/scripts/bootstrap.sh"
venv="${LFADS_VENV:-$repo/.venv}"
dir="$HOME/lorenz_example"
if [[ $# -gt 0 && "$1" != -* ]]; then dir="$1"; shift; fi  # DIR is optional: options may come first
profile=quick
if [[ "${1:-}" == "--profile" ]]; then
  [[ $# -ge 2 ]] || { echo "scripts/demo.sh: --profile needs quick or seed" >&2; exit 2; }
  profile="$2"; shift 2
fi
export PATH="$venv/bin:$PATH"
collection_dir="$(lfads-manager demo "$dir" --profile "$profile" --print-collection)"
python "$collection_dir/run_lfads.py" "$@"
# One path per line (run paths may hold spaces).
runqueue status "$collection_dir" --json \
  | python -c 'import json,sys; [print(r["path"]) for r in json.load(sys.stdin)["runs"] if r["state"]=="done"]' \
  | while IFS= read -r run; do lfads-manager report "$run" || exit 1; done
echo "demo finished: run tree in $collection_dir, plots in each run's report/ folder"

#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment on a fresh machine.
# Idempotent: a second call only re-checks. Usage: scripts/bootstrap.sh [extras]
#   extras defaults to "model,test"; on a machine with an NVIDIA driver, "gpu" replaces "model".
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LFADS_VENV:-$repo/.venv}"
extras="${1:-}"
if [[ -z "$extras" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    extras="gpu,test"
  else
    extras="model,test"
  fi
fi

python_bin="${PYTHON:-python3}"
if ! "$python_bin" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "error: $python_bin is older than Python 3.11; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if ! "$python_bin" -c 'import venv, ensurepip' 2>/dev/null; then
  # Debian splits venv/ensurepip out of the interpreter package.
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  fi
fi

stamp="$venv/.lfads-runqueue-installed"
want="$extras $(sha1sum "$repo/pyproject.toml" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
# The model extra puts about 1.9 GB in the venv (TensorFlow alone 1.3 GB): say so plainly instead
# of failing half-way through pip with ENOSPC.
need_mb=$([[ ",$extras," == *,model,* || ",$extras," == *,gpu,* ]] && echo 2200 || echo 400)
mkdir -p "$venv"
free_mb=$(df -Pm "$venv" | awk 'NR == 2 { print $4 }')
if [[ ! -x "$venv/bin/python" && -n "$free_mb" && "$free_mb" -lt "$need_mb" ]]; then
  echo "error: $venv: only $free_mb MB free on its disk; installing [$extras] needs about $need_mb MB." >&2
  echo "       Free some space there, or set LFADS_VENV to a folder on a roomier disk." >&2
  exit 1
fi
[[ -x "$venv/bin/python" ]] || "$python_bin" -m venv "$venv"
# No second copy of every wheel in ~/.cache/pip: the venv is the only place they are needed.
export PIP_NO_CACHE_DIR=1
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$venv/bin/python" -m pip install -q -e "$repo[$extras]"
echo "$want" > "$stamp"

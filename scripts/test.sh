#!/usr/bin/env bash
# Everything CI runs: install into .venv, lint and type-check, then the whole test suite.
# Usage: scripts/test.sh [pytest args]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/scripts/bootstrap.sh"
venv="${LFADS_VENV:-$repo/.venv}"
cd "$repo"
"$venv/bin/ruff" check .
"$venv/bin/mypy"  # runqueue, manager, lfads, bench: [tool.mypy] in pyproject.toml
PATH="$venv/bin:$PATH" "$venv/bin/python" -m pytest -q "$@"

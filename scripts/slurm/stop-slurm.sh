#!/usr/bin/env bash
# Stop the daemons started by start-slurm.sh, by the PIDs in their pid files (never by name, so
# nobody else's processes are touched). munged is stopped only when start-slurm.sh started it.
# Usage: sudo bash scripts/slurm/stop-slurm.sh
SLURM_TMP=${SLURM_TMP:-/tmp/slurm-ci}
pids=()
for f in "$SLURM_TMP/slurmd.pid" "$SLURM_TMP/slurmctld.pid"; do
  [ -s "$f" ] && pids+=("$(cat "$f")")
done
if [ -e "$SLURM_TMP/munged.started-here" ] && [ -s /run/munge/munged.pid ]; then
  pids+=("$(cat /run/munge/munged.pid)")
  rm -f "$SLURM_TMP/munged.started-here"
fi
[ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null
for _ in $(seq 50); do
  alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break; sleep 0.2
done
for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && kill -9 "$p"; done
rm -f "$SLURM_TMP"/slurmd.pid "$SLURM_TMP"/slurmctld.pid
exit 0

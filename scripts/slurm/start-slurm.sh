#!/usr/bin/env bash
# Start a throw-away single-node SLURM 22.05 cluster with fake GPUs, without systemd.
#
# For the SLURM executor's tests (tests/runqueue/test_slurm_*.py start it from a session fixture)
# and for trying `runqueue run --executor slurm` on a workstation. Idempotent: when the daemons
# already run it only checks that the node is idle (0.05-1 s); from a bare Debian 12 it installs
# the packages first (~5 s with a warm apt mirror). Facts behind each setting:
# /work/shared/reference/slurm-test-cluster.md (pitfalls 1-12).
#
# Usage: sudo bash scripts/slurm/start-slurm.sh      (root required; apt for the first start)
# Knobs: NGPU (default 4), NCPU (default 8), SLURM_TMP (default /tmp/slurm-ci).
# Stop with scripts/slurm/stop-slurm.sh.
set -euo pipefail
NGPU=${NGPU:-4}
NCPU=${NCPU:-8}   # more CPU slots than GPUs, so the GPU count (not the 2 real cores) limits concurrency
SLURM_TMP=${SLURM_TMP:-/tmp/slurm-ci}
t0=$(date +%s.%N)

if [ "$(id -u)" != 0 ]; then
  echo "start-slurm.sh: must run as root (it installs packages and starts munged, slurmctld, slurmd)" >&2
  exit 2
fi

# 1. packages. apt never starts them here (policy-rc.d, or no slurm.conf yet); we start them below.
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

# 2. munge (SLURM's authentication). It must run as user munge with /run/munge owned by munge.
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge "$SLURM_TMP"
chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
chmod 0700 /etc/munge /var/log/munge; chmod 0400 /etc/munge/munge.key; chmod 0755 /run/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
  # Remember that munged is ours: stop-slurm.sh must not kill a munged someone else runs.
  touch "$SLURM_TMP/munged.started-here"
fi
for _ in $(seq 50); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done

# 3. config
HOST=$(hostname -s)
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
# Fresh state on each cold start (job ids restart at 1, so nothing may key on job ids across
# restarts); a running controller keeps its state.
alive "$SLURM_TMP/slurmctld.pid" || rm -rf "$SLURM_TMP/state" "$SLURM_TMP/spool"
mkdir -p /etc/slurm "$SLURM_TMP"/{state,spool,log}
conf=$(mktemp)
cat > "$conf" <<CONF
ClusterName=ci
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Short credential lifetime: a requeued job reruns after ~1 min instead of ~2.5 min.
AuthInfo=cred_expire=10
StateSaveLocation=${SLURM_TMP}/state
SlurmdSpoolDir=${SLURM_TMP}/spool
SlurmctldPidFile=${SLURM_TMP}/slurmctld.pid
SlurmdPidFile=${SLURM_TMP}/slurmd.pid
SlurmctldLogFile=${SLURM_TMP}/log/slurmctld.log
SlurmdLogFile=${SLURM_TMP}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
SchedulerType=sched/backfill
# No slurmdbd, hence no sacct: finished jobs are known from memory (MinJobAge) and the jobcomp file.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=${SLURM_TMP}/log/jobcomp.txt
MinJobAge=3600
# Here, not in SchedulerParameters (silently ignored there in 22.05): a failed parent cancels its dependents.
DependencyParameters=kill_invalid_depend
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
# Start jobs at once (the default delay makes them start on a ~3 s cadence); backfill every second.
SchedulerParameters=batch_sched_delay=0,bf_interval=1
# Lets the node claim more CPUs than the hardware has without being marked INVAL.
SlurmdParameters=config_overrides
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${NCPU} Gres=gpu:${NGPU} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
changed=0
if ! cmp -s "$conf" /etc/slurm/slurm.conf; then
  mv "$conf" /etc/slurm/slurm.conf
  chmod 0644 /etc/slurm/slurm.conf
  changed=1
else
  rm -f "$conf"
fi
# gres/gpu in 22.05 drops GPUs without File= ("Removing file-less GPU") and File= must be a
# character or block device: symlinks to /dev/null pass the stat() check.
for i in $(seq 0 $((NGPU-1))); do ln -sfn /dev/null "$SLURM_TMP/fakegpu$i"; done
cat > /etc/slurm/gres.conf <<CONF
AutoDetect=off
NodeName=${HOST} Name=gpu File=${SLURM_TMP}/fakegpu[0-$((NGPU-1))]
CONF
# Nothing uses cgroups (proctrack/linuxproc + task/none), but slurmd 22.05 loads a cgroup plugin
# at start; IgnoreSystemd matters only on a pure cgroup-v2 host.
cat > /etc/slurm/cgroup.conf <<CONF
CgroupPlugin=autodetect
IgnoreSystemd=yes
CONF

# 4. daemons (they daemonize themselves; their PIDs land in the pid files)
if [ "$changed" = 1 ] && alive "$SLURM_TMP/slurmctld.pid"; then
  scontrol reconfigure || true
fi
alive "$SLURM_TMP/slurmctld.pid" || slurmctld
alive "$SLURM_TMP/slurmd.pid"    || slurmd
st=
for _ in $(seq 100); do
  st=$(sinfo -h -N -o %t 2>/dev/null | head -1 || true)
  case "$st" in idle|mix|mixed|alloc|allocated) break ;; esac
  sleep 0.2
done
case "$st" in
  idle|mix|mixed|alloc|allocated) ;;
  *)
    echo "start-slurm.sh: the slurm node is not up (state '$st')" >&2
    scontrol show node >&2 || true
    tail -n 30 "$SLURM_TMP"/log/*.log >&2 || true
    exit 1 ;;
esac
sinfo -N -o '%N %t %c %G'
awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "slurm up in %.1f s\n", b-a}'

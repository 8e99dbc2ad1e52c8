#!/usr/bin/env bash
# A real one-node SLURM cluster (munged, slurmctld, slurmd) for the tests, in a scratch folder.
#   tests/cluster/slurm.sh start DIR   -> writes DIR/slurm.conf, starts the daemons, waits for the node
#   tests/cluster/slurm.sh stop DIR    -> stops them
# Needs root and Debian's slurmctld slurmd slurm-client munge (make deps installs them).
set -euo pipefail
action=${1:?start|stop}
dir=${2:?scratch directory}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf="$dir/slurm.conf"
# shellcheck source=tests/cluster/common.sh
source "$(dirname "$0")/common.sh"

start() {
  munge_up
  host=$(hostname -s)
  mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  # nproc honours OMP_NUM_THREADS (make test sets 1 for its pytest workers): the cores, not that.
  cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
  mkdir -p "$dir/state" "$dir/spool"
  cat > "$conf" <<CONF
ClusterName=crossres
SlurmctldHost=$host
$(slurm_conf_shared "$dir")
SlurmdSpoolDir=$dir/spool
SlurmdPidFile=$dir/slurmd.pid
SlurmdLogFile=$dir/slurmd.log
KillWait=10
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
  export SLURM_CONF=$conf
  slurmctld -f "$conf" -i
  slurmd -f "$conf"
  for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      echo "slurm up: SLURM_CONF=$conf"; return 0
    fi
    sleep 1
  done
  echo "slurm did not come up; logs in $dir" >&2
  tail -20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
  exit 1
}

stop() {
  for pid in "$dir/slurmd.pid" "$dir/slurmctld.pid"; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  sleep 1
}

"$action"

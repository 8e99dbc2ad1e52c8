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

start() {
  for bin in munged slurmctld slurmd sbatch scontrol; do
    command -v "$bin" >/dev/null || { echo "missing $bin (apt-get install slurmctld slurmd slurm-client munge)" >&2; exit 3; }
  done
  host=$(hostname -s)
  mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  cpus=$(nproc)
  mkdir -p "$dir/state" "$dir/spool" /etc/munge /run/munge /var/lib/munge /var/log/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
  chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
  if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- munged
  fi
  cat > "$conf" <<CONF
ClusterName=crossres
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire + 1 s before it may start again (default 120 s, least 5).
AuthInfo=cred_expire=5
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobRequeue=1
# The scheduler and backfill loops run every 2 s (defaults 60 s and 30 s): a requeued job
# starts as soon as it is eligible, not at the next backfill pass.
SchedulerParameters=defer_batch,sched_interval=2,bf_interval=2
KillWait=10
MinJobAge=600
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

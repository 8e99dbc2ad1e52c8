#!/usr/bin/env bash
# Two hosts on one machine for the multi-node tests: hosts node1 and node2 as network
# namespaces, each with its own address on a bridge (the data network) and a second interface
# that reaches nothing (a management address), host names that resolve inside both from a hosts
# file of the cluster's own (never the machine's /etc/hosts), and a SLURM cluster across them:
# slurmctld on node1, one slurmd per host (munged is shared: its socket is on the shared file
# system). The namespaces, the bridge, the veths and the data subnet are named after the
# cluster's own id (DIR/cluster.env), so that two test runs on one machine go side by side.
#   tests/cluster/hosts.sh start DIR   -> DIR/slurm.conf, DIR/hosts, DIR/hosts-mgmt,
#                                         DIR/cluster.env; daemons up
#   tests/cluster/hosts.sh stop DIR    -> every process of both hosts ended, namespaces removed
#   tests/cluster/hosts.sh ACTION DIR HOST   -> a host lost and back (the actions at the end)
#   tests/cluster/on_host.sh node2 DIR/hosts CMD...   runs CMD on a host
# Needs root, iproute2 and util-linux's unshare; Debian's slurmctld slurmd slurm-client munge.
set -euo pipefail
action=${1:?start|stop}
dir=${2:?scratch directory}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/cluster/common.sh
source "$here/common.sh"
HOSTS=(node1 node2)

# The cluster's id and data subnet: made at start (a subnet 10.78.N.0/24 that no interface of
# this machine has yet), read back by every later call.
if [ ! -f "$dir/cluster.env" ]; then
  [ "$action" = start ] || { echo "no cluster in $dir (start it first)" >&2; exit 2; }
  used=$(ip -o -4 addr show | grep -o '10\.78\.[0-9]*\.' | sort -u || true)
  for n in $(shuf -i 1-250); do
    grep -qx "10\.78\.$n\." <<<"$used" || break
  done
  id=$(head -c3 /dev/urandom | od -An -tx1 | tr -d ' \n')
  printf 'CLUSTER_ID=%s\nDATA_NET=10.78.%s\n' "$id" "$n" > "$dir/cluster.env"
fi
# shellcheck disable=SC1091
source "$dir/cluster.env"
BRIDGE=crx$CLUSTER_ID-br
netns() { echo "crx$CLUSTER_ID-$1"; }
veth() { echo "crx$CLUSTER_ID-${1#node}"; }
# The data network, and one management subnet per host (so that no host has a route to another's
# management address: a connection that picks it fails at once instead of hanging).
data_addr() { echo "$DATA_NET.1$1"; }
mgmt_addr() { echo "10.79.$1.1$1"; }

start() {
  stop_hosts
  ip link add "$BRIDGE" type bridge
  ip addr add "$DATA_NET.1/24" dev "$BRIDGE"  # the test's own side, for sbatch and squeue
  ip link set "$BRIDGE" up
  printf '127.0.0.1 localhost\n' > "$dir/hosts"
  printf '127.0.0.1 localhost\n' > "$dir/hosts-mgmt"
  for i in 1 2; do
    host=node$i
    ns=$(netns "$host")
    ip netns add "$ns"
    ip link add "$(veth "$host")" type veth peer name eth0 netns "$ns"
    ip link set "$(veth "$host")" master "$BRIDGE" up
    ip -n "$ns" addr add "$(data_addr $i)/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    # The management interface: a veth pair of the host's own, which leads nowhere (no dummy
    # interfaces on every kernel).
    ip -n "$ns" link add mgmt0 type veth peer name mgmt0-end
    ip -n "$ns" addr add "$(mgmt_addr $i)/24" dev mgmt0
    ip -n "$ns" link set mgmt0-end up
    ip -n "$ns" link set mgmt0 up
    echo "$(data_addr $i) $host" >> "$dir/hosts"
    # As on many clusters: every host name resolves to its management address.
    echo "$(mgmt_addr $i) $host" >> "$dir/hosts-mgmt"
  done
  start_slurm
}

start_slurm() {
  munge_up
  mkdir -p "$dir/state" "$dir/spool-node1" "$dir/spool-node2"
  mem_mb=$(( ($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048) / 2 ))
  # nproc honours OMP_NUM_THREADS (make test sets 1 for its pytest workers): the cores, not that.
  cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
  cat > "$dir/slurm.conf" <<CONF
ClusterName=crossres2
SlurmctldHost=node1($(data_addr 1))
$(slurm_conf_shared "$dir")
SlurmdSpoolDir=$dir/spool-%n
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmdLogFile=$dir/slurmd-%n.log
# A lost node is declared down within seconds (defaults: 300 s), and its job requeued.
SlurmdTimeout=10
SlurmctldTimeout=10
MessageTimeout=5
KillWait=5
NodeName=node1 NodeAddr=$(data_addr 1) CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
NodeName=node2 NodeAddr=$(data_addr 2) CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=node1,node2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
  "$here/on_host.sh" node1 "$dir/hosts" slurmctld -f "$dir/slurm.conf" -i
  for host in "${HOSTS[@]}"; do start_slurmd "$host"; done
  export SLURM_CONF=$dir/slurm.conf
  for _ in $(seq 60); do
    if [ "$(sinfo -h -N -o %T 2>/dev/null | grep -cE '^(idle|mixed|allocated)')" = 2 ]; then
      echo "two hosts up: SLURM_CONF=$dir/slurm.conf"; return 0
    fi
    sleep 1
  done
  echo "the two-host cluster did not come up; logs in $dir" >&2
  sinfo -N >&2 || true
  tail -20 "$dir"/slurm*.log >&2 || true
  exit 1
}

start_slurmd() {
  "$here/on_host.sh" "$1" "$dir/hosts" slurmd -N "$1" -f "$dir/slurm.conf"
}

stop_hosts() {
  for host in "${HOSTS[@]}"; do
    ns=$(netns "$host")
    if ip netns list | grep -qw "$ns"; then
      pids=$(ip netns pids "$ns" || true)
      [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
      ip netns del "$ns" || true
    fi
    ip link del "$(veth "$host")" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
}

# A job's processes on HOST: everything in its namespace but the SLURM daemons, which the
# session's other tests still need.
job_pids() {
  for pid in $(ip netns pids "$(netns "$1")"); do
    case "$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" in
      slurmctld*|slurmd*|slurmstepd*|*slurmscriptd*|"") ;;
      *) echo "$pid" ;;
    esac
  done
}

host=${3:-}
case "$action" in
  start) start ;;
  stop) stop_hosts ;;
  # The job's processes on HOST killed at once (the node lost, its SLURM daemons kept).
  kill-job) pids=$(job_pids "${host:?host}"); [ -z "$pids" ] || kill -9 $pids ;;
  # HOST cut off from the network (no FIN, no reset: its packets go nowhere), and back.
  cut) ip -n "$(netns "${host:?host}")" link set eth0 down ;;
  link) ip -n "$(netns "${host:?host}")" link set eth0 up ;;
  # A rank frozen: SIGSTOP to the job's python processes on HOST that run the trainer (not
  # srun or mpirun, whose command lines name it too); their pids, one a line.
  freeze) for pid in $(job_pids "${host:?host}"); do
      cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)
      if [[ $cmd =~ ^[^\ ]*python[0-9.]*\ (-u\ )?-m\ crossres_dist\.train ]]; then
        kill -STOP "$pid" && echo "$pid"
      fi
    done ;;
  # The job's processes still on HOST, one a line (what a test expects to be none).
  leftovers) for pid in $(job_pids "${host:?host}"); do
      echo "$pid $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | cut -c1-200)"; done ;;
  *) echo "unknown action $action" >&2; exit 2 ;;
esac

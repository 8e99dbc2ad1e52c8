#!/usr/bin/env bash
# Several nodes with torchrun's c10d rendezvous; run the same command on every node:
#   launch/multinode_torchrun.sh NNODES NPROC_PER_NODE HOST:PORT JOB_ID --config FILE [overrides]
# NNODES is a number, or MIN:MAX for an elastic job: one that goes on with MIN nodes when the
# others are lost and takes them back when they return (docs/operations.md).
# HOST:PORT is one of the nodes, by a name or address that every node reaches; its agent hosts
# the rendezvous store. torchrun restarts the whole group up to MAX_RESTARTS times (default 3) if
# a worker dies; the run resumes from its last checkpoint.
#
# Each node works out, before torchrun starts, which of its addresses reaches HOST (the route the
# kernel would take): torchrun gets it as --local-addr, the address the other nodes then use for
# this node (by default its host name, which on many clusters resolves to a management address
# they cannot reach), and the node whose own address HOST is hosts the store (is_host; torchrun's
# guess compares host names and misses an address on a second interface).
#
# How long a lost node can keep the others (docs/operations.md, "Running across nodes"):
# - JOIN_TIMEOUT (default 600 s, torch's): how long an agent waits in a rendezvous for the
#   other nodes, at the start and after a restart; past it the agent ends.
# - STORE_LOST_S (default 60 s): how long the rendezvous store may stay silent, once it has
#   answered, before this node's agent and workers are ended (crossres_dist/distributed/
#   supervise.py: torch's store client can wait on a cut-off host for ever).
# - LAST_CALL_S (default 30 s, torch's): once MIN nodes of an elastic job have joined a
#   rendezvous, how much longer it waits for more before the group starts.
# - KEEP_ALIVE_S (default 5 s, torch's): an agent's heartbeat to the rendezvous; a node with no
#   heartbeat for 3 of them is dropped, and the others' next rendezvous goes on without it.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 NNODES NPROC_PER_NODE HOST:PORT JOB_ID --config FILE [overrides]" >&2
  exit 2
fi
nnodes=$1 nproc=$2 endpoint=$3 job_id=$4
shift 4
host=${endpoint%:*}
route=$(python -m crossres_dist.distributed route "$host") || exit 2
read -r interface local_addr is_local <<<"$route"
is_host=false
[ "$is_local" = 1 ] && is_host=true
echo "launch: $(hostname) reaches $host through $interface ($local_addr); hosts the store: $is_host"
# The supervisor's probes fail quietly (it says what their failure means in one line); torchrun
# and the workers get the caller's TORCH_CPP_LOG_LEVEL back.
# TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1: a new rendezvous round writes its workers' MASTER_ADDR
# again. With the store shared (torch's default) the agent of node rank 0 keeps the first round's
# and writes nothing, so a node that joins a running job waits for it until the store's timeout
# and the job ends (tests/integration/test_lost_hosts.py; pytorch/pytorch#135712, #147064).
TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 \
CROSSRES_CALLER_CPP_LOG_LEVEL=${TORCH_CPP_LOG_LEVEL:-} TORCH_CPP_LOG_LEVEL=FATAL \
  exec python -m crossres_dist.distributed supervise "$endpoint" --lost-after "${STORE_LOST_S:-60}" \
  -- torchrun --nnodes="$nnodes" --nproc_per_node="$nproc" --rdzv_backend=c10d \
  --rdzv_endpoint="$endpoint" --rdzv_id="$job_id" \
  --rdzv_conf="is_host=$is_host,join_timeout=${JOIN_TIMEOUT:-600},last_call_timeout=${LAST_CALL_S:-30},keep_alive_interval=${KEEP_ALIVE_S:-5},keep_alive_max_attempt=3" \
  --local-addr="$local_addr" --max_restarts="${MAX_RESTARTS:-3}" \
  -m crossres_dist.train "$@"

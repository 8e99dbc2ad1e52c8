#!/usr/bin/env bash
# Several nodes with torchrun's c10d rendezvous; run the same command on every node:
#   launch/multinode_torchrun.sh NNODES NPROC_PER_NODE HOST:PORT JOB_ID --config FILE [overrides]
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
CROSSRES_CALLER_CPP_LOG_LEVEL=${TORCH_CPP_LOG_LEVEL:-} TORCH_CPP_LOG_LEVEL=FATAL \
  exec python -m crossres_dist.distributed supervise "$endpoint" --lost-after "${STORE_LOST_S:-60}" \
  -- torchrun --nnodes="$nnodes" --nproc_per_node="$nproc" --rdzv_backend=c10d \
  --rdzv_endpoint="$endpoint" --rdzv_id="$job_id" \
  --rdzv_conf="is_host=$is_host,join_timeout=${JOIN_TIMEOUT:-600}" \
  --local-addr="$local_addr" --max_restarts="${MAX_RESTARTS:-3}" \
  -m crossres_dist.train "$@"

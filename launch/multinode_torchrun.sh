#!/usr/bin/env bash
# Several nodes with torchrun's c10d rendezvous; run the same command on every node:
#   launch/multinode_torchrun.sh NNODES NPROC_PER_NODE HOST:PORT JOB_ID --config FILE [overrides]
# HOST:PORT is any node reachable by all (its agent hosts the rendezvous store). torchrun restarts
# the whole group up to MAX_RESTARTS times (default 3) if a worker dies; the run resumes from its
# last checkpoint.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 NNODES NPROC_PER_NODE HOST:PORT JOB_ID --config FILE [overrides]" >&2
  exit 2
fi
nnodes=$1 nproc=$2 endpoint=$3 job_id=$4
shift 4
exec torchrun --nnodes="$nnodes" --nproc_per_node="$nproc" --rdzv_backend=c10d \
  --rdzv_endpoint="$endpoint" --rdzv_id="$job_id" --max_restarts="${MAX_RESTARTS:-3}" \
  -m crossres_dist.train "$@"

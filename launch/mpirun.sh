#!/usr/bin/env bash
# MPI launch (Open MPI); rank, size and local rank come from mpi4py, the rendezvous from rank 0:
#   launch/mpirun.sh NP [--hostfile FILE] -- --config FILE [overrides]
set -euo pipefail
np=${1:?usage: launch/mpirun.sh NP [mpirun options] -- --config FILE [overrides]}
shift
mpi_args=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do mpi_args+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
extra=()
if [ "$(id -u)" = 0 ]; then extra+=(--allow-run-as-root); fi
exec mpirun -np "$np" "${extra[@]}" --oversubscribe --bind-to none "${mpi_args[@]}" \
  python -m crossres_dist.train dist.launcher=mpi "$@"

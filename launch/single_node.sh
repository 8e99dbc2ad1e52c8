#!/usr/bin/env bash
# One node, one process per GPU (or per CPU socket on a machine without GPUs):
#   launch/single_node.sh NPROC --config configs/vggface2_senet50.yaml [section.key=value ...]
set -euo pipefail
nproc=${1:?usage: launch/single_node.sh NPROC --config FILE [overrides]}
shift
exec torchrun --standalone --nproc_per_node="$nproc" -m crossres_dist.train "$@"

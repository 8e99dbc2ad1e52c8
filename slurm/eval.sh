#!/usr/bin/env bash
# Evaluation as a job array over checkpoints x probe resolutions (gallery at full resolution):
#   sbatch --array=0-$((C * R - 1)) slurm/eval.sh CONFIG CHECKPOINTS.txt "8 16 32" OUT [evaluate options]
# CHECKPOINTS.txt: one checkpoint path per line (C lines); R = number of resolutions. Element k
# evaluates checkpoint k / R at resolution k % R (all tasks of the element extract features
# together) into OUT/<checkpoint name>-<index>/r<res>/. Any protocol, e.g. IJB-C at 5 resolutions:
#   sbatch --array=0-$((C * 5 - 1)) slurm/eval.sh CONFIG ckpts.txt "8 16 24 32 64" OUT \
#     --protocol ijbc --root /data/IJBC --aligned-cache OUT/aligned
# A preempted element resumes its extraction from OUT/.../cache when requeued.
#SBATCH --job-name=crossres-eval
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=8
#SBATCH --output=logs/%x-%A_%a.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
# shellcheck disable=SC1091
[ -f "${CROSSRES_VENV:-.venv}/bin/activate" ] && source "${CROSSRES_VENV:-.venv}/bin/activate"
if [ $# -lt 4 ]; then
  echo "usage: sbatch --array=0-K slurm/eval.sh CONFIG CHECKPOINTS.txt \"8 16 32\" OUT [options]" >&2
  exit 2
fi
config=$1 list=$2 out=$4
read -r -a resolutions <<< "$3"
shift 4
mapfile -t checkpoints < <(grep -v '^\s*$' "$list")
index=${SLURM_ARRAY_TASK_ID:?submit with --array}
total=$(( ${#checkpoints[@]} * ${#resolutions[@]} ))
if [ "$index" -ge "$total" ]; then
  echo "array index $index out of range: ${#checkpoints[@]} checkpoints x ${#resolutions[@]} resolutions = $total" >&2
  exit 2
fi
checkpoint=${checkpoints[$((index / ${#resolutions[@]}))]}
resolution=${resolutions[$((index % ${#resolutions[@]}))]}
name="$(basename "$(dirname "$(dirname "$checkpoint")")")-$((index / ${#resolutions[@]}))"
srun --kill-on-bad-exit=1 python -m crossres_dist.evaluate --config "$config" \
  --checkpoint "$checkpoint" --name "$name" --resolutions full "$resolution" \
  --tsne-identities 0 --out "$out/$name/r$resolution" "$@"

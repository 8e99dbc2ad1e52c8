#!/usr/bin/env bash
# One grid point of a sweep per array element:
#   sbatch --array=0-K slurm/sweep.sh configs/sweep_<name>.yaml [section.key=value ...]
#   python -m tools.sweep size configs/sweep_<name>.yaml      (K + 1, the number of points)
#   python -m tools.sweep summary configs/sweep_<name>.yaml   (the table of results)
#SBATCH --job-name=crossres-sweep
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=8
#SBATCH --signal=USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=logs/%x-%A_%a.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
# shellcheck disable=SC1091
[ -f "${CROSSRES_VENV:-.venv}/bin/activate" ] && source "${CROSSRES_VENV:-.venv}/bin/activate"
sweep=${1:?usage: sbatch --array=0-K slurm/sweep.sh configs/sweep_NAME.yaml [overrides]}
shift
index=${SLURM_ARRAY_TASK_ID:?submit with --array}
listing=$(python -m tools.sweep point "$sweep" "$index" "$@") || exit 2
mapfile -t point <<< "$listing"
echo "grid point $index: ${point[*]}"
exec bash slurm/train.sh "${point[@]}" "$@"

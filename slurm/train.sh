#!/usr/bin/env bash
# Train on N nodes x G GPUs under SLURM, one task per GPU:
#   sbatch slurm/train.sh --config configs/vggface2_senet50.yaml [section.key=value ...]
#   sbatch --nodes=4 --time=2-00:00:00 slurm/train.sh --config ...     (change resources with sbatch options)
# Ahead of the time limit SLURM sends SIGUSR1 (--signal); every rank then checkpoints at the next
# step boundary and exits with code 3, and this script requeues the job (array-aware). The requeued
# job keeps its job id, so it finds the same run directory and resumes from its last checkpoint.
# A rank lost mid-run (its node, its process, frozen or cut off) ends the others within
# dist.watchdog_s; this script then requeues the job too, where it may be requeued (--requeue, as
# below) and has been requeued fewer than CROSSRES_MAX_REQUEUES times (default 3).
#SBATCH --job-name=crossres
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=8
#SBATCH --signal=USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=logs/%x-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
# shellcheck disable=SC1091
[ -f "${CROSSRES_VENV:-.venv}/bin/activate" ] && source "${CROSSRES_VENV:-.venv}/bin/activate"
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
job_tag=${SLURM_JOB_ID}
if [ -n "${SLURM_ARRAY_JOB_ID:-}" ]; then job_tag="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"; fi
echo "job $job_tag on $(scontrol show hostnames "$SLURM_JOB_NODELIST" | paste -sd,), restart ${SLURM_RESTART_COUNT:-0}"

# Rank 0 writes this file (on the shared file system) when it stopped for a preemption after
# writing a checkpoint; srun's exit code alone is not enough (it may kill the slower ranks).
export CROSSRES_PREEMPTED_FILE="$PWD/logs/.preempted-$job_tag"
# ... and this one when a rank ended because another was lost (the line that names it).
export CROSSRES_LOST_FILE="$PWD/logs/.lost-$job_tag"
rm -f "$CROSSRES_PREEMPTED_FILE" "$CROSSRES_LOST_FILE"
set +e
# run.name defaults to the job (stable across requeues); a run.name=... in "$@" wins.
srun --kill-on-bad-exit=1 python -m crossres_dist.train "run.name=${SLURM_JOB_NAME}-${job_tag}" "$@"
code=$?
set -e
if [ -f "$CROSSRES_PREEMPTED_FILE" ]; then
  rm -f "$CROSSRES_PREEMPTED_FILE"
  echo "preempted (exit $code): checkpoint written; requeueing $job_tag"
  scontrol requeue "$job_tag"
  exit 0
fi
if [ -f "$CROSSRES_LOST_FILE" ]; then
  rm -f "$CROSSRES_LOST_FILE"
  requeues=${SLURM_RESTART_COUNT:-0} most=${CROSSRES_MAX_REQUEUES:-3}
  if ! scontrol show job "$SLURM_JOB_ID" | grep -q "Requeue=1"; then
    echo "a rank was lost (srun's exit $code): not requeued (the job was submitted with --no-requeue)"
  elif [ "$requeues" -ge "$most" ]; then
    echo "a rank was lost (srun's exit $code): not requeued (requeued $requeues times already: CROSSRES_MAX_REQUEUES)"
  else
    echo "a rank was lost (srun's exit $code): requeueing $job_tag (requeue $((requeues + 1)) of $most)"
    scontrol requeue "$job_tag"
    exit 0
  fi
fi
exit "$code"

#!/usr/bin/env bash
# The GPU checks, as one script (run on a machine with one NVIDIA GPU; DALI is not needed there,
# the trainer falls back to the torchvision twin): the training-step benchmark with NCCL, bf16,
# a DDP student and an FSDP2 teacher, then the real trainer end to end on the embedded faces.
#   OUT=/tmp/gpu bash bench/gpu_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
log="$OUT/gpu_check.log"
exec > >(tee -a "$log") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
tr="torchrun --standalone --nproc_per_node=1"
for sharding in full none; do
  $tr bench/step.py --batch 128 --steps 30 --sharding "$sharding" --json "$OUT/step_$sharding.json"
done
$tr bench/step.py --batch 128 --steps 30 --sharding full --compile --json "$OUT/step_full_compiled.json"
$tr bench/step.py --batch 128 --steps 30 --sharding full --precision fp16 --json "$OUT/step_fp16.json"
common="--config configs/demo.yaml data.backend=torchvision data.num_threads=4 run.output_dir=$OUT/runs train.progress_bar=false"
$tr -m crossres_dist.train $common run.stage=pretrain run.name=teacher teacher.checkpoint= \
  model.bn_momentum=0.1 optim.lr=0.1 train.max_steps=40 train.val_every=40
$tr -m crossres_dist.train $common run.name=student teacher.sharding=full \
  teacher.checkpoint="$OUT/runs/teacher/checkpoints/best.pt" train.max_steps=40 train.val_every=20
$tr -m crossres_dist.train $common run.name=student-fp16 teacher.sharding=full train.precision=fp16 \
  teacher.checkpoint="$OUT/runs/teacher/checkpoints/best.pt" train.max_steps=20 train.val_every=20
for run in student student-fp16; do
  cp "$OUT/runs/$run/results.json" "$OUT/e2e_$run.json" 2>/dev/null || echo "no results for $run"
done
rm -rf "$OUT/runs"

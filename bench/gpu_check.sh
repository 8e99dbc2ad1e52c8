#!/usr/bin/env bash
# The GPU throughput check (issue 13), as one script on one GPU, DALI on the device.
#
# Prepare on the CPU machine, in the project's root (nothing of it is committed):
#   bash ../shared/tools/gpu-dali/pack.sh                 # .dev/dali-part-aa, -ab, -ac
#   mkdir -p .dev/lfw && cp -r ../shared/data/lfw_deepfunneled_10to19/. .dev/lfw/   # 15 MB
# Then three device runs back to back, each carrying one part, with the command
#   mkdir -p /tmp/stash && cp .dev/dali-part-* /tmp/stash/
# then the work in two runs carrying .dev/lfw (each within one run's 10 minutes, warm machine):
#   PART=1 OUT=$OUT bash bench/gpu_check.sh    (micro-batch 256: eager, compiled, teacher too)
#   PART=2 OUT=$OUT bash bench/gpu_check.sh    (replicated teacher, paired, micro-batch 32, step.py)
#
# It writes $OUT/h200_*.json (copy them to bench/results/) and $OUT/gpu_check.log:
#   e2e_b256_*  the trainer end to end at micro-batch 256 (global 256, FSDP2 teacher, bf16):
#               eager, compiled, compiled with the teacher compiled too, replicated teacher;
#   e2e_b32_*   the same at micro-batch 32 (accumulation 8), eager and with CUDA graphs;
#   step_b256   bench/step.py at the same settings (the loop's overhead is e2e against it).
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
DATA=${DATA:-.dev/lfw}
mkdir -p "$OUT"
S=/tmp/site
if [ ! -d $S/nvidia/dali ]; then
  mkdir -p $S && cat /tmp/stash/dali-part-* | xz -d -T0 | tar -x -C $S || exit 2
fi
export PYTHONPATH=$S:$PWD LD_LIBRARY_PATH=$S/nvidia/cu13/lib:$S/nvidia/nvimgcodec:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8 PYTHONWARNINGS=ignore
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, nvidia.dali as d; print('torch', torch.__version__, 'dali', d.__version__)" || exit 2

tr="torchrun --standalone --nproc_per_node=1"
cfg="--config configs/vggface2_senet50.yaml --data $DATA"
# The issue's targets are for the paper's step (each face once); paired batches (the config's
# default since the recipe study) cost a second student pass per face: a row of their own.
common="data.backend=dali data.num_threads=8 train.log_every=20 train.sync_every=20 method.paired=false"
e2e() {  # name, micro-batch, steps, then overrides
  local name=$1 micro=$2 steps=$3
  shift 3
  timeout 150 $tr bench/e2e.py $cfg --steps "$steps" --warmup 10 --json "$OUT/h200_e2e_$name.json" \
    $common data.micro_batch="$micro" "$@" || echo "e2e $name failed or timed out"
}
PART=${PART:-all}
if [ "$PART" != 2 ]; then
  e2e b256_eager 256 30
  e2e b256_compiled 256 30 model.compile=true
  e2e b256_compiled_teacher 256 30 model.compile=true teacher.compile=true
fi
if [ "$PART" != 1 ]; then
  e2e b256_replicated 256 30 model.compile=true teacher.sharding=none
  e2e b256_paired 256 30 model.compile=true method.paired=true
  e2e b32_eager 32 12
  e2e b32_cudagraphs 32 12 model.compile=true model.compile_mode=reduce-overhead
  timeout 90 $tr bench/step.py --batch 256 --steps 20 --sharding full --compile \
    --json "$OUT/h200_step_b256.json" || echo "step.py failed or timed out"
fi
python3 - "$OUT" <<'EOF'
import json, pathlib, sys
for f in sorted(pathlib.Path(sys.argv[1]).glob("h200_*.json")):
    r = json.loads(f.read_text())
    print(f"{f.stem:32s} {r['images_per_s']:8.0f} img/s  mfu {r.get('mfu') or 0:.3f}  "
          f"mem {r.get('max_memory_gib', 0):.1f} GiB")
EOF

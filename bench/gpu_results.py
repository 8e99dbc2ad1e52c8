"""Publishes the GPU throughput check (bench/gpu_check.sh) as results/gpu-h200/.

    python bench/gpu_results.py --before DIR [DIR ...] --after DIR [DIR ...] [--allow-dirty]

Each DIR is what one device run of gpu_check.sh wrote ($OUT: h200_*.json, env.json with the
commit measured and the device's versions). `--before` runs measured the code before a change,
`--after` runs the code after it; the table shows both, with the commit of each, and the
profile tables (h200_*.profile.txt) are kept beside the result.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools import published as results

LFW = Path(__file__).resolve().parent.parent.parent / "shared/data/lfw_deepfunneled_10to19"
# What each file measured (gpu_check.sh's names), in the table's order.
ROWS = {
    "e2e_b256_sharded": "trainer end to end, micro-batch 256, teacher.sharding=full, eager",
    "e2e_b256_replicated": "trainer end to end, micro-batch 256, teacher.sharding=none, eager",
    "e2e_b256_compiled": "trainer end to end, micro-batch 256, model.compile=true",
    "e2e_b256_teacher_compiled": "trainer end to end, micro-batch 256, model.compile and "
    "teacher.compile",
    "e2e_recipe_paired": "the shipped recipe (paired), micro-batch 256, eager",
    "e2e_recipe_compiled": "the shipped recipe (paired), micro-batch 256, model.compile=true",
    "e2e_b32_sharded": "trainer end to end, micro-batch 32 x 8 accumulation, eager",
    "e2e_b32_cudagraphs": "trainer end to end, micro-batch 32 x 8, reduce-overhead (CUDA graphs)",
    "e2e_r50_arcface_pfc": "iResNet-50 at 112 px, ArcFace + PartialFC 0.2, RecordIO, eager",
    "step_b256": "bench/step.py, batch 256, synthetic inputs, eager",
    "step_b256_compiled": "bench/step.py, batch 256, synthetic inputs, compiled",
}


def read(dirs: list[Path], when: str) -> list[dict]:
    rows = []
    for d in dirs:
        env = json.loads((d / "env.json").read_text())
        for f in sorted(d.glob("h200_*.json")):
            if f.name.endswith(".profile.json"):
                continue
            name = f.stem.removeprefix("h200_").removesuffix("_noprofile")
            rows.append({"name": name, "when": when, "env": env, **json.loads(f.read_text())})
    return rows


def markdown(rows: list[dict]) -> str:
    order = list(ROWS)
    rows = sorted(rows, key=lambda r: (order.index(r["name"]), r["when"] != "before"))
    lines = [
        "One NVIDIA H200, one process (torchrun, NCCL), SE-ResNet-50 student and teacher at 224 px, "
        "8631 classes, bf16, DALI decoding on the device (LFW JPEGs), the paper's step "
        "(`method.paired=false`), global batch 256; 20 timed optimizer steps after 8 warm-up "
        "steps (compilation included in the warm-up).",
        "",
        "| what | code | images/s | step (ms) | MFU | peak memory (GiB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        step = r.get("mean_step_s") or r.get("median_step_s")
        lines.append(
            f"| {ROWS[r['name']]} | {r['when']} ({r['env']['commit'][:7]}) | "
            f"{r['images_per_s']:,.0f} | {1000 * step:.0f} | {100 * (r.get('mfu') or 0):.1f}% | "
            f"{r.get('max_memory_gib', 0):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, nargs="*", default=[])
    parser.add_argument("--after", type=Path, nargs="+", required=True)
    parser.add_argument("--allow-dirty", action="store_true")
    args = parser.parse_args()
    rows = read(args.before, "before") + read(args.after, "after")
    env = json.loads((args.after[0] / "env.json").read_text())
    prov = results.capture(
        "COMMIT=<sha> OUT=$OUT bash bench/gpu_check.sh (ONLY=... for the second runs); "
        "python bench/gpu_results.py --before ... --after ...",
        [LFW] if LFW.is_dir() else [],
        allow_dirty=args.allow_dirty,
    )
    # The figures were measured on the device machine, with its versions: those are recorded.
    prov["commit"] = env["commit"]
    prov["commits_measured"] = sorted({r["env"]["commit"] for r in rows})
    prov["versions"] = {k: env[k] for k in ("python", "torch", "dali", "numpy", "cuda")}
    prov["hardware"] = {"gpu": env["gpu"], "cpus": env["cpu_count"]}
    prov["wall_s"] = None
    prov.pop("started")
    folder = results.publish("gpu-h200", markdown(rows), {"rows": rows}, prov)
    for d in [*args.before, *args.after]:
        for f in d.glob("*.profile.txt"):
            shutil.copy(f, folder / f"{f.stem.removeprefix('h200_')}.txt")
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()

"""What a fixed centre crop of LFW's deep-funnelled images costs dlib's face network against the
aligned chips it was trained on (issue 46): the same 600 LFW-style pairs of the 2-9 people
(those of the dlib study, bench/recipe_study.py), verified with the probe side at r px.

    python bench/teacher_alignment.py --aligned runs/aligned/lfw_2to9 \\
        --raw ../shared/data/lfw_deepfunneled_2to9

Prints a markdown table (``make teacher-alignment`` publishes it as results/teacher-alignment).
Rows: dlib's 150 px chips (crossres-align); the central 150 x 150 of the 250 x 250 image at its
own scale (a face of about the chip's size, not rotated or scaled to fit); the whole 250 px image
scaled to 150.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from crossres_dist.verification import write_bin  # noqa: E402
from crossres_dist.verification.pairs import lfw_style_pairs  # noqa: E402

RESOLUTIONS = ("8", "12", "16", "24", "32", "full")
TEACHER = "dlib_face_recognition_resnet_model_v1"


def raw_of(chip: str, aligned: Path, raw: Path) -> Path:
    """The deep-funnelled JPEG an aligned chip was made from (identity/stem.png -> .jpg)."""
    relative = Path(chip).resolve().relative_to(aligned.resolve())
    return raw / relative.with_suffix(".jpg")


def verify(bin_path: Path, out: Path, resize: int, crop: int) -> dict:
    command = [
        sys.executable, "-m", "crossres_dist.evaluate", "--config", "configs/dlib_recipe.yaml",
        f"data.resize_shorter={resize}", f"data.crop={crop}", "--checkpoint", TEACHER,
        "--name", "teacher", "--protocol", "verification", "--root", str(bin_path),
        "--resolutions", *RESOLUTIONS, "--no-plots", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    subprocess.run(command, cwd=REPO, check=True, env=env, stdout=subprocess.DEVNULL)
    (scores,) = json.loads((out / "results.json").read_text())["models"]["teacher"][
        "verification"
    ].values()
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--aligned", type=Path, required=True, help="crossres-align's output")
    parser.add_argument("--raw", type=Path, required=True, help="the deep-funnelled originals")
    parser.add_argument("--pairs", type=int, default=600)
    args = parser.parse_args()
    pairs = lfw_style_pairs(args.aligned, args.pairs, seed=0)
    same = [s for _, _, s in pairs]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        chips = tmp / "aligned.bin"
        write_bin(chips, [Path(p).read_bytes() for a, b, _ in pairs for p in (a, b)], same)
        raw = tmp / "raw.bin"
        write_bin(
            raw,
            [raw_of(p, args.aligned, args.raw).read_bytes() for a, b, _ in pairs for p in (a, b)],
            same,
        )
        rows = [
            ("dlib's aligned 150 px chips (crossres-align)", verify(chips, tmp / "a", 150, 150)),
            ("central 150 px of the 250 px image, its own scale", verify(raw, tmp / "c", 250, 150)),
            ("whole 250 px image scaled to 150 px", verify(raw, tmp / "w", 150, 150)),
        ]
    print(
        f"dlib's face network (the teacher, read without dlib) on {args.pairs} LFW-style pairs of "
        "the 2-9 people (ten folds, half same-person, seed 0: the dlib study's pairs), the probe "
        "side at r px against a full-resolution face; insightface's 10-fold accuracy "
        "(TAR at FAR 1e-2 in brackets).\n"
    )
    print("| input | " + " | ".join(f"{r} px" if r != "full" else r for r in RESOLUTIONS) + " |")
    print("|---|" + "---|" * len(RESOLUTIONS))
    for name, scores in rows:
        cells = [
            f"{scores[r]['accuracy']:.3f} ({scores[r]['tar@far=0.01']:.3f})" for r in RESOLUTIONS
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

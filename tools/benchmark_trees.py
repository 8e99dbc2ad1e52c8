"""Small benchmark trees in the official releases' exact layouts, built from real LFW faces.

The benchmarks' data cannot be shipped; these trees let the tests (and the README's example
report) run every protocol end to end: IJB-C (tid/mid, pair, landmark files and NIST's 1:N
CSVs), TinyFace (.mat id files) and QMUL-SurvFace (.mat pair and id files), written with scipy,
SCface (mugshots and three distances of cameras), and insightface .bin verification sets.

    python -m tools.benchmark_trees --lfw ../shared/data/lfw_deepfunneled_10to19 --out /tmp/trees
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

# LFW deep-funneled faces are centred and upright on 250 x 250: these are where the five
# landmarks (eyes, nose tip, mouth corners) fall, near enough for a similarity alignment.
LFW_LANDMARKS = np.array([[104, 114], [146, 114], [125, 140], [107, 165], [143, 165]], float)


def people(lfw: Path, count: int, per_person: int) -> list[list[Path]]:
    """The first `count` people of `lfw` with at least `per_person` images, theirs sorted."""
    chosen = []
    for folder in sorted(p for p in lfw.iterdir() if p.is_dir()):
        images = sorted(folder.glob("*.jpg"))
        if len(images) >= per_person:
            chosen.append(images[:per_person])
        if len(chosen) == count:
            return chosen
    raise SystemExit(f"{lfw}: fewer than {count} people with {per_person} images")


def ijbc(lfw: Path, root: Path, identities: int = 20) -> dict:
    """IJB-C's layout. Subject i: template 2i+1 (two frames of one video: one media) and
    template 2i+2 (two photos: two media). Pairs: every subject's two templates (genuine) and
    each first template with the next subject's second (impostor). 1:N: gallery G1 holds the
    first templates of the first half of the subjects, G2 of the second half; the probes are
    all the second templates, so each gallery has as many non-mated probes as mated."""
    meta = root / "meta"
    crops = root / "loose_crop"
    meta.mkdir(parents=True)
    crops.mkdir()
    rng = np.random.default_rng(0)
    tid_mid, marks, pairs = [], [], []
    number = 0
    for i, images in enumerate(people(lfw, identities, 4)):
        for k, source in enumerate(images):
            number += 1
            name = f"{number}.jpg"
            shutil.copyfile(source, crops / name)
            template = 2 * i + 1 + k // 2
            media = 1000 * template + (0 if k < 2 else k)
            tid_mid.append(f"{name} {template} {media}")
            points = LFW_LANDMARKS + rng.normal(0, 1.5, LFW_LANDMARKS.shape)
            score = 0.9 + 0.1 * rng.random()
            marks.append(
                " ".join([name, *(f"{v:.2f}" for v in points.reshape(-1)), f"{score:.4f}"])
            )
        pairs.append(f"{2 * i + 1} {2 * i + 2} 1")
        pairs.append(f"{2 * i + 1} {(2 * i + 2) % (2 * identities) + 2} 0")
    (meta / "ijbc_face_tid_mid.txt").write_text("\n".join(tid_mid) + "\n")
    (meta / "ijbc_name_5pts_score.txt").write_text("\n".join(marks) + "\n")
    (meta / "ijbc_template_pair_label.txt").write_text("\n".join(pairs) + "\n")
    header = "TEMPLATE_ID,SUBJECT_ID,FILENAME,SIGHTING_ID\n"
    half = identities // 2
    for name, subjects in (("G1", range(half)), ("G2", range(half, identities))):
        rows = [f"{2 * i + 1},{i},img/{4 * i + 1}.jpg,{i}" for i in subjects]
        (meta / f"ijbc_1N_gallery_{name}.csv").write_text(header + "\n".join(rows) + "\n")
    rows = [f"{2 * i + 2},{i},img/{4 * i + 3}.jpg,{i}" for i in range(identities)]
    (meta / "ijbc_1N_probe_mixed.csv").write_text(header + "\n".join(rows) + "\n")
    return {"images": number, "templates": 2 * identities, "pairs": len(pairs)}


def _small(source: Path, target: Path, side: int) -> None:
    """A face cut tight and shrunk to `side` px, as the native low-resolution sets hold."""
    from PIL import Image

    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        image.crop((70, 70, 180, 190)).resize((side, side * 12 // 11), Image.BILINEAR).save(target)


def _cells(names: list[str]) -> np.ndarray:
    cells = np.empty((len(names), 1), dtype=object)
    cells[:, 0] = names
    return cells


def tinyface(lfw: Path, root: Path, identities: int = 10, distractors: int = 10) -> dict:
    """TinyFace's layout: subject i's first face is the probe, its next two the gallery match;
    the first faces of `distractors` other people are the distractors."""
    from scipy.io import savemat

    test = root / "Testing_Set"
    chosen = people(lfw, identities + distractors, 3)
    probe_set, probe_ids, gallery_set, gallery_ids = [], [], [], []
    for i, images in enumerate(chosen[:identities]):
        probe_set.append(f"{i + 1}_1.jpg")
        probe_ids.append(i + 1)
        _small(images[0], test / "Probe" / probe_set[-1], 20)
        for k in (1, 2):
            gallery_set.append(f"{i + 1}_{k + 1}.jpg")
            gallery_ids.append(i + 1)
            _small(images[k], test / "Gallery_Match" / gallery_set[-1], 20)
    for j, images in enumerate(chosen[identities:]):
        _small(images[0], test / "Gallery_Distractor" / f"{j + 1}.jpg", 20)
    savemat(
        test / "probe_img_ID_pairs.mat",
        {"probe_set": _cells(probe_set), "probe_ids": np.array(probe_ids)[:, None]},
    )
    savemat(
        test / "gallery_match_img_ID_pairs.mat",
        {"gallery_set": _cells(gallery_set), "gallery_ids": np.array(gallery_ids)[:, None]},
    )
    return {"probes": len(probe_set), "gallery": len(gallery_set) + distractors}


def survface(lfw: Path, root: Path, identities: int = 12, unmated: int = 10) -> dict:
    """QMUL-SurvFace's layout. Verification: each subject's faces 1 and 2 (positive) and its
    face 1 with the next subject's face 2 (negative). Identification: face 1 in the gallery,
    face 3 a mated probe; the first faces of `unmated` other people are the unmated probes."""
    from scipy.io import savemat

    chosen = people(lfw, identities + unmated, 3)
    verify = root / "Face_Verification_Test_Set"
    positive, negative = [], []
    for i, images in enumerate(chosen[:identities]):
        for k in (0, 1):
            _small(images[k], verify / "verification_images" / f"{i + 1}_{k + 1}.jpg", 24)
        positive.append([f"{i + 1}_1.jpg", f"{i + 1}_2.jpg"])
        negative.append([f"{i + 1}_1.jpg", f"{(i + 1) % identities + 1}_2.jpg"])
    savemat(
        verify / "positive_pairs_names.mat",
        {"positive_pairs_names": np.array(positive, dtype=object)},
    )
    savemat(
        verify / "negative_pairs_names.mat",
        {"negative_pairs_names": np.array(negative, dtype=object)},
    )
    ident = root / "Face_Identification_Test_Set"
    gallery, mated = [], []
    for i, images in enumerate(chosen[:identities]):
        gallery.append(f"{i + 1}_1.jpg")
        _small(images[0], ident / "gallery" / gallery[-1], 24)
        mated.append(f"{i + 1}_3.jpg")
        _small(images[2], ident / "mated_probe" / mated[-1], 24)
    for j, images in enumerate(chosen[identities:]):
        _small(images[0], ident / "unmated_probe" / f"u{j + 1}.jpg", 24)
    ids = np.arange(1, identities + 1)[:, None]
    savemat(
        ident / "gallery_img_ID_pairs.mat", {"gallery_set": _cells(gallery), "gallery_ids": ids}
    )
    savemat(
        ident / "mated_probe_img_ID_pairs.mat",
        {"mated_probe_set": _cells(mated), "mated_probe_ids": ids},
    )
    return {"pairs": 2 * identities, "gallery": identities, "probes": identities + unmated}


def verification_bins(lfw: Path, root: Path, pairs: int = 60, size: int = 112) -> list[Path]:
    """Two insightface .bin sets of LFW-style pairs (ten folds of people, half same-person
    pairs; not LFW's official pairs) at size x size, one in each storage form: images as bytes
    (``lfw_style.bin``) and as 1-D uint8 arrays with a numpy issame (``lfw_style_np.bin``, the
    other half of the people)."""
    from crossres_dist.data.pack import centre_square
    from crossres_dist.verification import write_bin
    from crossres_dist.verification.pairs import lfw_style_pairs

    root.mkdir(parents=True, exist_ok=True)
    made = lfw_style_pairs(lfw, 2 * pairs, seed=0)
    written = []
    for name, form, part in (
        ("lfw_style", "bytes", made[::2]),
        ("lfw_style_np", "numpy", made[1::2]),
    ):
        images = [centre_square(Path(p).read_bytes(), size) for a, b, _ in part for p in (a, b)]
        written.append(write_bin(root / f"{name}.bin", images, [s for _, _, s in part], form))
    return written


def scface(lfw: Path, root: Path, subjects: int = 12) -> dict:
    """SCface's layout: subject i's first face as its mugshot (NNN_frontal.JPG, full size), its
    next five as cameras 1-5 and two more as the infrared cameras 6-7, at each distance shrunk to
    that distance's size (distance 1, the farthest: 16 px; 2: 24 px; 3: 40 px)."""
    chosen = people(lfw, subjects, 8)
    mugshots = root / "mugshot_frontal_cropped_all"
    mugshots.mkdir(parents=True, exist_ok=True)
    sides = {1: 16, 2: 24, 3: 40}
    for number, images in enumerate(chosen, 1):
        shutil.copy(images[0], mugshots / f"{number:03d}_frontal.JPG")
        for distance, side in sides.items():
            for camera in range(1, 8):
                target = (
                    root / f"surveillance_cameras_distance_{distance}" / f"cam{camera}"
                    / f"{number:03d}_cam{camera}_{distance}.jpg"
                )  # fmt: skip
                _small(images[camera], target, side)
    return {"subjects": subjects, "cameras": 7, "sides": sides}


def build(lfw: Path, out: Path, unseen: Path | None = None) -> dict[str, Path]:
    """Every tree; the verification sets from `unseen` (LFW's 2-9 people) when given."""
    trees = {
        "ijbc": out / "IJBC",
        "tinyface": out / "tinyface",
        "survface": out / "QMUL-SurvFace",
        "scface": out / "SCface",
    }
    ijbc(lfw, trees["ijbc"])
    tinyface(lfw, trees["tinyface"])
    survface(lfw, trees["survface"])
    scface(lfw, trees["scface"])
    if unseen is not None:
        trees["verification"] = out / "bins"
        verification_bins(unseen, trees["verification"])
    return trees


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--lfw",
        default=str(Path(__file__).resolve().parents[2] / "shared/data/lfw_deepfunneled_10to19"),
    )
    parser.add_argument(
        "--unseen",
        default=str(Path(__file__).resolve().parents[2] / "shared/data/lfw_deepfunneled_2to9"),
        help="the people the .bin verification sets are made of",
    )
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    for name, path in build(Path(args.lfw), Path(args.out), Path(args.unseen)).items():
        print(f"{name}: {path}")

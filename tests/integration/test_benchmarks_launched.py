"""The launched half of tests/unit/test_benchmarks.py: The benchmark protocols (IJB-C, TinyFace, QMUL-SurvFace, open-set identification): metrics on"""

import json
import sys

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from tests.conftest import LFW, TINY, child_env, needs_lfw, run_cmd
from tests.fixtures.benchmarks import (
    cached,
    cli,
    unit,
)
from tools import benchmark_trees


@needs_lfw
@pytest.mark.launch
def test_ijbc_end_to_end_matches_a_hand_computation(tmp_path, tiny_teacher):
    root = tmp_path / "IJBC"
    benchmark_trees.ijbc(LFW, root)
    report = cli(tmp_path, tiny_teacher, "ijbc", root, "--resolutions", "8", "full")
    rows = report["models"]["tiny"]["by_resolution"]
    assert set(rows) == {"8", "full"} and report["images"] == 80
    # By hand from the cached image features: media means, summed, unit length.
    lines = [
        line.split() for line in (root / "meta/ijbc_face_tid_mid.txt").read_text().splitlines()
    ]
    per_condition = {}
    for condition in ("8", "full"):
        feats = cached(report, condition).numpy()
        grouped: dict[int, dict[int, list]] = {}
        for (_, template, media), f in zip(lines, feats):
            grouped.setdefault(int(template), {}).setdefault(int(media), []).append(f)
        per_condition[condition] = {
            t: unit(sum(np.mean(m, 0) for m in media.values())) for t, media in grouped.items()
        }
    pairs = np.loadtxt(root / "meta/ijbc_template_pair_label.txt", dtype=int)
    for condition in ("8", "full"):
        # Cross-resolution: the first template at r, the second at full resolution.
        scores = [per_condition[condition][a] @ per_condition["full"][b] for a, b, _ in pairs]
        v = rows[condition]["verification"]
        assert v["auc"] == pytest.approx(roc_auc_score(pairs[:, 2], scores), abs=1e-6)
        fpr, tpr, _ = roc_curve(pairs[:, 2], scores)
        assert v["tar@far=0.1"] == pytest.approx(np.interp(0.1, fpr, tpr), abs=1e-6)
        assert v["tar@far=0.001"] is None and v["genuine_pairs"] == 20
        # 1:N, gallery G1 (subjects 0-9, first templates): rank-1 of the mated probes by hand.
        hits = []
        for subject in range(10):
            probe = per_condition[condition][2 * subject + 2]
            best = max(range(10), key=lambda s: probe @ per_condition["full"][2 * s + 1])
            hits.append(best == subject)
        g1 = rows[condition]["identification"]["galleries"]["G1"]
        assert g1["rank1"] == pytest.approx(np.mean(hits)) and g1["rank10"] == 1.0
        assert g1["mated_probes"] == 10 and g1["nonmated_probes"] == 10
        assert g1["tpir@fpir=0.1"] is not None and g1["tpir@fpir=0.01"] is None
    # The probe side really was degraded.
    assert not torch.allclose(cached(report, "8"), cached(report, "full"))
    markdown = (tmp_path / "out-ijbc" / "results.md").read_text()
    assert "1:1 verification" in markdown and "1:N identification" in markdown
    assert (tmp_path / "out-ijbc" / "roc.png").stat().st_size > 10_000


@needs_lfw
@pytest.mark.launch
def test_tinyface_and_survface_end_to_end_match_a_hand_computation(tmp_path, tiny_teacher):
    benchmark_trees.tinyface(LFW, tmp_path / "tinyface")
    tiny = cli(tmp_path, tiny_teacher, "tinyface", tmp_path / "tinyface", "--no-plots")
    ident = tiny["models"]["tiny"]["identification"]
    assert (ident["probes"], ident["gallery"], ident["distractors"]) == (10, 30, 10)
    feats = cached(tiny, "full").numpy()
    feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    # Samples: 10 probes, 20 gallery matches (subject i: 10 + 2i, 11 + 2i), 10 distractors.
    found = [int(np.argmax(feats[10:] @ feats[i])) // 2 == i for i in range(10)]
    assert ident["rank1"] == pytest.approx(np.mean(found))
    assert list(tiny["conditions"]) == ["full"]  # native resolution: --resolutions ignored

    benchmark_trees.survface(LFW, tmp_path / "survface")
    surv = cli(tmp_path, tiny_teacher, "survface", tmp_path / "survface", "--no-plots", nproc=1)
    model = surv["models"]["tiny"]
    feats = cached(surv, "full").numpy()
    feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    # Verification images come first, in first-seen order: subject i's faces 1 and 2.
    index = {f"{i + 1}_{k + 1}": 2 * i + k for i in range(12) for k in (0, 1)}
    positive = [feats[index[f"{i}_1"]] @ feats[index[f"{i}_2"]] for i in range(1, 13)]
    negative = [feats[index[f"{i}_1"]] @ feats[index[f"{i % 12 + 1}_2"]] for i in range(1, 13)]
    labels = [1] * 12 + [0] * 12
    assert model["verification"]["auc"] == pytest.approx(
        roc_auc_score(labels, positive + negative), abs=1e-6
    )
    assert model["identification"]["rank"] == 20
    assert model["identification"]["mated_probes"] == 12
    assert model["identification"]["nonmated_probes"] == 10


@needs_lfw
@pytest.mark.launch
def test_folder_open_set(tmp_path, tiny_teacher):
    out = tmp_path / "out"
    run_cmd(
        [
            sys.executable,
            "-m",
            "crossres_dist.evaluate",
            "--config",
            str(TINY),
            f"teacher.checkpoint={tiny_teacher}",
            "--checkpoint",
            str(tiny_teacher),
            "--name",
            "tiny",
            "--data",
            str(LFW),
            "--resolutions",
            "8",
            "full",
            "--tsne-identities",
            "0",
            "--no-plots",
            "--unmated-fraction",
            "0.5",
            "--open-set-rank",
            "5",
            "--out",
            str(out),
        ],
        env=child_env(PYTHONWARNINGS="ignore"),
    )
    row = json.loads((out / "results.json").read_text())["models"]["tiny"]
    open_row = row["probe_vs_full_gallery"]["8"]["open_set"]
    # 96 identities, half leave the gallery: their probes are non-mated.
    assert open_row["mated_probes"] + open_row["nonmated_probes"] == 1301 - 96
    assert 0.4 < open_row["nonmated_probes"] / (1301 - 96) < 0.6
    assert 0 <= open_row["tpir@fpir=0.1"] <= 1 and open_row["rank"] == 5
    markdown = (out / "results.md").read_text()
    assert "tiny: open-set identification at rank 5" in markdown
    assert f"{open_row['mated_probes']} mated" in markdown

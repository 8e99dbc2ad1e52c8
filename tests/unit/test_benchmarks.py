"""The benchmark protocols (IJB-C, TinyFace, QMUL-SurvFace, open-set identification): metrics on
hand-made cases, the CLI end to end on 2 processes over trees in the releases' exact layouts
(built from real LFW faces by tools/benchmark_trees.py), the numbers recomputed by hand from the
cached features, one-line errors for bad releases, and an extraction that resumes."""

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from crossres_dist import evaluate
from crossres_dist.eval import features as features_module
from crossres_dist.eval.align import reference_points, similarity
from crossres_dist.eval.metrics import cmc, identification, open_set, verification
from crossres_dist.eval.templates import template_features
from pipelines import ViewSettings
from pipelines.sources import Sample
from tests.conftest import LFW, TINY, TINY_SPEC, needs_lfw
from tests.fixtures.benchmarks import (
    copy,
    refused,
)
from tools import benchmark_trees


# ----------------------------------------------------------------------------- hand-made cases
def test_template_feature_is_media_mean_then_sum_then_unit_norm():
    features = torch.tensor([[1.0, 0], [3, 0], [0, 2], [5, 5]])
    templates = np.array([7, 7, 7, 9])
    media = np.array([1, 1, 2, 3])  # template 7: a video of two frames and a photo
    ids, feats = template_features(features, templates, media)
    assert ids.tolist() == [7, 9]
    # Media 1: mean (2, 0); media 2: (0, 2); summed (2, 2), unit: (0.707, 0.707).
    assert torch.allclose(feats[0], torch.tensor([2**-0.5, 2**-0.5]))
    # Detector scores weight each image: media 1 mean (0.5*1 + 1*3)/2 = 1.75, media 2: (0, 0).
    _, weighted = template_features(features, templates, media, np.array([0.5, 1, 0, 1]))
    assert torch.allclose(weighted[0], torch.tensor([1.0, 0.0]))


def test_perfect_model_scores_one():
    gallery = torch.eye(5)
    probe = torch.eye(5) + 0.01 * torch.randn(5, 5, generator=torch.Generator().manual_seed(0))
    labels = np.arange(5)
    ident = identification(probe, labels, gallery, labels)
    assert ident == {"rank1": 1.0, "rank5": 1.0}
    scores = np.concatenate([np.full(50, 0.9), np.full(5000, 0.1)])
    genuine = np.concatenate([np.ones(50, bool), np.zeros(5000, bool)])
    v = verification(scores, genuine)
    assert v["auc"] == 1.0 and v["eer"] == 0.0
    assert v["tar@far=0.001"] == 1.0 and v["tar@far=0.01"] == 1.0


def test_random_model_is_near_chance():
    rng = np.random.default_rng(0)
    n_ids, per_id = 50, 4
    labels = np.repeat(np.arange(n_ids), per_id)
    features = torch.from_numpy(rng.standard_normal((len(labels), 64))).float()
    gallery_idx = np.arange(0, len(labels), per_id)
    probe_idx = np.setdiff1d(np.arange(len(labels)), gallery_idx)
    ident = identification(
        features[probe_idx], labels[probe_idx], features[gallery_idx], labels[gallery_idx]
    )
    assert ident["rank1"] < 0.1 and ident["rank5"] < 0.25  # chance: 0.02 and 0.10
    scores = rng.standard_normal(20000)
    genuine = rng.random(20000) < 0.1
    v = verification(scores, genuine)
    assert abs(v["auc"] - 0.5) < 0.03 and abs(v["eer"] - 0.5) < 0.03


def test_verification_against_hand_and_scikit_learn():
    genuine_scores = [0.9, 0.8, 0.4]
    impostor_scores = [0.7, 0.3, 0.2, 0.1, 0.05, 0.04, 0.03, 0.02, 0.01, 0.0]
    scores = np.array(genuine_scores + impostor_scores)
    genuine = np.array([True] * 3 + [False] * 10)
    v = verification(scores, genuine, fars=(0.1, 0.01))
    # At FAR 0.1 one impostor (0.7) may pass, so the threshold may drop to 0.4: all 3 genuine.
    assert v["tar@far=0.1"] == 1.0
    # With no impostor passing (threshold above 0.7) 2 of 3 genuine do: the ROC's first point.
    assert v["roc"]["fpr"][:3] == [0.0, 0.0, 0.0] and v["roc"]["tpr"][2] == pytest.approx(2 / 3)
    assert v["tar@far=0.01"] is None  # 10 impostors cannot measure 1 in 100
    # Of the 30 genuine x impostor orderings, 0.4 loses to 0.7 only: AUC 29 / 30.
    assert v["auc"] == pytest.approx(29 / 30) == roc_auc_score(genuine, scores)


def test_cmc_by_identity_and_by_image():
    gallery = np.array([0, 0, 1, 2])
    scores = np.array(
        [
            [0.1, 0.5, 0.9, 0.8],  # identity 0: best gallery images are 1, 2, then its own
            [0.2, 0.1, 0.3, 0.9],  # identity 2: first
        ]
    )
    probes = np.array([0, 2])
    # By identity: probe 0 sees 1 (0.9), 2 (0.8), 0 (0.5) -> rank 3.
    assert cmc(scores, probes, gallery, (1, 2, 3)) == {"rank1": 0.5, "rank2": 0.5, "rank3": 1.0}
    # By image: probe 0's own images come at positions 3 and 4: rank 3 as well; identity 3
    # absent from the gallery would not count.
    assert cmc(scores, probes, gallery, (1, 3), by_image=True) == {"rank1": 0.5, "rank3": 1.0}


def test_open_set_tpir_at_fpir_by_hand():
    gallery = np.array([10, 20])
    mated = np.array([[0.9, 0.1], [0.8, 0.85], [0.5, 0.2], [0.1, 0.95]])  # ids 10, 10, 10, 20
    nonmated = np.array(
        [[s, 0.0] for s in (0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.7, 0.75, 0.95)]
    )
    scores = np.vstack([mated, nonmated])
    labels = np.array([10, 10, 10, 20] + [99] * 10)
    result = open_set(scores, labels, gallery, fpirs=(0.1, 0.2, 0.05), rank=1)
    assert result["mated_probes"] == 4 and result["nonmated_probes"] == 10
    # FPIR 0.1: one false alarm allowed, threshold above the 2nd best non-mated score (0.75).
    # Mated found at rank 1 above 0.75: 0.9 and 0.95 (0.8 is beaten by 0.85): TPIR 2 / 4.
    assert result["tpir@fpir=0.1"] == 0.5
    # FPIR 0.2: threshold 0.7, the same two.
    assert result["tpir@fpir=0.2"] == 0.5
    assert result["tpir@fpir=0.05"] is None  # 10 non-mated probes cannot measure 1 in 20
    # At rank 2 the 0.8 probe is found too.
    assert open_set(scores, labels, gallery, fpirs=(0.1,), rank=2)["tpir@fpir=0.1"] == 0.75


def test_similarity_alignment_recovers_a_known_transform():
    reference = reference_points(256, 0.7)
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    detected = (reference - shift) @ np.linalg.inv(rotation).T  # reference = R @ detected + t
    matrix = similarity(detected, reference)
    assert np.allclose(matrix[:, :2], rotation) and np.allclose(matrix[:, 2], shift)


def test_ijb_missing_meta_file(tmp_path, capsys, tiny_teacher, ijbc_tree):
    root = copy(ijbc_tree, tmp_path)
    (root / "meta/ijbc_template_pair_label.txt").unlink()
    err = refused(capsys, tiny_teacher, "ijbc", root)
    assert "ijbc_template_pair_label.txt: " in err and "not found" in err


def test_ijb_template_without_a_readable_image(tmp_path, capsys, tiny_teacher, ijbc_tree):
    root = copy(ijbc_tree, tmp_path)
    for name in ("3.jpg", "4.jpg"):  # template 2's two images
        (root / "loose_crop" / name).unlink()
    err = refused(capsys, tiny_teacher, "ijbc", root)
    assert "ijbc_face_tid_mid.txt:3: template 2 has no readable image" in err


def test_ijb_pair_with_an_unknown_template(tmp_path, capsys, tiny_teacher, ijbc_tree):
    root = copy(ijbc_tree, tmp_path)
    pairs = root / "meta/ijbc_template_pair_label.txt"
    pairs.write_text(pairs.read_text() + "1 999 0\n")
    err = refused(capsys, tiny_teacher, "ijbc", root)
    assert "ijbc_template_pair_label.txt:7: template 999 is not in" in err


def test_ijb_malformed_landmark_line(tmp_path, capsys, tiny_teacher, ijbc_tree):
    root = copy(ijbc_tree, tmp_path)
    marks = root / "meta/ijbc_name_5pts_score.txt"
    marks.write_text(marks.read_text() + "13.jpg 1 2 3\n")
    err = refused(capsys, tiny_teacher, "ijbc", root)
    assert "ijbc_name_5pts_score.txt:13: expected 12 fields" in err


@needs_lfw
def test_mat_file_without_the_expected_keys(tmp_path, capsys, tiny_teacher):
    from scipy.io import savemat

    root = tmp_path / "tinyface"
    benchmark_trees.tinyface(LFW, root, identities=2, distractors=1)
    savemat(root / "Testing_Set/probe_img_ID_pairs.mat", {"names": np.array([1])})
    err = refused(capsys, tiny_teacher, "tinyface", root)
    assert "probe_img_ID_pairs.mat: no key probe_set, probe_ids" in err and "(it has: names)" in err


def test_protocol_needs_root(capsys, tiny_teacher):
    code = evaluate.main(
        ["--protocol", "survface", "--config", str(TINY), "--checkpoint", str(tiny_teacher),
         "--out", "/nonexistent"]
    )  # fmt: skip
    assert code == 2 and "--protocol survface needs --root" in capsys.readouterr().err
    # argparse refuses a bad rank by name before anything is read.
    with pytest.raises(SystemExit) as refused:
        evaluate.main(["--open-set-rank", "0", "--config", str(TINY), "--checkpoint", "x",
                       "--out", "/nonexistent"])  # fmt: skip
    assert refused.value.code == 2
    assert "argument --open-set-rank: 0 must be >= 1" in capsys.readouterr().err


# ----------------------------------------------------------------------------- resumable cache
def test_interrupted_extraction_resumes_from_its_chunks(tmp_path, tiny_teacher, monkeypatch):
    from crossres_dist.models import build_model

    model = build_model(TINY_SPEC)
    model.load_state_dict(torch.load(tiny_teacher, weights_only=True))
    model.eval()
    views = ViewSettings(32, 28, 0.0, [8, 16], channels=TINY_SPEC.channels)
    faces = sorted(Path(__file__).resolve().parents[2].glob("data/orl_att_faces/s1*/*.png"))[:20]
    samples = [Sample(str(p), 0) for p in faces]
    extractor = features_module.Extractor(
        model, views, 8, "torchvision", torch.device("cpu"), 1, torch.autocast("cpu", enabled=False)
    )
    monkeypatch.setattr(features_module, "CHUNK", 8)  # three chunks: 8, 8, 4
    full, _ = features_module.extract_cached(extractor, str(tiny_teacher), samples, 8, tmp_path)
    final = features_module.cache_path(extractor, str(tiny_teacher), samples, 8, tmp_path)
    # A job preempted after its first chunk: the final file absent, one chunk on disk (marked).
    final.unlink()
    parts = final.with_suffix(".parts")
    parts.mkdir()
    marker = torch.full((8, full.shape[1] + 40), 7.0)
    torch.save(marker, parts / "00000.pt")
    resumed, _ = features_module.extract_cached(extractor, str(tiny_teacher), samples, 8, tmp_path)
    assert torch.equal(resumed[:8], marker[:, : full.shape[1]])  # kept, not recomputed
    assert torch.allclose(resumed[8:], full[8:], atol=1e-6)  # the rest extracted
    assert final.is_file() and not parts.exists()

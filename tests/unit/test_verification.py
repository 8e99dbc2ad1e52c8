"""insightface's .bin verification sets, built here from the LFW faces in ../shared in both storage
forms (and in the pickle forms other tools write): read without running the file, decoded by both
pipelines as the files themselves decode, every broken input refused in one line naming the file
and the image; the ten-fold metric against an independent implementation written here from
insightface's loops; LFW-style pairs and ``crossres-pack --pairs``; validation in training that
chooses best.pt by the sets; the evaluation protocol recomputed from its cached features; and
SCface's release layout."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crossres_dist import evaluate
from crossres_dist.checkpointing.manager import load_checkpoint
from crossres_dist.config import load_config
from crossres_dist.data.check import refuse_undecodable
from crossres_dist.data.pack import main as pack_main
from crossres_dist.errors import ConfigError, SetupError
from crossres_dist.models import build_model
from crossres_dist.verification import BinError, read_bin, ten_fold, write_bin
from crossres_dist.verification.metric import fold_slices
from crossres_dist.verification.pairs import lfw_style_pairs, read_pairs, write_pairs
from crossres_dist.verification.suite import image_namer, images_of
from pipelines import Loader, Sample, ViewSettings, eval_plans
from pipelines.packed import read_encoded
from pipelines.sources import DataError
from tests.conftest import LFW, TINY, TINY_SPEC
from tests.fixtures.verification import (
    UNSEEN,
    needs_unseen,
)
from tests.golden import pretrain_in_process
from tools import benchmark_trees


@pytest.fixture(scope="module")
def faces() -> list[bytes]:
    """20 real LFW faces (10 pairs) as their JPEG bytes."""
    if not UNSEEN.is_dir():
        pytest.skip(f"{UNSEEN} is absent; runs wherever ../shared holds it (CI does)")
    paths = sorted(UNSEEN.glob("*/*.jpg"))[:20]
    return [p.read_bytes() for p in paths]


ISSAME = [bool(i % 2) for i in range(10)]


def _pickled(path: Path, obj, protocol: int) -> Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


# ----------------------------------------------------------------------------- reading
@pytest.mark.parametrize("form", ["bytes", "numpy"])
def test_both_storage_forms_read_to_locators_of_the_exact_image_bytes(tmp_path, faces, form):
    path = write_bin(tmp_path / "lfw.bin", faces, ISSAME, form)
    vset = read_bin(path)
    assert vset.name == "lfw" and vset.pairs == 10 and vset.source == path
    assert vset.issame.tolist() == ISSAME
    assert [read_encoded(locator) for locator in vset.images] == faces


@pytest.mark.parametrize(
    "protocol,as_arrays", [(2, False), (4, True), (5, True), (5, False)], ids=str
)
def test_the_pickle_forms_other_tools_write_read_alike(tmp_path, faces, protocol, as_arrays):
    """Protocol 2 from Python 3 spells bytes as _codecs.encode (no raw literal: read from a
    repacked copy in the cache); protocol 5 holds numpy arrays as in-band buffers."""
    bins = [np.frombuffer(f, np.uint8) for f in faces] if as_arrays else faces
    issame = np.array(ISSAME) if as_arrays else ISSAME
    path = _pickled(tmp_path / "set.bin", (bins, issame), protocol)
    vset = read_bin(path, cache_dir=tmp_path / "cache")
    assert [read_encoded(locator) for locator in vset.images] == faces
    assert vset.issame.tolist() == ISSAME
    assert (vset.source == path) == (protocol != 2)


def python2_protocol0(images: list[bytes], issame: list[bool]) -> bytes:
    """``pickle.dump((bins, issame_list), f)`` as Python 2 writes it by default (protocol 0):
    each str as S + its repr, each bool as I01 / I00."""

    def py2_repr(data: bytes) -> bytes:
        out = bytearray(b"'")
        for byte in data:
            char = bytes([byte])
            if char in (b"\\", b"'"):
                out += b"\\" + char
            elif char == b"\n":
                out += b"\\n"
            elif char == b"\r":
                out += b"\\r"
            elif char == b"\t":
                out += b"\\t"
            elif 32 <= byte < 127:
                out += char
            else:
                out += b"\\x%02x" % byte
        return bytes(out + b"'")

    memo = 0
    stream = bytearray(b"((lp0\n")
    for image in images:
        memo += 1
        stream += b"S" + py2_repr(image) + b"\np%d\na" % memo
    memo += 1
    stream += b"(lp%d\n" % memo
    for same in issame:
        stream += b"I01\na" if same else b"I00\na"
    return bytes(stream + b"tp%d\n." % (memo + 1))


def test_a_python2_protocol0_set_is_read_from_a_repacked_copy(tmp_path, faces):
    """A well-formed set pickled under Python 2 with protocol 0 (its JPEG bytes as escaped
    STRING opcodes, which pickletools decodes as ASCII) reads like the others."""
    path = tmp_path / "py2.bin"
    path.write_bytes(python2_protocol0(faces, ISSAME))
    vset = read_bin(path, cache_dir=tmp_path / "cache")
    assert [read_encoded(locator) for locator in vset.images] == faces
    assert vset.issame.tolist() == ISSAME and vset.source != path


def test_a_malicious_pickle_is_refused_by_name_without_running(tmp_path, faces):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.makedirs, (str(marker),))

    path = _pickled(tmp_path / "evil.bin", ([Payload(), *faces[1:]], ISSAME), 4)
    with pytest.raises(BinError) as err:
        read_bin(path)
    assert str(err.value) == (
        f"{path}: the pickle names the global 'os.makedirs', which a .bin set never holds: "
        "refused, nothing in the file was run"
    )
    assert not marker.exists()


@pytest.mark.parametrize(
    "damage,expected",
    [
        ("odd", "21 images, an odd number: image 20 has no partner"),
        ("issame", "issame_list has 9 entries for 10 pairs (20 images): one per pair"),
        ("type", "image 3 is of type int, not encoded bytes or a 1-D uint8 array"),
        ("bool", "issame_list[2] is 'yes', not a boolean"),
        ("shape", "image 0 is a 2-D uint8 array, not encoded bytes or a 1-D uint8 array"),
        ("truncated", "the file ends inside the pickle after"),
        ("not_a_pair", "holds a dict, not the pair (bins, issame_list)"),
    ],
)
def test_every_broken_set_is_refused_in_one_line_naming_the_file_and_the_index(
    tmp_path, faces, damage, expected
):
    bins, issame = list(faces), list(ISSAME)
    obj: object = (bins, issame)
    if damage == "odd":
        bins.append(faces[0])
    elif damage == "issame":
        issame.pop()
    elif damage == "type":
        bins[3] = 7
    elif damage == "bool":
        issame[2] = "yes"
    elif damage == "shape":
        bins[0] = np.zeros((2, 3), np.uint8)
    elif damage == "not_a_pair":
        obj = {"bins": bins}
    path = _pickled(tmp_path / "broken.bin", obj, 4)
    if damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BinError) as err:
        read_bin(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message


def test_an_image_that_does_not_decode_is_named_by_set_image_and_pair(tmp_path, faces):
    bins = list(faces)
    bins[7] = faces[7][: len(faces[7]) // 3]  # a JPEG cut short
    vset = read_bin(write_bin(tmp_path / "cut.bin", bins, ISSAME))
    pattern = r"cut\.bin: image 7 \(pair 3\): this image cannot be read \(\w+\); 1 of the 20 "
    with pytest.raises(DataError, match=pattern + "images of the verification sets cannot"):
        refuse_undecodable(
            images_of([vset]), 0, 1, 1, image_namer([vset]), "images of the verification sets"
        )


@pytest.mark.parametrize("backend", ["dali", "torchvision"])
def test_both_pipelines_decode_a_bin_image_as_they_decode_the_file(tmp_path, faces, backend):
    files = []
    for i, data in enumerate(faces[:4]):
        files.append(tmp_path / f"{i}.jpg")
        files[-1].write_bytes(data)
    vset = read_bin(write_bin(tmp_path / "four.bin", faces[:4], [True, False]))
    views = ViewSettings(32, 28, 0.0, [8])
    loader = Loader(backend, views, 4, torch.device("cpu"), 1, 0)
    out = []
    for paths in (vset.images, [str(f) for f in files]):
        plans = [p for _, p in eval_plans([Sample(p, 0) for p in paths], views, 4, [8, None])]
        stream = loader(iter(plans))
        out.append([next(stream)["student_view"].clone() for _ in plans])
        del stream
    for located, plain in zip(*out):
        assert torch.equal(located, plain)


# ----------------------------------------------------------------------------- the metric
def independent_ten_fold(emb1, emb2, issame):
    """insightface's eval/verification.py, written again as its loops: sklearn's KFold, np.less
    per threshold, the FAR threshold interpolated between the two thresholds around it."""
    from sklearn.model_selection import KFold

    def norm(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    dist = np.sum(np.square(norm(emb1) - norm(emb2)), 1)
    issame = np.asarray(issame)
    thresholds, val_thresholds = np.arange(0, 4, 0.01), np.arange(0, 4, 0.001)

    def accuracy(t, d, same):
        predict = np.less(d, t)
        tp = np.sum(predict & same)
        tn = np.sum(~predict & ~same)
        return (tp + tn) / d.size

    def val_far(t, d, same):
        predict = np.less(d, t)
        return np.sum(predict & same) / np.sum(same), np.sum(predict & ~same) / np.sum(~same)

    accs, vals = [], []
    for train, test in KFold(n_splits=10, shuffle=False).split(np.arange(len(dist))):
        train_acc = [accuracy(t, dist[train], issame[train]) for t in thresholds]
        accs.append(accuracy(thresholds[int(np.argmax(train_acc))], dist[test], issame[test]))
        far = [val_far(t, dist[train], issame[train])[1] for t in val_thresholds]
        threshold = 0.0
        if max(far) >= 1e-3:
            for k in range(1, len(far)):
                if far[k] >= 1e-3:
                    if far[k] == 1e-3:
                        threshold = val_thresholds[k]
                    else:
                        step = (1e-3 - far[k - 1]) / (far[k] - far[k - 1])
                        threshold = val_thresholds[k - 1] + step * 0.001
                    break
        vals.append(val_far(threshold, dist[test], issame[test])[0])
    return np.mean(accs), np.std(accs), np.mean(vals), np.std(vals)


def test_the_metric_agrees_with_an_independent_implementation_to_1e6():
    rng = np.random.default_rng(3)
    n = 3000  # 1,500 impostor pairs: a FAR of 1e-3 is reachable on nine folds
    same = np.tile(np.repeat([True, False], 150), 10)
    emb1 = rng.normal(size=(n, 32))
    emb2 = np.where(same[:, None], emb1 + rng.normal(size=(n, 32)) * 1.1, rng.normal(size=(n, 32)))
    ours = ten_fold(emb1, emb2, same)
    acc, acc_std, val, val_std = independent_ten_fold(emb1, emb2, same)
    assert 0.6 < ours["accuracy"] < 0.99  # neither trivial nor perfect
    assert ours["accuracy"] == pytest.approx(acc, abs=1e-6)
    assert ours["accuracy_std"] == pytest.approx(acc_std, abs=1e-6)
    assert ours["val@far=0.001"] == pytest.approx(val, abs=1e-6) and val > 0
    assert ours["val_std"] == pytest.approx(val_std, abs=1e-6)
    expected_xnorm = np.mean(np.linalg.norm(np.concatenate([emb1, emb2]), axis=1))
    assert ours["xnorm"] == pytest.approx(expected_xnorm, rel=1e-9)


def test_the_metric_by_hand_on_twenty_pairs():
    """Ten folds of two pairs. Same pairs at squared distance 0.455 (cosine 0.7725, off the
    threshold grid), different ones at 2.0 (90 degrees), except fold 0's different pair, at
    0.455 too. Every threshold in (0.455, 2.0] is best on the other nine folds; the first, 0.46,
    is taken, and calls fold 0's different pair same: fold 0's accuracy is 1/2, the other folds'
    1, so the mean is 0.95 and the standard deviation 0.15."""
    a = np.tile([[1.0, 0.0]], (20, 1))
    near = [0.7725, np.sqrt(1 - 0.7725**2)]
    same = np.array([True, False] * 10)
    b = np.where(same[:, None], near, [0.0, 1.0])
    b[1] = near
    scores = ten_fold(a, b, same)
    assert scores["accuracy"] == pytest.approx(0.95)
    assert scores["accuracy_std"] == pytest.approx(0.15)
    assert scores["best_thresholds"] == [pytest.approx(0.46)] * 10
    assert scores["xnorm"] == pytest.approx(1.0)
    assert fold_slices(23) == [slice(0, 3), slice(3, 6), slice(6, 9)] + [
        slice(9 + 2 * i, 11 + 2 * i) for i in range(7)
    ]


def test_val_at_a_far_tie_takes_the_last_threshold_as_insightface_did():
    """Several thresholds with exactly FAR 1e-3 on the training folds: insightface's
    interp1d (the SciPy it was written for) returned the last of them, and so does this."""
    from crossres_dist.verification.metric import _far_threshold

    thresholds = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    tied = np.array([0.0, 0.0005, 0.001, 0.001, 0.001, 0.002])
    assert _far_threshold(tied, thresholds, 1e-3) == 4.0
    between = np.array([0.0, 0.0005, 0.0008, 0.0012, 0.002, 0.003])
    assert _far_threshold(between, thresholds, 1e-3) == pytest.approx(2.5)
    assert _far_threshold(np.zeros(6), thresholds, 1e-3) == 0.0


def test_mirror_embeddings_are_added_before_the_normalisation():
    rng = np.random.default_rng(0)
    e = [rng.normal(size=(40, 8)) for _ in range(4)]
    same = np.array([True, False] * 20)
    with_mirror = ten_fold(e[0], e[1], same, e[2], e[3])
    summed = ten_fold(e[0] + e[2], e[1] + e[3], same)
    assert with_mirror["accuracy"] == summed["accuracy"]
    norms = np.linalg.norm(np.concatenate(e), axis=1)
    assert with_mirror["xnorm"] == pytest.approx(norms.mean())


# ----------------------------------------------------------------------------- pairs and packing
@needs_unseen
def test_lfw_style_pairs_are_ten_folds_of_disjoint_people_half_same(tmp_path):
    pairs = lfw_style_pairs(UNSEEN, 200, seed=0)
    assert pairs == lfw_style_pairs(UNSEEN, 200, seed=0)  # made once: the seed decides
    assert len(pairs) == 200
    people_of_fold = []
    for fold in range(10):
        part = pairs[20 * fold : 20 * fold + 20]
        assert [s for _, _, s in part] == [True] * 10 + [False] * 10
        for a, b, same in part:
            assert (Path(a).parent == Path(b).parent) == same and a != b
        people_of_fold.append({Path(p).parent.name for a, b, _ in part for p in (a, b)})
    for i in range(10):
        for j in range(i + 1, 10):
            assert not people_of_fold[i] & people_of_fold[j]
    write_pairs(tmp_path / "pairs.tsv", pairs)

    def resolved(rows):
        return [(Path(a).resolve(), Path(b).resolve(), s) for a, b, s in rows]

    assert resolved(read_pairs(tmp_path / "pairs.tsv")) == resolved(pairs)


@needs_unseen
@pytest.mark.parametrize("form", ["bytes", "numpy"])
def test_crossres_pack_pairs_writes_a_bin_of_those_pairs(tmp_path, capsys, form):
    pairs = lfw_style_pairs(UNSEEN, 20, seed=1)
    write_pairs(tmp_path / "pairs.tsv", pairs)
    out = tmp_path / "mine.bin"
    argv = ["--pairs", str(tmp_path / "pairs.tsv"), str(out), "--format", "bin"]
    assert pack_main([*argv, "--size", "112", "--bin-form", form]) == 0
    with open(out, "rb") as f:
        bins, issame = pickle.load(f)  # insightface's own reading (our file, so safe here)
    assert len(bins) == 40 and list(issame) == [s for _, _, s in pairs]
    assert isinstance(bins[0], np.ndarray if form == "numpy" else bytes)
    vset = read_bin(out)
    with Image.open(io.BytesIO(read_encoded(vset.images[0]))) as image:
        assert image.size == (112, 112)
    capsys.readouterr()
    assert pack_main(argv) == 2  # never replaces a file
    assert "exists already" in capsys.readouterr().err
    (tmp_path / "bad.tsv").write_text("a.jpg\tb.jpg\tmaybe\n")
    assert (
        pack_main(
            ["--pairs", str(tmp_path / "bad.tsv"), str(tmp_path / "x.bin"), "--format", "bin"]
        )
        == 2
    )
    assert (
        f"{tmp_path / 'bad.tsv'}:1: expected IMAGE_A<TAB>IMAGE_B<TAB>1|0" in capsys.readouterr().err
    )


# ----------------------------------------------------------------------------- configuration
def test_data_verification_takes_auto_a_list_or_one_file_and_select_by_needs_it():
    def data(*overrides):
        return load_config(TINY, ["run.stage=pretrain", *overrides])

    assert data("data.verification=auto").data.verification == "auto"
    assert data("data.verification=[a.bin, b.bin]").data.verification == ["a.bin", "b.bin"]
    with pytest.raises(ConfigError, match="data.verification: 'lfw' is neither 'auto' nor"):
        data("data.verification=lfw")
    with pytest.raises(ConfigError, match="val.select_by: verification needs verification sets"):
        data("val.select_by=verification")


# ----------------------------------------------------------------------------- in training
@pytest.fixture(scope="module")
def lfw_bins(tmp_path_factory) -> list[Path]:
    if not UNSEEN.is_dir():
        pytest.skip(f"{UNSEEN} is absent; runs wherever ../shared holds it (CI does)")
    return benchmark_trees.verification_bins(UNSEEN, tmp_path_factory.mktemp("bins"), 40, 32)


def test_training_validates_on_the_sets_and_chooses_best_by_their_mean(tmp_path, lfw_bins):
    listed = f"data.verification=[{', '.join(map(str, lfw_bins))}]"
    res, rows = pretrain_in_process(
        "embedded:orl", tmp_path / "run", "data.backend=torchvision", "train.max_steps=6",
        listed, "val.select_by=verification", "optim.scheduler=plateau",
    )  # fmt: skip
    final = res["final"]
    keys = {k for k in final if k.startswith("val/verification/")}
    for name in ("lfw_style", "lfw_style_np"):
        for resolution in ("full", "8px", "16px"):
            for metric in ("accuracy", "accuracy_std", "val@far=0.001", "xnorm"):
                assert f"val/verification/{name}/{resolution}/{metric}" in keys
    accuracies = [final[k] for k in keys if k.endswith("/accuracy") and k.count("/") == 4]
    assert len(accuracies) == 6
    assert final["val/verification/accuracy"] == pytest.approx(np.mean(accuracies))
    # best.pt: the highest mean verification accuracy of the three validations (steps 0, 3, 6).
    logged = [r for r in rows if "val/verification/accuracy" in r]
    assert len(logged) == 3
    best = max(r["val/verification/accuracy"] for r in logged)
    assert res["best_metric"] == pytest.approx(best)
    saved = load_checkpoint(tmp_path / "run/checkpoints/best.pt")
    assert saved["best_metric"] == pytest.approx(best)
    log = (tmp_path / "run" / "train.log").read_text().splitlines()
    lines = [line for line in log if "verification at step" in line]
    assert len(lines) == 3 and "lfw_style full " in lines[0] and "| mean " in lines[0]


def test_select_by_verification_drives_best_and_the_plateau_schedule_by_the_mean_accuracy():
    from types import SimpleNamespace

    from crossres_dist.training.validation import Validator

    metrics = {"val/verification/accuracy": 0.8, "val/8px/loss": 2.5, "val/8px/top1": 0.4}
    by = {
        choice: SimpleNamespace(val_cfg=SimpleNamespace(select_by=choice, resolution=8), stage="crossres")
        for choice in ("verification", "top1")
    }  # fmt: skip
    assert Validator.best_metric(by["verification"], metrics) == 0.8
    assert Validator.plateau_metric(by["verification"], metrics) == pytest.approx(0.2)  # the error
    assert Validator.best_metric(by["top1"], metrics) == 0.4
    assert Validator.plateau_metric(by["top1"], metrics) == 2.5


def test_select_by_verification_with_no_set_beside_the_data_is_refused_before_the_networks(
    tmp_path,
):
    with pytest.raises(SetupError, match="finds no .bin set"):
        pretrain_in_process(
            "embedded:orl", tmp_path / "run", "data.verification=auto",
            "val.select_by=verification",
        )  # fmt: skip
    assert not (tmp_path / "run" / "checkpoints").exists()


# ----------------------------------------------------------------------------- in evaluation
def test_the_verification_protocol_scores_every_bin_from_its_cached_features(
    tmp_path, lfw_bins, tiny_teacher
):
    out = tmp_path / "out"
    code = evaluate.main(
        ["--protocol", "verification", "--root", str(lfw_bins[0].parent), "--config", str(TINY),
         "--checkpoint", str(tiny_teacher), "--name", "tiny", "--resolutions", "8", "full",
         "--no-plots", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    report = json.loads((out / "results.json").read_text())
    model = report["models"]["tiny"]
    assert set(model["verification"]) == {"lfw_style", "lfw_style_np"}
    full = torch.load(model["feature_cache"]["full"], weights_only=True)[0].numpy()
    low = torch.load(model["feature_cache"]["8"], weights_only=True)[0].numpy()
    assert full.shape[0] == 160 and low.shape[0] == 80  # at 8 px only the probes
    d = full.shape[1] // 2
    vset = read_bin(lfw_bins[0])
    first, probe = full[0:80:2], low[:40]
    acc, *_ = independent_ten_fold(
        first[:, :d] + first[:, d:], probe[:, :d] + probe[:, d:], vset.issame
    )
    assert model["verification"]["lfw_style"]["8"]["accuracy"] == pytest.approx(acc, abs=1e-6)
    table = (out / "results.md").read_text()
    assert "lfw_style (40 pairs): accuracy by probe resolution" in table


def test_probes_against_a_gallery_another_network_enrolled(tmp_path, lfw_bins, tiny_teacher):
    """--gallery: each pair's first face embedded by the gallery network at full resolution,
    the probes (and, at full resolution, the second faces) by the network evaluated."""
    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    torch.save(build_model(TINY_SPEC).state_dict(), other)
    args = ["--protocol", "verification", "--root", str(lfw_bins[0]), "--config", str(TINY),
            "--checkpoint", str(tiny_teacher), "--name", "tiny", "--resolutions", "8", "full",
            "--no-plots"]  # fmt: skip
    assert evaluate.main([*args, "--out", str(tmp_path / "own")]) == 0
    assert (
        evaluate.main([*args, "--gallery", str(tiny_teacher), "--out", str(tmp_path / "same")]) == 0
    )
    assert evaluate.main([*args, "--gallery", str(other), "--out", str(tmp_path / "g")]) == 0
    own, same, mixed = (
        json.loads((tmp_path / name / "results.json").read_text())["models"]["tiny"]
        for name in ("own", "same", "g")
    )
    # Its own network as the gallery: the scores of the plain protocol.
    assert same["verification"] == own["verification"] and same["gallery"] == str(tiny_teacher)
    # Another network's first faces: computed from them, pair by pair.
    vset = read_bin(lfw_bins[0])
    gallery = torch.load(mixed_cache(tmp_path / "g", other), weights_only=True)[0].numpy()
    probes = torch.load(mixed["feature_cache"]["8"], weights_only=True)[0].numpy()
    d = gallery.shape[1] // 2
    first = gallery[0::2]
    acc, *_ = independent_ten_fold(
        first[:, :d] + first[:, d:], probes[:, :d] + probes[:, d:], vset.issame
    )
    assert mixed["verification"]["lfw_style"]["8"]["accuracy"] == pytest.approx(acc, abs=1e-6)
    assert mixed["verification"] != own["verification"]


def mixed_cache(out: Path, checkpoint: Path) -> Path:
    """The cached full-resolution features of the gallery network (the only other file)."""
    report = json.loads((out / "results.json").read_text())["models"]["tiny"]
    own = {Path(p).name for p in report["feature_cache"].values()}
    (found,) = [p for p in (out / "cache").glob("*.pt") if p.name not in own]
    return found


def test_a_gallery_for_a_protocol_that_cannot_take_one_is_one_line(tmp_path, capsys, tiny_teacher):
    code = evaluate.main(
        ["--config", str(TINY), "--checkpoint", str(tiny_teacher), "--gallery", str(tiny_teacher),
         "--no-plots", "--out", str(tmp_path / "o")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "error: --gallery: --protocol folder embeds its reference side" in err


# ----------------------------------------------------------------------------- SCface
@pytest.fixture(scope="module")
def scface_tree(tmp_path_factory) -> Path:
    if not LFW.is_dir():
        pytest.skip(f"{LFW} is absent; runs wherever ../shared holds the LFW sample (CI does)")
    root = tmp_path_factory.mktemp("scface") / "SCface"
    benchmark_trees.scface(LFW, root, subjects=6)
    return root


def test_scface_reads_the_release_layout_and_reports_by_distance_and_camera(
    tmp_path, scface_tree, tiny_teacher
):
    out = tmp_path / "out"
    code = evaluate.main(
        ["--protocol", "scface", "--root", str(scface_tree), "--config", str(TINY),
         "--checkpoint", str(tiny_teacher), "--name", "tiny", "--scface-test-subjects", "4",
         "--no-plots", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    ident = json.loads((out / "results.json").read_text())["models"]["tiny"]["identification"]
    # The 4 highest-numbered subjects, cameras 1-5 (no infrared), 3 distances.
    assert ident["all"]["probes"] == 4 * 5 * 3
    assert {k for k in ident if k.startswith("distance")} == {"distance1", "distance2", "distance3"}
    assert {k for k in ident if k.startswith("camera")} == {f"camera{c}" for c in range(1, 6)}
    assert all(ident[f"distance{d}"]["probes"] == 20 for d in (1, 2, 3))
    assert "SCface at" in (out / "results.md").read_text()


@pytest.mark.parametrize(
    "damage,expected",
    [
        (
            "misplaced",
            "names camera 2 at distance 1, but lies in surveillance_cameras_distance_1/cam3",
        ),
        ("too_many", "6 subjects, --scface-test-subjects 80 asks for more"),
        ("no_distance", "surveillance_cameras_distance_3: SCface distance folder not found"),
        # A tested subject's mugshot lost: refused, never a lower-numbered subject instead.
        ("no_mugshot", "tested subject 005 has surveillance images but no mugshot"),
    ],
)
def test_scface_broken_trees_are_refused_in_one_line(
    tmp_path, capsys, scface_tree, tiny_teacher, damage, expected
):
    import shutil

    root = Path(shutil.copytree(scface_tree, tmp_path / "copy"))
    subjects = ["--scface-test-subjects", "80" if damage == "too_many" else "4"]
    if damage == "misplaced":
        moved = root / "surveillance_cameras_distance_1/cam2/006_cam2_1.jpg"
        moved.rename(root / "surveillance_cameras_distance_1/cam3/006_cam2_1.jpg")
    elif damage == "no_distance":
        shutil.rmtree(root / "surveillance_cameras_distance_3")
    elif damage == "no_mugshot":
        next((root / "mugshot_frontal_cropped_all").glob("005_frontal.*")).unlink()
    code = evaluate.main(
        ["--protocol", "scface", "--root", str(root), "--config", str(TINY),
         "--checkpoint", str(tiny_teacher), *subjects, "--out", str(tmp_path / "out")]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "out").exists()  # refused before any work

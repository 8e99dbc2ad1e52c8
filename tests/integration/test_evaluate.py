"""Evaluation metrics on hand-made cases, distributed extraction, outputs, bad pairs files."""

import json
import sys

import numpy as np
import pytest
import torch

from crossres_dist.eval.protocols.folder import read_lfw_pairs
from pipelines.sources import DataError
from tests.conftest import LFW, TINY, child_env, needs_lfw, run_cmd


def _evaluate(out, checkpoint, nproc, *extra, check=True, plots=False):
    args = [
        "-m",
        "crossres_dist.evaluate",
        "--config",
        str(TINY),
        f"teacher.checkpoint={checkpoint}",
        "--checkpoint",
        str(checkpoint),
        "--name",
        "tiny",
        "--resolutions",
        "8",
        "full",
        "--tsne-identities",
        "4",
        "--tsne-resolution",
        "8",
        "--out",
        str(out),
        *([] if plots else ["--no-plots"]),
        *extra,
    ]
    launcher = (
        []
        if nproc == 1
        else ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    )
    return run_cmd(
        [sys.executable, *launcher, *args], env=child_env(PYTHONWARNINGS="ignore"), check=check
    )


@pytest.mark.launch
def test_distributed_extraction_equals_single_process_and_writes_outputs(tmp_path, tiny_teacher):
    _evaluate(tmp_path / "one", tiny_teacher, 1, "--cross")
    _evaluate(tmp_path / "two", tiny_teacher, 2, "--cross", plots=True)
    one = sorted((tmp_path / "one" / "cache").glob("*.pt"))
    two = sorted((tmp_path / "two" / "cache").glob("*.pt"))
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        (fa, la), (fb, lb) = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
        # The 80 validation images, padding removed; features and logits alike.
        assert fa.shape == fb.shape == (80, 32) and la.shape == lb.shape == (80, 40)
        assert torch.allclose(fa, fb, atol=1e-5) and torch.allclose(la, lb, atol=1e-5)
    report = json.loads((tmp_path / "two" / "results.json").read_text())
    rows = report["models"]["tiny"]["probe_vs_full_gallery"]
    assert set(rows) == {"8", "full"} and 0 <= rows["8"]["identification"]["rank1"] <= 1
    assert set(report["models"]["tiny"]["cross_matrix_rank1"]) == {"8", "full"}
    from PIL import Image

    for plot in ("accuracy_vs_resolution.png", "roc.png", "tsne.png"):
        with Image.open(tmp_path / "two" / plot) as image:
            pixels = np.asarray(image.convert("L"), np.float32)
        # Drawn on: far from a blank canvas (lines, markers, labels).
        assert pixels.shape[0] > 200 and pixels.std() > 10 and (pixels < 128).mean() > 0.005
    assert "Rank-1 identification" in (tmp_path / "two" / "results.md").read_text()


@needs_lfw
@pytest.mark.launch
def test_pairs_file_with_a_missing_image_names_it(tmp_path, tiny_teacher):
    person = sorted(p.name for p in LFW.iterdir() if p.is_dir())[0]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(f"1 2\n{person} 1 2\n{person} 1 99\n")
    with pytest.raises(DataError, match=rf"pairs.txt:3: image .*{person}_0099.jpg not found"):
        read_lfw_pairs(pairs, LFW)
    result = _evaluate(
        tmp_path / "out", tiny_teacher, 1, "--pairs", str(pairs), "--data", str(LFW), check=False
    )
    assert result.returncode == 2 and f"{person}_0099.jpg not found" in result.stderr


@needs_lfw
@pytest.mark.launch
def test_lfw_pairs_verification_runs(tmp_path, tiny_teacher):
    people = sorted(p.name for p in LFW.iterdir() if p.is_dir())[:6]
    lines = [f"{p} 1 2" for p in people] + [f"{a} 1 {b} 1" for a, b in zip(people, people[1:])]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join(lines) + "\n")
    _evaluate(tmp_path / "out", tiny_teacher, 1, "--pairs", str(pairs), "--data", str(LFW))
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    v = report["models"]["tiny"]["probe_vs_full_gallery"]["8"]["verification"]
    assert v["genuine_pairs"] == 6 and v["impostor_pairs"] == 5


@pytest.mark.launch
def test_probes_degraded_by_any_training_step(tmp_path, tiny_teacher):
    _evaluate(tmp_path / "out", tiny_teacher, 1, "--degrade", "jpeg:10", "--degrade", "noise:20")
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    rows = report["models"]["tiny"]["probe_vs_full_gallery"]
    assert set(rows) == {"8", "full", "jpeg10", "noise20"}
    cache = sorted((tmp_path / "out" / "cache").glob("*.pt"))
    features = [torch.load(p, weights_only=True)[0] for p in cache]
    # Four conditions, four different feature sets (the probes really were degraded).
    assert len(features) == 4
    assert all(not torch.allclose(a, b) for i, a in enumerate(features) for b in features[i + 1 :])
    assert "jpeg10" in (tmp_path / "out" / "results.md").read_text()
    refused = _evaluate(tmp_path / "bad", tiny_teacher, 1, "--degrade", "motion:3", check=False)
    assert refused.returncode == 2 and "expected STEP:VALUE" in refused.stderr

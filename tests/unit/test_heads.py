"""Margin heads (crossres_dist/heads/) against hand computations, and PartialFC
(crossres_dist/heads/partial_fc.py) against the unsharded head on 1, 2 and 4 gloo ranks, with its
sampling, its checkpoint and exact resume."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from crossres_dist.config import ConfigError, load_config
from crossres_dist.heads import build_margin
from crossres_dist.heads.partial_fc import initial_rows, shard_bounds
from crossres_dist.models import ModelSpec, build_model
from tests.conftest import TINY
from tests.golden import train_in_process

# Three embeddings and four class centres, chosen so the target angles differ.
COS = torch.tensor(
    [[0.9, 0.1, -0.2, 0.3], [0.2, 0.5, 0.4, -0.1], [-0.95, 0.0, 0.1, 0.2]], dtype=torch.float32
)
LABELS = torch.tensor([0, 1, 0])
NORMS = torch.tensor([30.0, 10.0, 22.0])


def settings(head: str, **extra) -> SimpleNamespace:
    base = dict(name=head, margin=None, scale=64.0, adaface_h=0.333, adaface_t_alpha=0.01)
    return SimpleNamespace(**{**base, **extra})


def features_with_norms(norms: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.tensor([n, 0.0]) for n in norms.tolist()])


def expected(targets: list[float]) -> np.ndarray:
    """64 * cos everywhere, 64 * the moved target cosine at each row's label."""
    out = COS.double().numpy() * 64
    for row, (label, value) in enumerate(zip(LABELS.tolist(), targets)):
        out[row, label] = 64 * value
    return out


def test_cosface_subtracts_m_from_the_target_cosine_only():
    logits = build_margin(settings("cosface"))(COS, LABELS, features_with_norms(NORMS))
    targets = [0.9 - 0.35, 0.5 - 0.35, -0.95 - 0.35]
    assert np.allclose(logits.numpy(), expected(targets), atol=1e-4)


def test_arcface_adds_m_to_the_target_angle_and_stays_monotonic_past_pi():
    m = 0.5
    logits = build_margin(settings("arcface"))(COS, LABELS, features_with_norms(NORMS))
    # cos(theta + m) while theta + m <= pi; beyond (the third row: theta = acos(-0.95) = 2.82,
    # + 0.5 > pi) the paper's code continues with cos(theta) - m sin(m).
    targets = [math.cos(math.acos(0.9) + m), math.cos(math.acos(0.5) + m)]
    targets.append(-0.95 - m * math.sin(m))
    assert math.acos(-0.95) + m > math.pi
    assert np.allclose(logits.numpy(), expected(targets), atol=1e-4)


def test_adaface_moves_the_margin_with_the_standardised_norm():
    margin = build_margin(settings("adaface")).eval()  # the running statistics as they are
    margin.norm_mean.fill_(20.0)
    margin.norm_std.fill_(10.0)
    logits = margin(COS, LABELS, features_with_norms(NORMS))
    m, h, eps = 0.4, 0.333, 1e-3
    targets = []
    for cos, norm in zip([0.9, 0.5, -0.95], NORMS.tolist()):
        z = max(-1.0, min(1.0, (norm - 20.0) / (10.0 + eps) * h))
        g_angle, g_add = -m * z, m * z + m
        theta = min(max(math.acos(cos) + g_angle, eps), math.pi - eps)
        targets.append(math.cos(theta) - g_add)
    # A large norm (30: z = 0.333) gets a smaller angular margin, a small one (10: z = -0.333)
    # a larger angular and a smaller additive margin.
    assert np.allclose(logits.numpy(), expected(targets), atol=1e-4)


def test_adaface_statistics_follow_the_batch_in_training_only():
    margin = build_margin(settings("adaface"))
    margin(COS, LABELS, features_with_norms(NORMS))  # training mode: one update
    mean, std = NORMS.mean().item(), NORMS.std().item()
    assert margin.norm_mean.item() == pytest.approx(0.99 * 20 + 0.01 * mean, rel=1e-6)
    assert margin.norm_std.item() == pytest.approx(0.99 * 100 + 0.01 * std, rel=1e-6)
    margin.eval()
    before = margin.norm_mean.clone()
    margin(COS, LABELS, features_with_norms(NORMS))
    assert torch.equal(margin.norm_mean, before)


def test_a_cosine_classifier_keeps_the_linear_keys_and_answers_with_cosines():
    spec = ModelSpec(layers=(1, 1), width=4, num_classes=5, se_reduction=4)
    torch.manual_seed(0)
    linear = build_model(spec)
    torch.manual_seed(0)
    cosine = build_model(ModelSpec(**{**spec.as_dict(), "layers": (1, 1), "classifier": "cosine"}))
    assert set(linear.state_dict()) == set(cosine.state_dict())
    assert torch.equal(linear.fc.weight, cosine.fc.weight)  # the same initial draws
    features, logits = cosine(torch.randn(2, 3, 28, 28))
    centres = torch.nn.functional.normalize(cosine.fc.weight, dim=1)
    manual = torch.nn.functional.normalize(features, dim=1) @ centres.T
    assert torch.allclose(logits, manual, atol=1e-6) and logits.abs().max() <= 1 + 1e-6
    assert not cosine.fc.bias.requires_grad


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["head.name=arcface", "head.margin=2"], r"head\.margin: 2\.0 is outside \[0, 1\.571\) for arcface"),
        (["head.name=cosface", "head.margin=-0.1"], r"head\.margin: -0\.1 is outside \[0, 1\) for cosface"),
        (["head.name=sphereface"], r"head\.name: 'sphereface' is not a registered head"),
        (["head.partial_fc=true"], r"head\.partial_fc: needs a margin head"),
        (["head.name=adaface", "head.partial_fc_rate=1.5"], r"head\.partial_fc_rate: 1\.5 is not in \(0, 1\]"),
        (["head.name=adaface", "head.adaface_h=0"], r"head\.adaface_h: 0\.0 is not in \(0, 1\]"),
    ],
)  # fmt: skip
def test_bad_head_settings_are_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as refused:
        load_config(TINY, ["teacher.checkpoint=x.pt", *overrides])
    assert "\n" not in str(refused.value)


def test_partial_fc_on_one_rank_with_sampling_says_what_happens(tmp_path, tiny_teacher, capsys):
    result, rows = train_in_process(
        [
            f"teacher.checkpoint={tiny_teacher}",
            "head.name=arcface",
            "head.partial_fc=true",
            "head.partial_fc_rate=0.5",
            "data.backend=torchvision",
            "train.precision=fp32",
            "train.device=cpu",
        ],
        tmp_path / "run",
    )
    assert result["step"] == 6 and all(math.isfinite(r.get("train/loss", 0)) for r in rows)
    out = capsys.readouterr().out
    warned = [line for line in out.splitlines() if "head.partial_fc on 1 rank" in line]
    assert len(warned) == 1 and "still keeps only 50% of the negative classes" in warned[0]


def test_an_adaface_run_checkpoints_its_statistics_and_its_cosine_classifier(
    tmp_path, tiny_teacher
):
    result, rows = train_in_process(
        [
            f"teacher.checkpoint={tiny_teacher}",
            "head.name=adaface",
            "data.backend=torchvision",
            "train.precision=fp32",
            "train.device=cpu",
        ],
        tmp_path / "run",
    )
    assert result["step"] == 6
    state = torch.load(tmp_path / "run" / "checkpoints" / "step_00000006.pt", weights_only=True)
    assert state["model_spec"]["classifier"] == "cosine"
    assert set(state["head"]) == {"norm_mean", "norm_std"}
    assert state["head"]["norm_mean"].item() != 20.0  # it moved from the paper's start
    # Validation's top-1 comes from the cosine to the class centres (logits within [-1, 1]).
    assert 0.0 <= result["final"]["val/full/top1"] <= 1.0


def test_partial_fc_draws_its_initial_rows_and_bounds_the_same_for_any_sharding():
    whole = initial_rows(3, 0, 10_000, 8)
    for world in (2, 3, 4):
        parts = [initial_rows(3, *shard_bounds(10_000, r, world), 8) for r in range(world)]
        assert torch.equal(torch.cat(parts), whole)
    assert [shard_bounds(10, r, 4) for r in range(4)] == [(0, 3), (3, 6), (6, 8), (8, 10)]


@pytest.mark.parametrize("head", ["arcface", "adaface"])
def test_partial_fc_keeps_one_shape_every_step_and_its_padding_changes_nothing(head):
    """At rate 0.1 on 1,000 classes the kept set varies from step to step (60-83 classes on the
    issue's check); padded to a fixed width with masked columns, the classifier's shape is the
    same at every step, and the loss, the gradients and the correct count are those of the
    kept classes alone."""
    from crossres_dist.heads.partial_fc import PartialFC

    torch.manual_seed(0)
    features = torch.randn(16, 8)
    labels = torch.randint(0, 1000, (16,))
    widths, kept = set(), set()
    for step in range(6):
        results = {}
        for fixed in (True, False):
            pfc = PartialFC(1000, 8, build_margin(settings(head)), rate=0.1, seed=1)
            pfc.step, pfc.fixed_shape = step, fixed
            seen = []
            pfc.margin.register_forward_pre_hook(lambda _, a, _s=seen: _s.append(a[0].shape[1]))
            x = features.clone().requires_grad_(True)
            out = pfc(x, labels)
            out["ce"].backward()
            results[fixed] = (out["ce"].item(), out["correct"].item(), x.grad, pfc.weight.grad)
            if fixed:
                widths.add(seen[0])
            else:
                kept.add(seen[0])
        (loss, correct, x_grad, w_grad), (loss_u, correct_u, x_grad_u, w_grad_u) = (
            results[True],
            results[False],
        )
        assert loss == pytest.approx(loss_u, rel=1e-6) and correct == correct_u
        assert torch.allclose(x_grad, x_grad_u, atol=1e-7)
        assert torch.allclose(w_grad, w_grad_u, atol=1e-7)
    assert widths == {PartialFC(1000, 8, build_margin(settings(head)), 0.1, 1).columns(16)}
    assert len(kept) > 1  # without the padding the width moves
    assert max(kept) < min(widths) < 1000  # and the padding is far from the whole slice

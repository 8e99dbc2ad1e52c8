"""End-to-end training runs on the bundled faces, on 1 and 2 real processes (torchrun, gloo)."""

import json
import re
import sys

import pytest
import torch

from crossres_dist.checkpointing.manager import load_checkpoint
from crossres_dist.models import ModelSpec, build_model
from tests.conftest import TINY_SPEC, error_lines, results, run_cmd, tiny_args, train_cmd


def _losses(run_dir):
    text = (run_dir / "train.log").read_text()
    return [float(x) for x in re.findall(r"step \d+/\d+ loss ([0-9.]+)", text)]


@pytest.mark.launch
def test_two_process_run_learns_agrees_and_checkpoints(tmp_path, tiny_teacher):
    run_dir = tmp_path / "two"
    run_cmd(
        train_cmd(
            2,
            *tiny_args(
                run_dir, tiny_teacher, "train.max_steps=12", "train.log_every=4", "optim.lr=0.1"
            ),
        )
    )
    losses = _losses(run_dir)
    assert len(losses) == 3 and losses[-1] < losses[0]
    res = results(run_dir)
    assert res["ranks_agree"] and len(res["param_checksum_per_rank"]) == 2
    assert res["step"] == 12 and res["images_seen"] == 12 * 32
    # Checkpoints: the last K=2 and the best; they load in a fresh process into a fresh network.
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["best.pt", "step_00000009.pt", "step_00000012.pt"]
    state = load_checkpoint(run_dir / "checkpoints" / "step_00000012.pt")
    for key in (
        "student",
        "optimizer",
        "schedule",
        "scaler",
        "step",
        "images_seen",
        "curriculum_p",
        "random",
        "config",
        "identities",
        "splits",
        "best_metric",
    ):
        assert key in state, key
    spec = ModelSpec.from_dict(state["model_spec"])
    model = build_model(spec)
    model.load_state_dict(state["student"])
    assert spec == TINY_SPEC
    assert not any(k.startswith("module.") for k in state["student"])
    assert len(state["identities"]) == 40 and state["config"]["method"]["lambda_feat"] == 0.1
    assert (run_dir / "config.yaml").is_file() and (run_dir / "identities.json").is_file()
    assert list((run_dir / "tensorboard").glob("events.*"))


@pytest.mark.launch
def test_teacher_weighted_feature_term_trains_and_validates_on_two_ranks(tmp_path, tiny_teacher):
    """method.feature_weight=teacher_correct: the training log carries the teacher's mean
    weight, and the validation loss is the weighted objective against a cache of the teacher's
    features with its reliability appended (the plain cache's file is not reused for it)."""
    run_dir = tmp_path / "weighted"
    overrides = ["train.max_steps=4", "train.log_every=2", "method.paired=true"]
    run_cmd(
        train_cmd(
            2,
            *tiny_args(run_dir, tiny_teacher, *overrides, "method.feature_weight=teacher_correct"),
        )
    )
    text = (run_dir / "train.log").read_text()
    weights = [float(x) for x in re.findall(r"teacher weight ([0-9.]+)", text)]
    assert len(weights) == 2 and all(0.0 <= w <= 1.0 for w in weights)
    (cache,) = (run_dir / "cache").glob("val_teacher_*.pt")
    assert cache.name.startswith("val_teacher_targets-")
    targets = torch.load(cache, weights_only=True)
    assert targets.shape[1] == TINY_SPEC.feature_dim + 2
    confidence, correct = targets[:, -2], targets[:, -1]
    assert set(correct.unique().tolist()) <= {0.0, 1.0}
    assert ((confidence >= 0) & (confidence <= 1)).all()
    # Where the true identity is the teacher's first choice, no other can be more likely.
    assert (confidence[correct == 1] >= 1 / TINY_SPEC.num_classes).all()
    final = results(run_dir)["final"]
    assert final["val/full/loss"] >= final["val/full/ce"]
    assert results(run_dir)["ranks_agree"]


@pytest.mark.launch
def test_accumulation_two_ranks_equals_one_rank_whole_batch(tmp_path, tiny_teacher):
    # No randomness in the views and BatchNorm on running statistics, so that the only
    # difference is how the 16 images of a step are split over ranks and micro-steps.
    common = (
        "method.p=0",
        "data.grayscale_p=0",
        "data.crop=32",
        "model.bn_mode=frozen",
        "optim.global_batch=16",
        "train.max_steps=2",
        "optim.momentum=0.9",
        "val.every=100",
        "checkpoint.every=100",
    )
    one, two = tmp_path / "one", tmp_path / "two"
    run_cmd(train_cmd(1, *tiny_args(one, tiny_teacher, *common, "data.micro_batch=16")))
    run_cmd(train_cmd(2, *tiny_args(two, tiny_teacher, *common, "data.micro_batch=4")))
    a = load_checkpoint(one / "checkpoints" / "step_00000002.pt")["student"]
    b = load_checkpoint(two / "checkpoints" / "step_00000002.pt")["student"]
    initial = build_model(TINY_SPEC)
    initial.load_state_dict(torch.load(tiny_teacher, weights_only=True))
    moved = max(
        (a[k] - initial.state_dict()[k]).abs().max().item() for k in a if a[k].is_floating_point()
    )
    assert moved > 1e-3  # the steps did change the weights
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key


@pytest.mark.launch
def test_plateau_decision_is_the_same_on_every_rank(tmp_path, tiny_teacher):
    run_dir = tmp_path / "plateau"
    # patience 0 and a threshold no loss can beat: every validation halves the lr.
    run_cmd(
        train_cmd(
            2,
            *tiny_args(
                run_dir,
                tiny_teacher,
                "optim.scheduler=plateau",
                "optim.plateau_patience=0",
                "optim.plateau_threshold=0.99",
                "train.max_steps=4",
                "val.every=1",
            ),
        )
    )
    res = results(run_dir)
    assert res["lr_per_rank"][0] == res["lr_per_rank"][1]
    assert res["lr_per_rank"][0] == pytest.approx(0.05 * 0.5**4)
    assert res["ranks_agree"]


BAD_INPUTS = [
    (["data.train=/nonexistent/faces"], "/nonexistent/faces: dataset folder not found"),
    (["data.val=split:10"], "too few to hold out 10"),
    (["model.num_classes=12"], "model.num_classes: 12, but embedded:orl has 40 identities"),
    (
        ["model.width=8", "teacher.width=8"],
        "key 'conv1.weight' has shape (4, 3, 7, 7), the network needs (8, 3, 7, 7)",
    ),
    (["model.width=8"], "the teacher's feature has 32 dimensions, the student's 64"),
    (["run.output_dir=/proc/forbidden"], "run.output_dir: cannot write to /proc/forbidden"),
    (["optim.global_batch=20"], "optim.global_batch=20 is not a multiple of"),
    (["data.min_images_per_identity=9"], "identity 's1' has 8 training image(s), fewer than 9"),
    (
        ["teacher.checkpoint=/nonexistent/teacher.pt"],
        "/nonexistent/teacher.pt: weights file not found",
    ),
]

# Every case runs through the real entry point (crossres_dist.train.main), in one Python process
# for all of them: each is refused before any training, so a process per case would spend its
# time importing torch. Each case has its own run directory.
_DRIVER = """
import contextlib, io, json, sys
from crossres_dist.train import main
outcomes = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    outcomes.append({"code": code, "stderr": err.getvalue()})
print(json.dumps(outcomes))
"""


@pytest.fixture(scope="module")
def bad_input_outcomes(tmp_path_factory, tiny_teacher):
    root = tmp_path_factory.mktemp("bad-input")
    runs = [root / f"case{i}" / "bad" for i in range(len(BAD_INPUTS))]
    argvs = [[*tiny_args(run, tiny_teacher), *o] for run, (o, _) in zip(runs, BAD_INPUTS)]
    out = run_cmd([sys.executable, "-c", _DRIVER, json.dumps(argvs, default=str)])
    return list(zip(runs, json.loads(out.stdout.strip().splitlines()[-1])))


@pytest.mark.parametrize("case", range(len(BAD_INPUTS)), ids=[m for _, m in BAD_INPUTS])
@pytest.mark.launch
def test_bad_input_stops_before_training_with_one_line(bad_input_outcomes, case):
    message = BAD_INPUTS[case][1]
    run_dir, outcome = bad_input_outcomes[case]
    assert outcome["code"] == 2, outcome
    error = error_lines(outcome["stderr"])
    assert len(error) == 1 and message in error[0], outcome["stderr"][-2000:]
    # Nothing half-made is left behind: no checkpoint directory, no lock held.
    assert not (run_dir / "checkpoints").exists()
    assert not (run_dir / "run.lock").exists() or (run_dir / "run.lock").read_text() == ""


@pytest.mark.launch
def test_mismatched_identities_need_explicit_classifier_replacement(tmp_path):
    torch.manual_seed(0)
    other = tmp_path / "teacher_10ids.pt"
    torch.save(
        build_model(ModelSpec(layers=(1, 1), width=4, num_classes=10, se_reduction=4)).state_dict(),
        other,
    )
    refused = run_cmd(train_cmd(1, *tiny_args(tmp_path / "r1", other)), check=False)
    assert refused.returncode == 2 and "student.replace_classifier=true" in refused.stderr
    run_cmd(
        train_cmd(
            1,
            *tiny_args(
                tmp_path / "r2", other, "student.replace_classifier=true", "train.max_steps=1"
            ),
        )
    )
    assert results(tmp_path / "r2")["step"] == 1


@pytest.mark.launch
def test_pretraining_from_scratch_is_reproducible(tmp_path):
    sums = []
    for name in ("a", "b"):
        run_cmd(train_cmd(1, *tiny_args(tmp_path / name, None, "train.max_steps=3")))
        sums.append(results(tmp_path / name)["param_checksum_per_rank"])
    assert sums[0] == sums[1]


@pytest.mark.launch
def test_bn_recalibration_sets_statistics_not_the_trajectory_and_resumes_exactly(
    tmp_path, tiny_teacher
):
    common = ("train.max_steps=6", "val.every=3", "val.bn_recalibrate_images=64")
    plain, recal, resumed = tmp_path / "plain", tmp_path / "recal", tmp_path / "resumed"
    run_cmd(train_cmd(2, *tiny_args(plain, tiny_teacher, *common)))
    run_cmd(train_cmd(2, *tiny_args(recal, tiny_teacher, *common, "val.bn_recalibrate=mixed")))
    a = load_checkpoint(plain / "checkpoints" / "step_00000006.pt")["student"]
    b = load_checkpoint(recal / "checkpoints" / "step_00000006.pt")["student"]
    teacher = torch.load(tiny_teacher, weights_only=True)
    stats = [k for k in a if k.endswith(("running_mean", "running_var"))]
    # Training never read the statistics: every parameter is the same, bit for bit ...
    for key in a:
        if key not in stats and not key.endswith("num_batches_tracked"):
            assert torch.equal(a[key], b[key]), key
    # ... while the statistics were re-estimated (momentum 0 kept the teacher's in `plain`).
    assert all(torch.equal(a[k], teacher[k]) for k in stats)
    assert all(not torch.equal(b[k], teacher[k]) and torch.isfinite(b[k]).all() for k in stats)
    assert all((b[k] > 0).all() for k in stats if k.endswith("running_var"))
    # The re-estimation views are a function of the step: a resumed run saves the same ones.
    args = tiny_args(resumed, tiny_teacher, *common, "val.bn_recalibrate=mixed")
    run_cmd(train_cmd(2, *args, "train.stop_after_step=3"))
    run_cmd(train_cmd(2, *args))
    c = load_checkpoint(resumed / "checkpoints" / "step_00000006.pt")["student"]
    for key in b:
        assert torch.equal(b[key], c[key]), key

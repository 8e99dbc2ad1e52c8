import torch
import torch.nn.functional as F

from crossres_dist.models import ModelSpec, build_model
from crossres_dist.training.objective import (
    CrossResolutionLoss,
    CrossResolutionObjective,
    Curriculum,
    feature_distance,
    freeze,
    teacher_reliability,
)
from tests.conftest import TINY_SPEC


def test_senet50_shapes_and_parameter_count():
    model = build_model(ModelSpec(num_classes=8631)).eval()
    # SE-ResNet-50 (VGGFace2) has about 26.1M parameters without the classifier.
    backbone = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("fc."))
    assert 25.5e6 < backbone < 26.5e6
    with torch.no_grad():
        feature, logits = model(torch.randn(2, 3, 224, 224))
    assert feature.shape == (2, 2048) and logits.shape == (2, 8631)


def test_tiny_variant_other_sizes():
    model = build_model(TINY_SPEC).eval()
    for size in (28, 56, 97):
        feature, logits = model(torch.randn(3, 3, size, size))
        assert feature.shape == (3, TINY_SPEC.feature_dim) and logits.shape == (3, 40)
    assert TINY_SPEC.feature_dim == 4 * 2 * 4


def test_bn_momentum_zero_keeps_running_statistics():
    model = build_model(TINY_SPEC).train()
    before = model.bn1.running_mean.clone()
    model(torch.randn(4, 3, 28, 28) * 5 + 3)
    assert torch.equal(model.bn1.running_mean, before)


def test_loss_matches_hand_computation():
    torch.manual_seed(0)
    student, teacher = build_model(TINY_SPEC), freeze(build_model(TINY_SPEC))
    x, x_low = torch.randn(4, 3, 28, 28), torch.randn(4, 3, 28, 28)
    y = torch.tensor([0, 1, 2, 3])
    losses = CrossResolutionLoss(student, teacher, CrossResolutionObjective(0.3))(x, x_low, y)
    s_feat, s_logits = student(x_low)
    with torch.no_grad():
        t_feat, _ = teacher.eval()(x)
    ce = -torch.log_softmax(s_logits, 1)[torch.arange(4), y].mean()
    mse = ((s_feat - t_feat) ** 2).sum() / s_feat.numel()
    assert torch.allclose(losses["ce"], ce, atol=1e-6)
    assert torch.allclose(losses["feat"], mse, atol=1e-6)
    assert torch.allclose(losses["loss"], ce + 0.3 * mse, atol=1e-6)
    # Gradients reach the student only; the teacher stays frozen and in eval mode.
    losses["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.conv1.weight.grad is not None and not teacher.training


def test_lambda_zero_is_plain_cross_entropy():
    student = build_model(TINY_SPEC)
    x, y = torch.randn(2, 3, 28, 28), torch.tensor([5, 6])
    losses = CrossResolutionLoss(student, None, CrossResolutionObjective(0.0))(x, x, y)
    assert torch.allclose(losses["loss"], F.cross_entropy(student(x)[1], y))


def test_cosine_feature_loss_is_scale_free_and_matches_hand_computation():
    torch.manual_seed(0)
    a, b = torch.randn(5, 16), torch.randn(5, 16)
    hand = 1 - (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    assert torch.allclose(feature_distance(a, b, "cosine"), hand, atol=1e-6)
    # Scaling both feature vectors (a wider or deeper network) leaves it unchanged; MSE is not.
    assert torch.allclose(feature_distance(10 * a, 10 * b, "cosine"), hand, atol=1e-5)
    assert torch.allclose(
        feature_distance(10 * a, 10 * b, "mse"), 100 * feature_distance(a, b, "mse")
    )


def test_relational_feature_loss_compares_the_batch_similarities_by_hand():
    """Three faces in 2-D. Teacher: faces 0 and 1 at 90 degrees, face 2 equal to face 0.
    Student: all three equal. Cosine rows, teacher [[1,0,1],[0,1,0],[1,0,1]], student all ones:
    squared differences [[0,1,0],[1,0,1],[0,1,0]], per-face means [1/3, 2/3, 1/3]. Scale-free,
    and zero when the student's similarities are the teacher's whatever its features."""
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    student = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    hand = torch.tensor([1 / 3, 2 / 3, 1 / 3])
    assert torch.allclose(feature_distance(student, teacher, "relational"), hand, atol=1e-6)
    assert torch.allclose(feature_distance(5 * student, teacher, "relational"), hand, atol=1e-6)
    rotation = torch.tensor([[0.6, -0.8], [0.8, 0.6]])
    rotated = teacher @ rotation.T  # other features, the same similarities
    assert feature_distance(rotated, teacher, "relational").abs().max() < 1e-6
    assert feature_distance(rotated, teacher, "cosine").abs().max() > 0.3


def test_paired_student_sees_both_views_with_every_term_on_each():
    torch.manual_seed(0)
    student, teacher = build_model(TINY_SPEC).eval(), freeze(build_model(TINY_SPEC))
    x, x_low = torch.randn(4, 3, 28, 28), torch.randn(4, 3, 28, 28)
    y = torch.tensor([0, 1, 2, 3])
    objective = CrossResolutionObjective(0.5, "cosine")
    paired = CrossResolutionLoss(student, teacher, objective, paired=True)(x, x_low, y)
    with torch.no_grad():
        t_feat, _ = teacher(x)
    low = objective(*student(x_low), y, t_feat)
    full = objective(*student(x), y, t_feat)
    # Means over 2 x 4 samples: the average of the two halves' means.
    for key in ("ce", "feat", "loss"):
        assert torch.allclose(paired[key], (low[key] + full[key]) / 2, atol=1e-5), key
    assert paired["logits"].shape == (4, TINY_SPEC.num_classes)


def test_teacher_weighted_feature_term_by_hand():
    """Two faces, identity 0 and 1. The teacher gives face 0 logits (2, 0): probability of its
    true identity e^2 / (e^2 + 1) = 0.881, its first choice; face 1 logits (3, 0): probability
    1 / (e^3 + 1) = 0.047, wrong. The cosine distances are 1 (orthogonal) and 2 (opposite)."""
    logits = torch.tensor([[2.0, 0.0], [3.0, 0.0]])
    labels = torch.tensor([0, 1])
    reliability = teacher_reliability(logits, labels)
    p0, p1 = torch.e**2 / (torch.e**2 + 1), 1 / (torch.e**3 + 1)
    assert torch.allclose(reliability, torch.tensor([[p0, 1.0], [p1, 0.0]]), atol=1e-6)
    student = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    teacher = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    features, class_logits = student, torch.zeros(2, 2)  # CE = log 2 whatever the weighting
    plain = CrossResolutionObjective(1.0, "cosine")(features, class_logits, labels, teacher)
    assert torch.allclose(plain["feat"], torch.tensor(1.5))
    expected = {"teacher_confidence": (p0 * 1 + p1 * 2) / 2, "teacher_correct": 0.5}
    for kind, feat in expected.items():
        weighted = CrossResolutionObjective(1.0, "cosine", kind)
        assert weighted.weighs_by_teacher
        out = weighted(features, class_logits, labels, teacher, reliability=reliability)
        assert torch.allclose(out["feat"], torch.tensor(float(feat)), atol=1e-6), kind
        assert torch.allclose(out["loss"], out["ce"] + out["feat"], atol=1e-6)
        assert torch.allclose(
            out["teacher_weight"], reliability[:, 0 if "conf" in kind else 1].mean()
        )
    # Summed (validation's reduction): the same terms, not averaged.
    summed = CrossResolutionObjective(1.0, "cosine", "teacher_correct")(
        features, class_logits, labels, teacher, reduction="sum", reliability=reliability
    )
    assert torch.allclose(summed["feat"], torch.tensor(1.0))
    # Without a teacher term, no weight is asked for.
    assert not CrossResolutionObjective(0.0, "cosine", "teacher_correct").weighs_by_teacher


def test_teacher_weighted_task_takes_the_teachers_logits_on_the_full_view():
    torch.manual_seed(0)
    student, teacher = build_model(TINY_SPEC).eval(), freeze(build_model(TINY_SPEC))
    x, x_low = torch.randn(4, 3, 28, 28), torch.randn(4, 3, 28, 28)
    y = torch.tensor([0, 1, 2, 3])
    objective = CrossResolutionObjective(0.5, "cosine", "teacher_confidence")
    paired = CrossResolutionLoss(student, teacher, objective, paired=True)(x, x_low, y)
    with torch.no_grad():
        t_feat, t_logits = teacher(x)
    weight = torch.softmax(t_logits, 1)[torch.arange(4), y]
    d_low = feature_distance(student(x_low)[0], t_feat, "cosine")
    d_full = feature_distance(student(x)[0], t_feat, "cosine")
    hand = torch.cat([weight * d_low, weight * d_full]).mean()
    assert torch.allclose(paired["feat"], hand, atol=1e-5)
    assert torch.allclose(paired["teacher_weight"], weight.mean(), atol=1e-6)


def test_curriculum_schedule_values():
    c = Curriculum(enabled=True, p=0.1, start=0.1, increment=0.1, step_images=35000)
    assert c.p_at(0) == 0.1
    assert c.p_at(34999) == 0.1
    assert abs(c.p_at(35000) - 0.2) < 1e-12
    assert abs(c.p_at(35000 * 4 + 1) - 0.5) < 1e-12
    assert c.p_at(35000 * 50) == 1.0
    assert Curriculum(enabled=False, p=0.3).p_at(10**9) == 0.3


def test_resume_restores_every_global_generator_exactly():
    import random

    import numpy as np

    from crossres_dist.training.state import random_state, restore_random_state

    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached Gaussian in Python's generator
    np.random.standard_normal()  # and one in NumPy's, after moving its position
    np.random.random(5)
    saved = random_state()

    def draws():
        return (
            random.gauss(0, 1),
            random.random(),
            np.random.standard_normal(),
            np.random.random(3).tolist(),
            torch.rand(2).tolist(),
        )

    expected = draws()
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    restore_random_state(saved)
    again = draws()
    assert again == expected
    # A checkpoint of the earlier layout (keys only) still restores.
    old = {"python": saved["python"], "numpy": saved["numpy"], "torch": saved["torch"]}
    restore_random_state(old)

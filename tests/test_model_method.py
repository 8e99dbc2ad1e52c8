import torch
import torch.nn.functional as F

from crossres_dist.method import CrossResolutionLoss, Curriculum, freeze
from crossres_dist.model import SEResNet, SEResNetSpec
from tests.conftest import TINY_SPEC


def test_senet50_shapes_and_parameter_count():
    model = SEResNet(SEResNetSpec(num_classes=8631)).eval()
    # SE-ResNet-50 (VGGFace2) has about 26.1M parameters without the classifier.
    backbone = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("fc."))
    assert 25.5e6 < backbone < 26.5e6
    with torch.no_grad():
        feature, logits = model(torch.randn(2, 3, 224, 224))
    assert feature.shape == (2, 2048) and logits.shape == (2, 8631)


def test_tiny_variant_other_sizes():
    model = SEResNet(TINY_SPEC).eval()
    for size in (28, 56, 97):
        feature, logits = model(torch.randn(3, 3, size, size))
        assert feature.shape == (3, TINY_SPEC.feature_dim) and logits.shape == (3, 40)
    assert TINY_SPEC.feature_dim == 4 * 2 * 4


def test_bn_momentum_zero_keeps_running_statistics():
    model = SEResNet(TINY_SPEC).train()
    before = model.bn1.running_mean.clone()
    model(torch.randn(4, 3, 28, 28) * 5 + 3)
    assert torch.equal(model.bn1.running_mean, before)


def test_loss_matches_hand_computation():
    torch.manual_seed(0)
    student, teacher = SEResNet(TINY_SPEC), freeze(SEResNet(TINY_SPEC))
    x, x_low = torch.randn(4, 3, 28, 28), torch.randn(4, 3, 28, 28)
    y = torch.tensor([0, 1, 2, 3])
    losses = CrossResolutionLoss(student, teacher, lambda_feat=0.3)(x, x_low, y)
    s_feat, s_logits = student(x_low)
    with torch.no_grad():
        t_feat, _ = teacher.eval()(x)
    ce = -torch.log_softmax(s_logits, 1)[torch.arange(4), y].mean()
    mse = ((s_feat - t_feat) ** 2).sum() / s_feat.numel()
    assert torch.allclose(losses["ce"], ce, atol=1e-6)
    assert torch.allclose(losses["mse"], mse, atol=1e-6)
    assert torch.allclose(losses["loss"], ce + 0.3 * mse, atol=1e-6)
    # Gradients reach the student only; the teacher stays frozen and in eval mode.
    losses["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.conv1.weight.grad is not None and not teacher.training


def test_lambda_zero_is_plain_cross_entropy():
    student = SEResNet(TINY_SPEC)
    x, y = torch.randn(2, 3, 28, 28), torch.tensor([5, 6])
    losses = CrossResolutionLoss(student, None, 0.0)(x, x, y)
    assert torch.allclose(losses["loss"], F.cross_entropy(student(x)[1], y))


def test_curriculum_schedule_values():
    c = Curriculum(enabled=True, p=0.1, start=0.1, increment=0.1, step_images=35000)
    assert c.p_at(0) == 0.1
    assert c.p_at(34999) == 0.1
    assert abs(c.p_at(35000) - 0.2) < 1e-12
    assert abs(c.p_at(35000 * 4 + 1) - 0.5) < 1e-12
    assert c.p_at(35000 * 50) == 1.0
    assert Curriculum(enabled=False, p=0.3).p_at(10**9) == 0.3

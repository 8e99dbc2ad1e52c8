"""The loop's parts on their own, without torch.distributed: when it acts (Cadence), what it logs
(MetricWindow) and what it counts as skipped (NonFiniteSteps)."""

import torch

from crossres_dist.training.step_control import Cadence, MetricWindow, NonFiniteSteps


def test_cadence_logs_validates_saves_and_syncs_when_asked():
    cadence = Cadence(total_steps=12, log_every=4, val_every=6, checkpoint_every=5, sync_every=3)
    moments = {step: cadence.at(step) for step in range(1, 13)}
    assert [s for s, m in moments.items() if m.log] == [4, 8, 12]
    assert [s for s, m in moments.items() if m.validate] == [6, 12]
    assert [s for s, m in moments.items() if m.save] == [5, 6, 10, 12]  # validation saves too
    # Every log, save and stop is a sync point, and every third step besides.
    assert [s for s, m in moments.items() if m.sync] == [3, 4, 5, 6, 8, 9, 10, 12]
    assert not any(m.stop for m in moments.values())
    stopping = Cadence(12, 4, 6, 5, 100, stop_after_step=7).at(7)
    assert stopping.stop and stopping.sync and not stopping.save


def test_the_last_step_always_logs_validates_and_saves():
    last = Cadence(total_steps=7, log_every=5, val_every=5, checkpoint_every=5, sync_every=5).at(7)
    assert last.log and last.validate and last.save and last.sync


def test_metric_window_means_and_restarts():
    window = MetricWindow(torch.device("cpu"))
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    labels = torch.tensor([0, 0, 0])
    for loss in (1.0, 3.0):
        losses = {
            "loss": torch.tensor(loss),
            "ce": torch.tensor(loss / 2),
            "feat": torch.tensor(0.25),
            "logits": logits,
        }
        window.add(losses, labels, world=1)
    values = window.reduce(world=1)
    assert values["train/loss"] == 2.0 and values["train/ce"] == 1.0
    assert values["train/feat"] == 0.25
    assert values["train/top1"] == 4 / 6  # 2 of 3 right, twice
    assert window.micro_steps == 0 and window.sums.abs().sum() == 0


def test_metric_window_reports_the_teachers_weight_only_when_weighted():
    window = MetricWindow(torch.device("cpu"))
    base = {"loss": torch.tensor(1.0), "ce": torch.tensor(1.0), "feat": torch.tensor(0.0)}
    base["logits"] = torch.tensor([[1.0, 0.0]])
    window.add(base, torch.tensor([0]), world=1)
    assert "train/teacher_weight" not in window.reduce(world=1)
    for weight in (0.2, 0.6):
        window.add({**base, "teacher_weight": torch.tensor(weight)}, torch.tensor([0]), world=1)
    assert abs(window.reduce(world=1)["train/teacher_weight"] - 0.4) < 1e-6


def test_nonfinite_steps_count_in_a_row_and_in_all():
    steps = NonFiniteSteps(torch.device("cpu"), total_so_far=2)
    for step, bad in ((5, 1.0), (6, 1.0), (7, 0.0), (8, 1.0)):
        steps.update(torch.tensor(bad), step)
    assert steps.read() == (1, 5, 8)

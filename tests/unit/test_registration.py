"""Adding a component is its module and one registration: a throwaway degradation step, protocol
and architecture, each registered inside its test (no file of the project edited), are picked up
by the configuration's checks, ``--help``, the errors that list the known ones, and the docs'
listings (tools/listings.py), and work where they are used. Each is removed again afterwards.
"""

import numpy as np
import pytest
import torch
import torch.nn as nn

from crossres_dist.config import ConfigError, load_config
from crossres_dist.eval import command
from crossres_dist.eval.protocols import PROTOCOLS, Protocol, protocols_table
from crossres_dist.eval.protocols import register as register_protocol
from crossres_dist.eval.protocols import unregister as unregister_protocol
from crossres_dist.models import (
    Architecture,
    ModelSpec,
    architectures_table,
    build_model,
)
from crossres_dist.models import register as register_architecture
from crossres_dist.models import unregister as unregister_architecture
from crossres_dist.settings_help import format_settings_help
from pipelines import DALI_AVAILABLE
from pipelines.degradations import (
    condition_label,
    order,
    parse_condition,
    parse_steps,
    register,
    steps_table,
    unregister,
)
from pipelines.degradations.base import GraphStep, uniform_in
from pipelines.sources import load_source
from pipelines.streams import claim, release
from tests.conftest import TINY
from tests.fixtures.views import degraded_views


class Brighten(GraphStep):
    """A throwaway step: every pixel brighter by a number of levels."""

    name = "brighten"
    meaning = "a throwaway step: every pixel brighter by some levels"
    field = "brighten_levels"
    default = (1.0, 2.0)
    bounds = (0.0, 50.0)
    label = "brighter"

    def draw(self, u, applied, value_range, shorter, uniform):
        return {self.field: np.where(applied, uniform_in(u, value_range), 0).astype(np.float32)}

    def twin(self, image, value, frame):
        return (image + value).clamp(0, 255)

    def dali(self, image, value, frame):
        from nvidia.dali import fn, types

        brighter = fn.cast(image, dtype=types.FLOAT) + value
        return fn.cast(brighter, dtype=types.UINT8)


@pytest.fixture
def brighten():
    claim("brighten.applies", 90)
    claim("brighten.value", 91)
    step = register(Brighten(), after="downsample")
    yield step
    unregister("brighten")
    release("brighten.applies")
    release("brighten.value")


def _config(*overrides: str):
    return load_config(str(TINY), ["teacher.checkpoint=unused.pt", *overrides])


def test_a_registered_step_is_checked_listed_and_applied(brighten):
    assert order().index("brighten") == order().index("downsample") + 1
    assert parse_steps(["brighten:0.5", "downsample"]) == (("downsample", 1.0), ("brighten", 0.5))
    cfg = _config("method.degradations=[downsample, brighten:0.5]", "method.ranges.brighten=[2, 4]")
    assert cfg.method.ranges_by_key()["ranges.brighten"] == [2, 4]
    with pytest.raises(ConfigError, match=r"method\.ranges\.brighten: \[2\.0, 60\.0\]: needs"):
        _config("method.ranges.brighten=[2, 60]")
    assert "brighten (a throwaway step: every pixel brighter by some levels" in " ".join(
        format_settings_help().split()
    )
    assert "| `brighten` | a throwaway step" in steps_table()
    assert "brighten" in command.parser().format_help()  # --degrade's help
    condition = parse_condition("brighten:8")
    assert condition == {"brighten_levels": 8.0} and condition_label(condition) == "brighter8"
    # Both backends apply it: the student view 8 levels above the clean one (below saturation).
    samples = load_source("embedded:orl").samples[:4]
    for backend in ("torchvision", "dali") if DALI_AVAILABLE else ("torchvision",):
        views = degraded_views(backend, samples, condition)
        below = views["teacher_view"] < 200
        shift = (views["student_view"] - views["teacher_view"])[below]
        assert torch.allclose(shift, torch.full_like(shift, 8.0), atol=1.01), backend


def test_a_step_whose_streams_are_not_in_the_table_is_refused():
    with pytest.raises(KeyError, match="random stream 'brighten.applies' is not in"):
        register(Brighten())
    assert "brighten" not in order()


class Throwaway(Protocol):
    name = "throwaway"
    summary = "a throwaway benchmark of nothing"


def test_a_registered_protocol_is_offered_and_listed():
    register_protocol(Throwaway)
    try:
        help_text = " ".join(command.parser().format_help().split())
        assert "throwaway: a throwaway benchmark of nothing" in help_text
        args = command.parser().parse_args(
            ["--protocol", "throwaway", "--checkpoint", "c.pt", "--config", "demo", "--out", "o"]
        )
        assert args.protocol == "throwaway"
        assert "| `throwaway` | a throwaway benchmark of nothing | yes |" in protocols_table()
        with pytest.raises(ValueError, match="'throwaway' is registered already"):
            register_protocol(Throwaway)
    finally:
        unregister_protocol("throwaway")
    assert "throwaway" not in PROTOCOLS


class Tiny(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.body = nn.Linear(3, 8)
        self.fc = nn.Linear(8, spec.num_classes)


def test_a_registered_architecture_is_checked_listed_and_built():
    register_architecture(
        Architecture(
            name="throwaway_net",
            network=Tiny,
            fixed={},
            feature_dim=lambda spec: 8,
            summary="a throwaway network",
        )
    )
    try:
        assert _config("model.arch=throwaway_net").model.arch == "throwaway_net"
        assert "throwaway_net (a throwaway network)" in " ".join(format_settings_help().split())
        assert "| `throwaway_net` | a throwaway network |" in architectures_table()
        model = build_model(ModelSpec(arch="throwaway_net", num_classes=5))
        assert isinstance(model, Tiny) and model.fc.out_features == 5
    finally:
        unregister_architecture("throwaway_net")
    with pytest.raises(ConfigError, match="model.arch: 'throwaway_net' is not a registered"):
        _config("model.arch=throwaway_net")

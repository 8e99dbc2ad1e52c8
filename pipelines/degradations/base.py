"""What a degradation step is: one module per step (this package) owns all of it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch

from pipelines.streams import stream


class Step(ABC):
    """A degradation step. A step subclasses GraphStep (in the image graph, before the crop:
    ``twin`` and ``dali``) or ViewStep (on the finished, normalised view: ``on_view``, the same
    torch code for both backends), sets the class attributes and defines ``draw``.

    The plan carries the step's ``field`` for every sample, 0 where the step is not applied, so
    that both backends read the same named numbers and every draw is a pure function of
    (seed, epoch, position)."""

    name: str  # as written in method.degradations and --degrade
    meaning: str  # one line: what it does and its unit ("--help" and docs/recipe.md list it)
    field: str  # the plan field holding its parameter
    default: tuple  # the range when nothing is configured
    bounds: tuple[float, float]  # what a configured range may span
    label: str  # its prefix in report labels ("blur" -> "blur2")
    in_graph: bool  # in the image graph (DALI and the twin), else on the finished view
    dali_type: str = "FLOAT"  # the DALI type of its field
    # Further plan fields it draws, beyond `field`: name -> (NumPy dtype, DALI type).
    extra_fields: dict[str, tuple[type, str]] = {}

    @property
    def range_key(self) -> str:
        """Where its range is configured: method.ranges.<its name> (downsample's is the method's
        own method.resolutions)."""
        return f"ranges.{self.name}"

    @property
    def streams(self) -> tuple[int, int]:
        """(whether it applies, its parameter): its rows ``NAME.applies`` and ``NAME.value`` in
        pipelines/streams.py, the one table of random streams."""
        return stream(f"{self.name}.applies"), stream(f"{self.name}.value")

    @property
    def fields(self) -> dict[str, tuple[type, str]]:
        """Every plan field of the step: name -> (NumPy dtype, DALI type). `field` is float32 in
        the plan (whole numbers where the step needs them) and `dali_type` in the graph."""
        return {self.field: (np.float32, self.dali_type), **self.extra_fields}

    @abstractmethod
    def draw(
        self,
        u: np.ndarray,
        applied: np.ndarray,
        value_range: tuple,
        shorter: int,
        uniform: Callable[[str], np.ndarray],
    ) -> dict[str, np.ndarray]:
        """The step's fields for a plan's samples: `u` its parameter stream's draws, `applied`
        the samples it applies to, `shorter` the resized shorter side, `uniform(k)` any
        stream's draws, by its name in pipelines/streams.py."""

    def check_range(self, values) -> str | None:
        """Why a configured range is not usable (None: it is)."""
        low, high = self.bounds
        if len(values) != 2 or not low <= values[0] <= values[1] <= high:
            return f"{list(values)}: needs [low, high] within [{low:g}, {high:g}]"
        return None

    def condition(self, value: float) -> dict[str, float]:
        """The plan fields of an evaluation condition ``name:value``."""
        return {self.field: value}

    def for_probes(self, fields: dict[str, np.ndarray], positions: np.ndarray) -> None:
        """Adjust an evaluation condition's fields per probe (by its position), in place. Most
        steps apply one value to every probe and leave the fields as they are."""
        return None


class GraphStep(Step):
    """A step in the image graph: CHW float 0..255 (twin) / HWC uint8 DataNode (DALI), on the
    whole image resized to data.resize_shorter (`frame`: its size, full_h, full_w,
    interpolation). The two must agree (tests/unit/test_degradations.py)."""

    in_graph = True

    @abstractmethod
    def twin(self, image: torch.Tensor, value: float, frame: dict) -> torch.Tensor:
        """The step on the torchvision twin's image."""

    @abstractmethod
    def dali(self, image, value, frame: dict):
        """The same step as DALI operators on the graph's image."""


class ViewStep(Step):
    """A step on the finished view: batch (with the plan's fields as host tensors) -> student
    view, one torch implementation for both backends."""

    in_graph = False

    @abstractmethod
    def on_view(self, batch: dict, mean: tuple[float, ...], scale: float) -> torch.Tensor:
        """The student view with the step applied."""


def uniform_in(u: np.ndarray, value_range: tuple) -> np.ndarray:
    low, high = value_range
    return low + (high - low) * u

"""The one table of random streams (pipelines/streams.py): no number is used twice, every
registered step's streams are rows of it, and no draw in the pipelines names a stream by number.
"""

import ast
from pathlib import Path

import numpy as np
import pytest

from pipelines.degradations import STEPS
from pipelines.streams import STREAMS, claim, release, stream, uniform

REPO = Path(__file__).resolve().parents[2]


def test_no_two_streams_share_a_number():
    numbers = list(STREAMS.values())
    shared = {n: [s for s, m in STREAMS.items() if m == n] for n in numbers if numbers.count(n) > 1}
    assert not shared, f"streams sharing a number: {shared}"


def test_every_registered_step_draws_from_rows_of_the_table():
    for name, step in STEPS.items():
        assert step.streams == (STREAMS[f"{name}.applies"], STREAMS[f"{name}.value"])


def test_the_numbers_released_before_the_table_are_kept():
    """Runs made before the table replay: every stream kept the number it had."""
    kept = {"crop_x": 0, "crop_y": 1, "grayscale": 2, "degraded": 3, "hflip": 5}
    kept |= {"downsample.applies": 15, "downsample.value": 4, "noise.seed": 22}
    kept |= {"gaussian_blur.applies": 16, "gaussian_blur.value": 17, "jpeg.applies": 18}
    kept |= {"jpeg.value": 19, "noise.applies": 20, "noise.value": 21, "gamma.applies": 23}
    kept |= {"gamma.value": 24}
    assert {name: STREAMS[name] for name in kept} == kept


def test_an_unknown_stream_is_named_and_a_taken_number_refused():
    with pytest.raises(
        KeyError, match="random stream 'shake.value' is not in pipelines/streams.py"
    ):
        stream("shake.value")
    with pytest.raises(ValueError, match=r"random stream number 17 is 'gaussian_blur.value''s"):
        claim("shake.value", 17)
    claim("shake.value", 99)
    try:
        draws = uniform(1, 0, np.arange(4), stream("shake.value"))
        assert draws.shape == (4,) and ((0 <= draws) & (draws < 1)).all()
    finally:
        release("shake.value")
    assert "shake.value" not in STREAMS


def _numbered_draws(source: str, where: str) -> list[str]:
    """Draws in `source` whose stream is a number, not a name: the hash uniform(seed, epoch,
    positions, NUMBER) not given stream(NAME), or a step's uniform(NUMBER)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("uniform", "draws"):
            which = node.args[3] if len(node.args) == 4 else node.args[0] if node.args else None
            if isinstance(which, ast.Constant) and type(which.value) is int:
                found.append(f"{where}:{node.lineno}")
    return found


def test_every_draw_takes_its_stream_from_the_table_by_name():
    found = [
        hit
        for path in sorted((REPO / "pipelines").rglob("*.py"))
        for hit in _numbered_draws(path.read_text(), str(path.relative_to(REPO)))
    ]
    assert not found, f"draws naming a stream by number: {found}"
    # The check sees one where there is one.
    assert _numbered_draws("x = uniform(seed, 0, where, 3)\ny = uniform(5)", "f") == ["f:1", "f:2"]
    assert _numbered_draws('uniform(seed, 0, where, stream("crop_x"))', "f") == []

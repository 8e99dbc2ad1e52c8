"""Every random stream of the data plans, by name: the one table that every draw takes its
stream from (plans.uniform(seed, epoch, positions, stream)).

A stream is a number mixed into the counter-based hash, so that each draw is a pure function of
(seed, epoch, position, stream). Two users of one number would draw the same numbers: two
degradations would be silently correlated (tests/unit/test_streams.py checks that no number is
used twice). A number never changes once released, or earlier runs would not replay; a new
step takes numbers no row below uses (and ``claim`` refuses one in use).

Not in this table, because they are not this hash: the epoch's order (NumPy's generator seeded
with [seed, 1, epoch], plans.TrainPlanner.permutation) and PartialFC's class sampling (its own
hash of (seed, step, class), crossres_dist/heads/partial_fc.py).
"""

from __future__ import annotations

import numpy as np

STREAMS: dict[str, int] = {
    # Every view (plans.TrainPlanner.plan).
    "crop_x": 0,
    "crop_y": 1,
    "grayscale": 2,
    "degraded": 3,  # whether the sample's student view is degraded at all (method.p)
    "hflip": 5,
    # The degradation steps (pipelines/degradations/): whether each applies, and its parameter.
    "downsample.applies": 15,
    "downsample.value": 4,  # the resolution: the stream it had before there were other steps
    "gaussian_blur.applies": 16,
    "gaussian_blur.value": 17,
    "jpeg.applies": 18,
    "jpeg.value": 19,
    "noise.applies": 20,
    "noise.value": 21,
    "noise.seed": 22,  # the seed of the sample's noise field
    "gamma.applies": 23,
    "gamma.value": 24,
    "motion_blur.applies": 25,
    "motion_blur.value": 26,  # the blur's length
    "motion_blur.angle": 27,
}
# Numbers 6-14 have never been used: the steps took theirs from 15 up.


def stream(name: str) -> int:
    """The number of the stream called `name`; one line naming it if no row has it."""
    try:
        return STREAMS[name]
    except KeyError:
        raise KeyError(
            f"random stream {name!r} is not in pipelines/streams.py's table: add it there, "
            "with a number no other stream uses"
        ) from None


def claim(name: str, number: int) -> None:
    """Add a stream at run time (a step registered outside this package); refused if the name
    or the number is taken."""
    if name in STREAMS:
        raise ValueError(f"random stream {name!r} exists already (number {STREAMS[name]})")
    taken = {n: s for s, n in STREAMS.items()}
    if number in taken:
        raise ValueError(f"random stream number {number} is {taken[number]!r}'s")
    STREAMS[name] = number


def release(name: str) -> None:
    """Remove a stream added with ``claim``."""
    STREAMS.pop(name, None)


def uniform(seed: int, epoch: int, positions: np.ndarray, number: int) -> np.ndarray:
    """Counter-based uniform draws in [0, 1): a splitmix64 hash of (seed, epoch, position, the
    stream's number), vectorised, so any sample's draw can be computed without the ones before it."""
    with np.errstate(over="ignore"):
        x = (
            np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
            ^ np.uint64(epoch) * np.uint64(0xBF58476D1CE4E5B9)
            ^ np.uint64(number) * np.uint64(0x94D049BB133111EB)
        ) + positions.astype(np.uint64)
        for _ in range(2):
            x = x + np.uint64(0x9E3779B97F4A7C15)
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)

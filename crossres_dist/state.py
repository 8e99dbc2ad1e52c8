"""What a checkpoint keeps of the process beyond the networks and the optimizer: every global
random generator, whole, so that a resumed run draws what an uninterrupted one would."""

from __future__ import annotations

import random

import numpy as np
import torch


def random_state() -> dict:
    """Every global generator's whole state: Python's (with its cached Gaussian), NumPy's (with
    its position in the key and its cached Gaussian) and torch's CPU generator."""
    _, words, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": list(words),
        "python_gauss": gauss,
        "numpy": keys.tolist(),
        "numpy_pos": int(pos),
        "numpy_gauss": [int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }


def restore_random_state(saved: dict) -> None:
    """The state random_state() saved. Checkpoints written before the positions were kept resume
    with position 0, as they always did."""
    torch.set_rng_state(saved["torch"])
    random.setstate((3, tuple(saved["python"]), saved.get("python_gauss")))
    has_gauss, cached = saved.get("numpy_gauss", [0, 0.0])
    keys = np.array(saved["numpy"], np.uint32)
    np.random.set_state(("MT19937", keys, saved.get("numpy_pos", 0), has_gauss, cached))

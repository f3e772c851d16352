"""Interleaved spirals: a data function hpjax calls with the keys of conf/data/spirals.yaml."""

import numpy as np


def spirals(n_samples: int = 1500, num_classes: int = 3, noise: float = 0.3,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): 2-D points on `num_classes` spiral arms, with Gaussian noise; hpjax splits them."""
    rng = np.random.default_rng(seed)
    y = np.arange(n_samples) % num_classes
    t = rng.uniform(0.25, 1.0, n_samples)
    angle = 3 * np.pi * t + 2 * np.pi * y / num_classes
    x = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1)
    return x + noise * 0.1 * rng.normal(size=x.shape), y

"""The diffusion index (DI) of Gu & Dong: how evenly an attribution map spreads over the input pixels."""

from __future__ import annotations

import numpy as np


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values: 0 when all are equal, (n - 1) / n when one holds everything.

    Computed from the sorted values, G = sum_i (2i - n - 1) v_(i) / (n sum v), in float64.
    """
    flat = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if flat.size == 0:
        raise ValueError("the Gini coefficient of an empty map is undefined")
    if not np.isfinite(flat).all():
        raise ValueError("attribution map contains NaN or infinite values")
    if flat[0] < 0:
        raise ValueError("the Gini coefficient needs non-negative values (pass absolute attributions)")
    total = flat.sum()
    if total == 0:
        raise ValueError("the Gini coefficient of an all-zero map is undefined")
    n = flat.size
    ranks = np.arange(1, n + 1, dtype=np.float64)
    return float(np.sum((2.0 * ranks - n - 1.0) * flat) / (n * total))


def diffusion_index(attribution: np.ndarray) -> float:
    """DI = (1 - Gini(|attribution|)) * 100, in [0, 100]: higher means more input pixels take part.

    A uniform map scores 100, a single engaged pixel among n scores 100 / n. An all-zero map (no input pixel
    changes the detector, e.g. a window on a flat area) engages nothing and scores 0.
    """
    magnitude = np.abs(np.asarray(attribution, dtype=np.float64))
    if magnitude.size and np.isfinite(magnitude).all() and not magnitude.any():
        return 0.0
    return (1.0 - gini(magnitude)) * 100.0

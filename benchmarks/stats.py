"""Intervals for benchmark figures: Wilson for proportions, a seeded bootstrap for means.

A normal-approximation interval says "1.000 ± 0.000" for 30 hits in 30 runs, as if the
probability were known exactly; Wilson's interval does not collapse at 0 or 1. Means get a
percentile bootstrap (2,000 resamples by default), seeded, so a figure repeats exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
RESAMPLES = 2000
BOOT_SEED = 20250501  # any fixed number: the intervals repeat exactly from run to run


def wilson(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default)."""
    if n <= 0:
        raise ValueError("a proportion needs at least one trial")
    if not 0 <= hits <= n:
        raise ValueError(f"hits must lie in 0..{n}, got {hits}")
    p = hits / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    lo = 0.0 if hits == 0 else max(0.0, centre - half)  # the ends are exact there; rounding is not
    hi = 1.0 if hits == n else min(1.0, centre + half)
    return lo, hi


def _clean(values: Sequence[float | None]) -> np.ndarray:
    return np.array([v for v in values if v is not None], dtype=np.float64)


def bootstrap_mean(
    values: Sequence[float | None], *, resamples: int = RESAMPLES, seed: int = BOOT_SEED, level: float = 0.95,
) -> tuple[float, float, float] | None:
    """Mean and its percentile-bootstrap interval; None-s are dropped, None when nothing is left."""
    v = _clean(values)
    if v.size == 0:
        return None
    mean = float(v.mean())
    if v.size == 1 or np.all(v == v[0]):
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return mean, float(lo), float(hi)


def paired_bootstrap_diff(
    a: Sequence[float | None], b: Sequence[float | None], *, resamples: int = RESAMPLES, seed: int = BOOT_SEED,
    level: float = 0.95,
) -> tuple[float, float, float] | None:
    """Mean of a - b over the seeds both have, with a bootstrap interval that resamples seeds.

    The two sequences are aligned by seed (common random numbers), so resampling pairs keeps
    what the seeds share out of the interval.
    """
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    d = [x - y for x, y in zip(a, b) if x is not None and y is not None]
    return bootstrap_mean(d, resamples=resamples, seed=seed, level=level)

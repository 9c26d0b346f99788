"""Timing shared by the benchmark scripts: interleaved medians.

These machines are noisy, and the noise drifts over seconds. Timing contender A's
repeats, then B's, lets a burst of load fall on one of them only. :func:`race` warms
every contender up, then runs the repeats round-robin (A, B, C, A, B, C, ...), so that
drifting load falls on all of them alike and their ratios stay meaningful.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable


def race(runners: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds of one call of each runner, measured round-robin.

    Each runner must block until its work is done (``jax.block_until_ready``).
    """
    for run in runners.values():
        for _ in range(warmup):
            run()
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}

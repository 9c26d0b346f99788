"""Timing shared by the benchmark scripts: interleaved medians, and fresh processes.

These machines are noisy, and the noise drifts over seconds. Timing contender A's
repeats, then B's, lets a burst of load fall on one of them only. :func:`race` warms
every contender up, then runs the repeats round-robin (A, B, C, A, B, C, ...), so that
drifting load falls on all of them alike and their ratios stay meaningful.

Compile time and peak memory are measured in a fresh process per contender
(:func:`run_child`), so that one contender's compile caches and memory never count for
another.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
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


def rounds(runners: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each call of each runner over ``repeats`` rounds, one call of each per
    round, the rounds going through every order of the runners in turn.

    For ratios taken round by round. A call's time depends on which program ran just
    before it, so a fixed order biases them: two copies of the same L-BFGS solve differed
    by 14% in one (``minimize_ab.py``). Each runner must block until its work is done.
    """
    samples: dict[str, list[float]] = {name: [] for name in runners}
    orders = itertools.cycle(itertools.permutations(runners))
    for _ in range(repeats):
        for name in next(orders):
            start = time.perf_counter()
            runners[name]()
            samples[name].append(time.perf_counter() - start)
    return samples


def run_child(script: str, args: list[str], timeout: float | None = None, env: dict | None = None) -> dict:
    """Runs the benchmark ``script`` (its ``__file__``) with ``args`` in a fresh interpreter;
    returns the dict of the last line of its output that starts with ``{`` (JSON), or
    ``{"error": why}`` when it printed none or ran past ``timeout`` seconds (then it is
    killed). ``env``: variables to set for the child, over this process's.

    The child imports the gradxform of this checkout (the parent of ``benchmarks/``), not
    whichever one is installed.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, **(env or {}),
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run([sys.executable, os.path.abspath(script), *args], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"killed after {timeout} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:] or ''}"}

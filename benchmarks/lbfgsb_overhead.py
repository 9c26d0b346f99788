"""Where the bounded solver's warm time goes on XLA's CPU runtime (float64).

    python benchmarks/lbfgsb_overhead.py [--repeats 30]

On each problem of ``tests/lbfgsb_problems.py`` (and on one that stops at its first
point, the fixed cost of a call) it runs ``gradxform.minimize(..., bounds=...)`` jitted,
with scipy's defaults, and prints: the evaluations, the fastest and the median of
``--repeats`` warm calls, and, from one profiled call (``jax.profiler``), the thunks
(compiled kernels, copies, library calls, control flow) the runtime executed and how
often it handed work to another thread. On problems of a few variables these two
counts, not arithmetic, set the time: a thunk costs a fraction of a microsecond, a
handoff tens of microseconds when the other thread has to wake up.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import gradxform  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import lbfgsb_problems  # noqa: E402

OPTIONS = lbfgsb_problems.SCIPY_DEFAULTS
_NOT_THUNKS = ("end:", "ThreadpoolListener", "ThunkExecutor")


def profile_events(call, all_threads: bool = False) -> tuple[list[str], int]:
    """The names of the thunks one ``call()`` ran (each an instruction of the compiled
    program, once per run), and the number of handoffs, from a ``jax.profiler`` trace.

    Only the runtime's threads count, unless ``all_threads``: a small program that runs
    all in order runs on the calling thread."""
    with tempfile.TemporaryDirectory() as log_dir:
        with jax.profiler.trace(log_dir):
            call()
        (path,) = pathlib.Path(log_dir).rglob("*.xplane.pb")
        data = jax.profiler.ProfileData.from_file(str(path))
    thunks, handoffs = [], 0
    for plane in data.planes:
        for line in plane.lines:
            runtime_thread = all_threads or "XLAEigen" in line.name or "PjRtCpuClient" in line.name
            for event in line.events:
                if event.name == "ThreadpoolListener::Record":
                    handoffs += 1
                elif runtime_thread and not event.name.startswith(_NOT_THUNKS):
                    thunks.append(event.name)
    return thunks, handoffs


def profile_counts(call) -> tuple[int, int]:
    """``(thunks, handoffs)`` of one ``call()``, from a ``jax.profiler`` trace."""
    thunks, handoffs = profile_events(call)
    return len(thunks), handoffs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    problems = lbfgsb_problems.problems() + [
        ("stops-at-x0", lambda x: jnp.sum(x**2), np.zeros(1), np.full(1, -1.0), np.ones(1))
    ]
    print(f"# jax {jax.__version__}, {args.repeats} warm calls per problem")
    print("| problem | n | evaluations | fastest (ms) | median (ms) | thunks per call | handoffs per call |")
    print("|---|---|---|---|---|---|---|")
    for name, fun, x0, lower, upper in problems:
        solve = jax.jit(lambda x: gradxform.minimize(fun, x, bounds=(lower, upper), **OPTIONS))
        x = jnp.asarray(x0)
        result = jax.block_until_ready(solve(x))
        call = lambda: jax.block_until_ready(solve(x))  # noqa: E731
        for _ in range(3):
            call()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        thunks, handoffs = profile_counts(call)
        print(f"| {name} | {x0.size} | {int(result.n_evals)} | {min(times) * 1e3:.3f} "
              f"| {statistics.median(times) * 1e3:.3f} | {thunks} | {handoffs} |")


if __name__ == "__main__":
    main()

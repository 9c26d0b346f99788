"""Where a warm ``minimize`` call's time goes, beside optax's ``lbfgs``: the call, the
outputs, the iterations.

    python benchmarks/minimize_call_cost.py [--repeats 30] [--calls 20]

``lbfgs_bench.py`` times ``jit(minimize)`` returning the whole ``MinimizeResult``: 21
arrays with the ``LbfgsState`` to continue from. Its optax contender returns two (the
parameters and the iteration count). Each output of a jitted call is a device buffer
and a Python array made and freed per call, so on a small problem the outputs alone are
a large part of the time. This script splits a solve, on the ``lbfgs_bench.py``
problems, into:

* **solve**: a warm solve from ``x0``, three ways: ``minimize`` returning the whole
  result, ``minimize`` returning ``(params, n_iter)`` (what optax's solver returns: XLA
  drops the rest), and optax's;
* **at the solution**: the same three calls started at the solution (Rosenbrock's
  minimizer, all ones, or ``minimize``'s converged solution on the others), where
  ``minimize`` stops after one evaluation (0 iterations) and optax's loop, which always
  takes a first step, takes one or a few (the table says how many). This is the cost of
  a call that does (almost) no iterating;
* **per iteration**: (solve - at the solution) / (iterations of the solve - iterations
  at the solution).

The six calls (three solvers, two starts) run round-robin, each round in the next of
their orders (``_timing.rounds``), each sample being ``--calls`` back-to-back calls; the
medians are printed in microseconds per call, and the ratios to optax are medians of
per-round ratios.
"""

from __future__ import annotations

import argparse
import statistics

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

import lbfgs_bench  # noqa: E402
from _timing import rounds  # noqa: E402
import gradxform  # noqa: E402


def iterations(out) -> int:
    return int(out.n_iter if isinstance(out, gradxform.MinimizeResult) else out[1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30, help="rounds (each in the next order of the six calls)")
    parser.add_argument("--calls", type=int, default=20, help="back-to-back calls per sample")
    args = parser.parse_args(argv)
    print(f"# jax {jax.__version__}; float64, history {lbfgs_bench.HISTORY}; microseconds per call, medians of "
          f"{args.repeats} rounds of {args.calls} calls; ratios: medians of per-round ratios to optax")
    print("| problem | contender | outputs | solve (us) | iterations | at the solution (us) | iterations there "
          "| per iteration (us) | solve / optax | at the solution / optax | per iteration / optax |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, f, x0, kind in lbfgs_bench.problems():
        x0 = jnp.asarray(x0)
        solvers = {"minimize, whole result": lbfgs_bench.gradxform_solver(f),
                   "minimize, (params, n_iter)": lbfgs_bench.gradxform_solver(f, lambda r: (r.params, r.n_iter)),
                   "optax.lbfgs": lbfgs_bench.optax_solver(f)}
        if kind == "rosenbrock":
            x_star = jnp.ones_like(x0)  # its minimizer, where the gradient is exactly zero
        else:
            solved = jax.block_until_ready(solvers["minimize, whole result"](x0))
            if not bool(solved.converged):
                raise SystemExit(f"minimize did not converge on {name}: no solution to start from")
            x_star = solved.params
        starts = {"solve": x0, "at": x_star}
        runners, iters, outputs = {}, {}, {}
        for key, solve in solvers.items():
            for where, x in starts.items():
                out = jax.block_until_ready(solve(x))
                iters[key, where] = iterations(out)
                outputs[key] = len(jax.tree.leaves(out))

                def run(solve=solve, x=x):
                    for _ in range(args.calls):
                        jax.block_until_ready(solve(x))

                runners[key, where] = run
        for run in runners.values():
            run()
        times = {k: [t / args.calls * 1e6 for t in v] for k, v in rounds(runners, args.repeats).items()}

        def per_iteration(key):
            steps = iters[key, "solve"] - iters[key, "at"]
            return [(a - b) / steps for a, b in zip(times[key, "solve"], times[key, "at"])]

        def ratio(a, b):
            return statistics.median(x / y for x, y in zip(a, b))

        optax = "optax.lbfgs"
        for key in solvers:
            per = per_iteration(key)
            print(f"| {name} | {key} | {outputs[key]} | {statistics.median(times[key, 'solve']):.1f} "
                  f"| {iters[key, 'solve']} | {statistics.median(times[key, 'at']):.1f} | {iters[key, 'at']} "
                  f"| {statistics.median(per):.2f} | {ratio(times[key, 'solve'], times[optax, 'solve']):.2f} "
                  f"| {ratio(times[key, 'at'], times[optax, 'at']):.2f} | {ratio(per, per_iteration(optax)):.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()

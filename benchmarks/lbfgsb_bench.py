"""Bounded L-BFGS (L-BFGS-B) beside scipy and jaxopt, in one process (float64).

    python benchmarks/lbfgsb_bench.py [--repeats 7] [--quick]

On each problem of ``tests/lbfgsb_problems.py`` (scipy's bounded test problems,
box-constrained Rosenbrock in n = 2/10/100, non-negative least squares, a bounded
quadratic, one-sided/infinite/fixed bounds, all-infinite bounds) it runs

* ``gradxform.minimize(..., bounds=...)``: one jitted call;
* scipy's ``minimize(method="L-BFGS-B")`` with a jitted JAX value-and-gradient (the
  reference: its solution, its evaluation count, its time);
* jaxopt's ``LBFGSB`` (jitted ``run``), when jaxopt is installed;
* optimistix: it has no bound-constrained minimiser, so it has no row.

All with scipy's defaults (``maxcor=10, gtol=1e-5, ftol=2.2e-9``; jaxopt: ``tol=1e-5,
history_size=10, maxiter=15000``). It prints, per problem and solver, the warm median
time (round-robin, see ``_timing.race``), its ratio to scipy's, the evaluations of the
objective and their ratio to scipy's, and the largest distance to scipy's solution; then
the medians over the problems. scipy, jaxopt and optimistix are not dependencies of
gradxform: a contender that is not installed is skipped.
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import statistics
import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import gradxform  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from _timing import race  # noqa: E402
import lbfgsb_problems  # noqa: E402

OPTIONS = lbfgsb_problems.SCIPY_DEFAULTS


def gradxform_runner(fun, x0, lower, upper):
    solve = jax.jit(lambda x: gradxform.minimize(fun, x, bounds=(lower, upper), **OPTIONS))
    x0 = jnp.asarray(x0)
    result = jax.block_until_ready(solve(x0))
    return (lambda: jax.block_until_ready(solve(x0))), np.asarray(result.params), int(result.n_evals)


def scipy_runner(fun, x0, lower, upper):
    from scipy.optimize import Bounds, minimize

    value_and_grad = jax.jit(jax.value_and_grad(fun))

    def fg(x):
        value, grad = value_and_grad(x)
        return float(value), np.asarray(grad)

    def run():
        return minimize(fg, x0, jac=True, method="L-BFGS-B", bounds=Bounds(lower, upper))

    result = run()
    return run, result.x, int(result.nfev)


def jaxopt_runner(fun, x0, lower, upper):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import jaxopt

    solver = jaxopt.LBFGSB(fun=fun, maxiter=15000, tol=1e-5, history_size=10)
    solve = jax.jit(lambda x: solver.run(x, bounds=(jnp.asarray(lower), jnp.asarray(upper))))
    x0 = jnp.asarray(x0)
    params, state = jax.block_until_ready(solve(x0))
    return (lambda: jax.block_until_ready(solve(x0))), np.asarray(params), int(state.num_fun_eval)


def installed(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    if not installed("scipy"):
        sys.exit("scipy is the reference of this benchmark: pip install scipy")
    import scipy

    contenders = {"gradxform": gradxform_runner, "scipy": scipy_runner}
    if installed("jaxopt"):
        contenders["jaxopt.LBFGSB"] = jaxopt_runner
    else:
        print("# jaxopt not installed: skipped")
    print(f"# {platform.processor() or platform.machine()}, jax {jax.__version__}, scipy {scipy.__version__}; "
          "optimistix: no bound-constrained minimiser (not run)")
    print("| problem | n | solver | warm median (ms) | time / scipy's | evaluations | evaluations / scipy's "
          "| max abs distance to scipy's x |")
    print("|---|---|---|---|---|---|---|---|")
    ratios = {name: {"time": [], "evals": [], "error": []} for name in contenders}
    for problem, fun, x0, lower, upper in lbfgsb_problems.problems():
        runs, solutions, evals = {}, {}, {}
        for name, make in contenders.items():
            runs[name], solutions[name], evals[name] = make(fun, x0, lower, upper)
        times = race(runs, repeats)
        for name in contenders:
            error = float(np.max(np.abs(solutions[name] - solutions["scipy"])))
            time_ratio, eval_ratio = times[name] / times["scipy"], evals[name] / evals["scipy"]
            ratios[name]["time"].append(time_ratio)
            ratios[name]["evals"].append(eval_ratio)
            ratios[name]["error"].append(error)
            print(f"| {problem} | {x0.size} | {name} | {times[name] * 1e3:.3f} | {time_ratio:.2f} | {evals[name]} "
                  f"| {eval_ratio:.2f} | {error:.1e} |")
    print()
    print("| solver | median time / scipy's | median evaluations / scipy's | largest distance to scipy's x |")
    print("|---|---|---|---|")
    for name, r in ratios.items():
        print(f"| {name} | {statistics.median(r['time']):.2f} | {statistics.median(r['evals']):.2f} "
              f"| {max(r['error']):.1e} |")


if __name__ == "__main__":
    main()

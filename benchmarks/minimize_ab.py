"""``minimize`` of the working tree against ``minimize`` of a git revision, in one process.

    python benchmarks/minimize_ab.py REV [--repeats 36] [--bounds]

A change to the L-BFGS state machine moves the warm time by a few percent at most, less
than the spread between two runs of ``lbfgs_overhead.py``. This script takes
``gradxform/linesearch.py`` and ``gradxform/optimizers/lbfgs.py`` as they are at ``REV``
(``git show``), loads them as modules of their own beside the working tree's (every
other module is the working tree's, so REV must differ from it in those two files
only), and on the ``lbfgs_bench.py`` problems:

* checks that both give the same result, every array bit for bit;
* times both and optax's ``lbfgs`` round-robin, each round in the next of the six
  orders of the three (``_timing.rounds``: in a fixed order, two copies of the same code
  differed by 14% here), and prints the medians of the per-round ratios (working tree /
  REV, and each / optax).

For example, on a branch that changes the line search: ``python
benchmarks/minimize_ab.py main``.

``--bounds`` does the same for L-BFGS-B: it takes ``gradxform/optimizers/lbfgsb.py`` at
``REV`` (every other module, ``lbfgs.py`` among them, is the working tree's) and runs
both on ``tests/lbfgsb_problems.py`` with scipy's default options, as
``lbfgsb_bench.py``; optax has no bounded L-BFGS, so only the ratio of the two is printed.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import statistics
import subprocess
import sys
import tempfile

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import lbfgs_bench  # noqa: E402
from _timing import rounds  # noqa: E402
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import lbfgsb_problems  # noqa: E402
from gradxform.optimizers import lbfgs as tree_lbfgs  # noqa: E402
from gradxform.optimizers import lbfgsb as tree_lbfgsb  # noqa: E402

_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(name: str, source: str, folder: pathlib.Path):
    path = folder / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def revision_lbfgs(rev: str, folder: pathlib.Path):
    """``gradxform.optimizers.lbfgs`` as it is at ``rev``, with its line search from
    ``rev`` too."""
    show = lambda path: subprocess.run(["git", "show", f"{rev}:{path}"], cwd=_ROOT, check=True,  # noqa: E731
                                       capture_output=True, text=True).stdout
    _load("rev_linesearch", show("gradxform/linesearch.py"), folder)
    source = show("gradxform/optimizers/lbfgs.py")
    if "from gradxform.linesearch import" not in source:
        raise SystemExit(f"{rev}'s lbfgs.py does not import its line search as this script expects")
    return _load("rev_lbfgs", source.replace("from gradxform.linesearch import", "from rev_linesearch import"), folder)


def revision_lbfgsb(rev: str, folder: pathlib.Path):
    """``gradxform.optimizers.lbfgsb`` as it is at ``rev``."""
    source = subprocess.run(["git", "show", f"{rev}:gradxform/optimizers/lbfgsb.py"], cwd=_ROOT, check=True,
                            capture_output=True, text=True).stdout
    return _load("rev_lbfgsb", source, folder)


def bounded_solver(module, f, lower, upper):
    """``lbfgsb_bench.gradxform_runner``'s solve with ``module``'s ``minimize_bounded``."""
    options = dict(lbfgsb_problems.SCIPY_DEFAULTS, has_aux=False)
    return jax.jit(lambda x: module.minimize_bounded(f, x, bounds=(lower, upper), **options))


def same_result(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def main_bounds(args, folder: pathlib.Path):
    rev_lbfgsb = revision_lbfgsb(args.rev, folder)
    print(f"# jax {jax.__version__}; L-BFGS-B; medians of {args.repeats} per-round ratios; "
          f"tree = working tree, rev = {args.rev}")
    print("| problem | tree / rev | same result |")
    print("|---|---|---|")
    for name, f, x0, lower, upper in lbfgsb_problems.problems():
        x = jnp.asarray(x0)
        solvers = {"tree": bounded_solver(tree_lbfgsb, f, lower, upper),
                   "rev": bounded_solver(rev_lbfgsb, f, lower, upper)}
        results = {key: jax.block_until_ready(solve(x)) for key, solve in solvers.items()}
        times = rounds({key: lambda s=solve: jax.block_until_ready(s(x)) for key, solve in solvers.items()},
                       args.repeats)
        ratio = statistics.median(a / b for a, b in zip(times["tree"], times["rev"]))
        print(f"| {name} | {ratio:.3f} | {same_result(results['tree'], results['rev'])} |", flush=True)


def solver(module, f):
    """``lbfgs_bench.gradxform_solver`` with ``module``'s ``minimize``."""
    return jax.jit(lambda x: module.minimize(f, x, **lbfgs_bench.OPTIONS))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="the git revision to compare the working tree with")
    parser.add_argument("--repeats", type=int, default=36, help="rounds (six orders, each as often)")
    parser.add_argument("--bounds", action="store_true", help="L-BFGS-B (lbfgsb.py) instead of L-BFGS")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        if args.bounds:
            return main_bounds(args, pathlib.Path(folder))
        rev_lbfgs = revision_lbfgs(args.rev, pathlib.Path(folder))
        print(f"# jax {jax.__version__}; medians of {args.repeats} per-round ratios; tree = working tree, "
              f"rev = {args.rev}")
        print("| problem | tree / rev | rev / optax | tree / optax | same result |")
        print("|---|---|---|---|---|")
        for name, f, x0, _ in lbfgs_bench.problems():
            x = jnp.asarray(x0)
            solvers = {"tree": solver(tree_lbfgs, f), "rev": solver(rev_lbfgs, f),
                       "optax": lbfgs_bench.optax_solver(f)}
            results = {key: jax.block_until_ready(solve(x)) for key, solve in solvers.items()}
            same = same_result(results["tree"], results["rev"])
            times = rounds({key: lambda s=solve: jax.block_until_ready(s(x)) for key, solve in solvers.items()},
                           args.repeats)
            ratio = lambda a, b: statistics.median(x / y for x, y in zip(times[a], times[b]))  # noqa: E731
            print(f"| {name} | {ratio('tree', 'rev'):.3f} | {ratio('rev', 'optax'):.3f} "
                  f"| {ratio('tree', 'optax'):.3f} | {same} |", flush=True)


if __name__ == "__main__":
    main()

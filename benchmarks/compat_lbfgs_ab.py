"""torch_compat's ``LBFGS`` of the working tree against that of a git revision, in one process.

    python benchmarks/compat_lbfgs_ab.py REV [--repeats 60] [--steps 25]

The steps of ``torch_compat.optim.LBFGS`` on a small problem cost about as much as
torch's, and a change to the Python around the compiled calls moves them by a few
percent, less than the spread between two runs of ``lbfgs_bench.py --table steps``.
This script takes ``torch_compat/optim/lbfgs.py`` as it is at ``REV`` (``git show``),
loads it as a module of its own beside the working tree's (every other module is the
working tree's, so REV must differ from it in that file only), and on the
``lbfgs_bench.py`` problems, with torch's defaults and the strong-Wolfe search (as the
``steps`` table):

* checks that both leave the same parameters and state after ``--steps`` steps: every
  key in the same order, every value and list entry bit for bit;
* times ``--steps`` steps of a fresh optimizer of each, and of torch's, in rounds that
  go through the six orders of the three (``_timing.rounds``), and prints the medians of
  the per-round ratios (working tree / REV, and each / torch).

For example, after a change to the step's Python: ``python benchmarks/compat_lbfgs_ab.py main``.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import subprocess
import tempfile

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import lbfgs_bench  # noqa: E402
from _timing import rounds  # noqa: E402
from minimize_ab import _ROOT, _load  # noqa: E402

OPTIONS = dict(line_search_fn="strong_wolfe")
"""torch's defaults otherwise (``history_size=100``, ``max_iter=20``), as the ``steps`` table."""


def snapshot(x, opt) -> list:
    """The parameter and the state, keys in order, arrays as numpy (lists entry by entry)."""
    def host(v):
        if isinstance(v, list):
            return [host(e) for e in v]
        return v if v is None or isinstance(v, (int, float)) else np.asarray(v)

    return [("param", np.asarray(x.data))] + [(k, host(v)) for k, v in opt.state[x].items()]


def same(a, b) -> bool:
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(
            np.atleast_1d(a).view(np.uint8), np.atleast_1d(b).view(np.uint8))
    return type(a) is type(b) and (a == b or (a != a and b != b))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="the git revision to compare the working tree with")
    parser.add_argument("--repeats", type=int, default=60, help="rounds (six orders, each as often)")
    parser.add_argument("--steps", type=int, default=lbfgs_bench.STEPS)
    args = parser.parse_args(argv)
    from torch_compat import optim

    source = subprocess.run(["git", "show", f"{args.rev}:torch_compat/optim/lbfgs.py"], cwd=_ROOT, check=True,
                            capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as folder:
        rev = _load("rev_compat_lbfgs", source, pathlib.Path(folder))
    classes = {"tree": optim.LBFGS, "rev": rev.LBFGS}
    print(f"# jax {jax.__version__}; {args.steps} steps of a fresh optimizer per run; medians of {args.repeats} "
          f"per-round ratios; tree = working tree, rev = {args.rev}")
    print("| problem | same state | tree / rev | tree / torch | rev / torch | torch (ms) |")
    print("|---|---|---|---|---|---|")
    for name, f, x0, spec in lbfgs_bench.problems():
        if name == "rosenbrock-2":  # (solved in the first step: the later ones do nothing)
            continue
        loss_fn, ends = lbfgs_bench.compat_loss(f), {}
        for label, cls in classes.items():
            x, opt, closure = lbfgs_bench.compat_problem(loss_fn, x0, OPTIONS, cls)
            for _ in range(args.steps):
                opt.step(closure)
            ends[label] = snapshot(x, opt)
        runners = {label: lbfgs_bench.solver(lambda cls=cls: lbfgs_bench.compat_problem(loss_fn, x0, OPTIONS, cls),
                                              args.steps)
                   for label, cls in classes.items()}
        runners["torch"] = lbfgs_bench.torch_setup(spec, np.asarray(x0), OPTIONS, args.steps)
        for run in runners.values():
            run()
        samples = rounds(runners, args.repeats)

        def ratio(a, b):
            return statistics.median(x / y for x, y in zip(samples[a], samples[b]))

        print(f"| {name} | {same(ends['tree'], ends['rev'])} | {ratio('tree', 'rev'):.3f} | "
              f"{ratio('tree', 'torch'):.3f} | {ratio('rev', 'torch'):.3f} | "
              f"{statistics.median(samples['torch']) * 1e3:.1f} |")


if __name__ == "__main__":
    main()

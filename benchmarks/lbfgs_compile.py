"""Where ``gradxform.minimize``'s first call goes: trace, lower and XLA compile, and size.

    python benchmarks/lbfgs_compile.py [--n 100] [--repeats 2]

For the ``lbfgs_bench.py`` solvers on Rosenbrock-n (float64, history size 10, strong
Wolfe; optax's ``lbfgs`` in a ``lax.while_loop``), prints the median seconds of
``jax.jit(f).trace(x)``, ``.lower()`` and ``.compile()`` (each from a fresh ``jax.jit``),
the number of StableHLO operations, of optimized HLO instructions and of fused kernels
(the compiled program's size, which compile time follows).
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import lbfgs_bench  # noqa: E402


def count_stablehlo(text: str) -> int:
    return len(re.findall(r"^\s*(?:%[\w#:, ]+ = )?\"?(?:stablehlo|chlo|func)\.[\w.]+", text, re.M))


def count_hlo_instructions(text: str) -> int:
    return len(re.findall(r"^\s*(?:ROOT )?%?[\w.\-]+ = ", text, re.M))


def count_fusions(text: str) -> int:
    return len(re.findall(r"= .*? fusion\(", text))


def split(make, x, repeats):
    times = {"trace": [], "lower": [], "compile": []}
    sizes = None
    for _ in range(repeats):
        fn = make()
        start = time.perf_counter()
        traced = fn.trace(x)
        times["trace"].append(time.perf_counter() - start)
        start = time.perf_counter()
        lowered = traced.lower()
        times["lower"].append(time.perf_counter() - start)
        start = time.perf_counter()
        compiled = lowered.compile()
        times["compile"].append(time.perf_counter() - start)
        optimized = compiled.as_text()
        sizes = (count_stablehlo(lowered.as_text()), count_hlo_instructions(optimized), count_fusions(optimized))
    return {k: statistics.median(v) for k, v in times.items()}, sizes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    x0 = jnp.asarray(np.tile([-1.2, 1.0], args.n // 2))
    f = lbfgs_bench.rosenbrock
    print(f"| Rosenbrock-{args.n} | trace (s) | lower (s) | XLA compile (s) | StableHLO ops "
          "| optimized HLO instructions | fusions |")
    print("|---|---|---|---|---|---|---|")
    for name, make in (("gradxform.minimize", lambda: lbfgs_bench.gradxform_solver(f)),
                       ("optax.lbfgs in a while_loop", lambda: lbfgs_bench.optax_solver(f))):
        t, (ops, instructions, fusions) = split(make, x0, args.repeats)
        print(f"| {name} | {t['trace']:.2f} | {t['lower']:.2f} | {t['compile']:.2f} | {ops} | {instructions} "
              f"| {fusions} |", flush=True)


if __name__ == "__main__":
    main()

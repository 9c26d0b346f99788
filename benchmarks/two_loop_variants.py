"""Does removing kernels from L-BFGS's two-loop recursion make ``minimize`` faster?

    python benchmarks/two_loop_variants.py [--repeats 31]

The shipped two-loop (``gradxform.optimizers.lbfgs.two_loop``) computes each step's
history row as ``rem(history_start + i, size)``. That is a scalar kernel of its own in
every loop step (it has several readers), 2 of the 16 kernels per stored pair. The
variant here computes both loops' row orders once, as optax does, and reads each step's
row from them, so that the read becomes part of the kernels that use the row.

On the ``lbfgs_bench.py`` problems (float64, history size 10, strong Wolfe), both
variants are compiled in this process (the variant patched in while tracing), checked
to give the same iterates bit for bit, and timed round-robin, the order alternating
each round (``_timing`` explains why). The table gives the median of the per-round
ratios and the kernels per evaluation from one profiled solve of each.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import lbfgs_bench  # noqa: E402
from gradxform.optimizers import lbfgs  # noqa: E402
from lbfgsb_overhead import profile_counts  # noqa: E402


def two_loop_precomputed_rows(grad, state):
    """``lbfgs.two_loop`` with the rows read from orders computed once."""
    row, size = lbfgs._row, state.ro.shape[0]
    length, start = state.history_len, state.history_start
    step = jnp.arange(size, dtype=jnp.int32)
    newest_first = jax.lax.rem(start + length - 1 + size - step, jnp.int32(size))  # no negative operand
    oldest_first = jax.lax.rem(start + step, jnp.int32(size))

    def backward(k, carry):
        q, al = carry
        j = row(newest_first, k)
        a = jnp.vdot(row(state.old_stps, j), q) * row(state.ro, j)
        return q - a * row(state.old_dirs, j), jax.lax.dynamic_update_index_in_dim(al, a, length - 1 - k, 0)

    q, al = jax.lax.fori_loop(0, length, backward, (-grad, state.al))

    def forward(i, r):
        j = row(oldest_first, i)
        be = jnp.vdot(row(state.old_dirs, j), r) * row(state.ro, j)
        return r + (row(al, i) - be) * row(state.old_stps, j)

    return jax.lax.fori_loop(0, length, forward, q * state.H_diag), al


VARIANTS = {"shipped": lbfgs.two_loop, "precomputed rows": two_loop_precomputed_rows}


def compiled(f, x0, two_loop):
    """``minimize`` on ``f`` compiled with ``two_loop`` in place of the shipped one."""
    shipped = lbfgs.two_loop
    lbfgs.two_loop = two_loop
    try:
        return lbfgs_bench.gradxform_solver(f).lower(x0).compile()
    finally:
        lbfgs.two_loop = shipped


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=31)
    args = parser.parse_args(argv)
    print(f"# jax {jax.__version__}; ratio: precomputed rows / shipped, median of {args.repeats} alternating rounds")
    print("| problem | evaluations | shipped (ms) | precomputed rows (ms) | ratio | kernels per evaluation, "
          "shipped -> precomputed rows | same iterates |")
    print("|---|---|---|---|---|---|---|")
    for name, f, x0_np, _ in lbfgs_bench.problems():
        x0 = jnp.asarray(x0_np)
        solvers = {label: compiled(f, x0, fn) for label, fn in VARIANTS.items()}
        results = [jax.block_until_ready(solve(x0)) for solve in solvers.values()]
        same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])))
        evals = int(results[0].n_evals)
        times = {label: [] for label in solvers}
        for round_ in range(args.repeats):
            for label in list(solvers)[:: 1 if round_ % 2 else -1]:
                start = time.perf_counter()
                jax.block_until_ready(solvers[label](x0))
                times[label].append(time.perf_counter() - start)
        ratio = statistics.median(b / a for a, b in zip(*times.values()))
        kernels = [profile_counts(lambda s=s: jax.block_until_ready(s(x0)))[0] / evals for s in solvers.values()]
        shipped_ms, variant_ms = (statistics.median(t) * 1e3 for t in times.values())
        print(f"| {name} | {evals} | {shipped_ms:.2f} | {variant_ms:.2f} | {ratio:.3f} "
              f"| {kernels[0]:.0f} -> {kernels[1]:.0f} | {same} |", flush=True)


if __name__ == "__main__":
    main()

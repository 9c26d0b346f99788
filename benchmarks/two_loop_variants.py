"""Does removing kernels from L-BFGS's two-loop recursion make ``minimize`` faster?

    python benchmarks/two_loop_variants.py [--repeats 31]

The shipped two-loop (``gradxform.optimizers.lbfgs.two_loop``) computes each step's
history row as ``rem(history_start + i, size)``. That is a scalar kernel of its own in
every loop step (it has several readers), 2 of the 16 kernels per stored pair. The
variant here computes both loops' row orders once, as optax does, and reads each step's
row from them, so that the read becomes part of the kernels that use the row.

A second variant also runs both loops for a fixed ``history_size`` steps, the steps
past ``history_len`` masked by selections, so that each loop has a trip count known
when compiling: XLA's runtime then skips the loop condition (a kernel per step).

On the ``lbfgs_bench.py`` problems (float64, history size 10, strong Wolfe), the
variants are compiled in this process (each patched in while tracing), checked to give
the shipped iterates bit for bit, and timed against it round-robin, the order
alternating each round (``_timing.rounds``). The table gives, per variant, the
median of the per-round ratios to the shipped code and the kernels per evaluation from
one profiled solve of each. (``lbfgs_executors.py`` shows why fewer kernels here do not
mean less time: the loop bodies have at most 8 thunks, which XLA runs in order, cheaply.)
"""

from __future__ import annotations

import argparse
import statistics

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import lbfgs_bench  # noqa: E402
from _timing import rounds  # noqa: E402
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


def two_loop_fixed_trips(grad, state):
    """``two_loop_precomputed_rows`` with ``history_size`` steps per loop, those past
    ``history_len`` masked (a selection keeps ``q``, ``al`` and ``r`` as they were)."""
    row, size = lbfgs._row, state.ro.shape[0]
    length, start = state.history_len, state.history_start
    step = jnp.arange(size, dtype=jnp.int32)
    newest_first = jax.lax.rem(start + length - 1 + size - step, jnp.int32(size))
    oldest_first = jax.lax.rem(start + step, jnp.int32(size))

    def backward(k, carry):
        q, al = carry
        used, i = k < length, jnp.maximum(length - 1 - k, 0)
        j = row(newest_first, k)
        a = jnp.vdot(row(state.old_stps, j), q) * row(state.ro, j)
        q = jnp.where(used, q - a * row(state.old_dirs, j), q)
        return q, jax.lax.dynamic_update_index_in_dim(al, jnp.where(used, a, row(al, i)), i, 0)

    q, al = jax.lax.fori_loop(0, size, backward, (-grad, state.al))

    def forward(i, r):
        j = row(oldest_first, i)
        be = jnp.vdot(row(state.old_dirs, j), r) * row(state.ro, j)
        return jnp.where(i < length, r + (row(al, i) - be) * row(state.old_stps, j), r)

    return jax.lax.fori_loop(0, size, forward, q * state.H_diag), al


VARIANTS = {"precomputed rows": two_loop_precomputed_rows, "fixed trip count": two_loop_fixed_trips}


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
    print(f"# jax {jax.__version__}; ratio: variant / shipped, median of {args.repeats} alternating rounds")
    print("| problem | variant | evaluations | shipped (ms) | variant (ms) | ratio | kernels per evaluation, "
          "shipped -> variant | same iterates |")
    print("|---|---|---|---|---|---|---|---|")
    for name, f, x0_np, _ in lbfgs_bench.problems():
        x0 = jnp.asarray(x0_np)
        shipped = compiled(f, x0, lbfgs.two_loop)
        expected = jax.block_until_ready(shipped(x0))
        evals = int(expected.n_evals)
        shipped_kernels = profile_counts(lambda: jax.block_until_ready(shipped(x0)))[0] / evals
        for label, two_loop in VARIANTS.items():
            variant = compiled(f, x0, two_loop)
            got = jax.block_until_ready(variant(x0))
            same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)))
            solvers = {"shipped": shipped, label: variant}
            times = rounds({key: lambda s=solve: jax.block_until_ready(s(x0)) for key, solve in solvers.items()},
                           args.repeats)
            ratio = statistics.median(b / a for a, b in zip(times["shipped"], times[label]))
            kernels = profile_counts(lambda: jax.block_until_ready(variant(x0)))[0] / evals
            shipped_ms, variant_ms = (statistics.median(times[key]) * 1e3 for key in solvers)
            print(f"| {name} | {label} | {evals} | {shipped_ms:.2f} | {variant_ms:.2f} | {ratio:.3f} "
                  f"| {shipped_kernels:.0f} -> {kernels:.0f} | {same} |", flush=True)


if __name__ == "__main__":
    main()

"""Cost of skipping non-finite updates: gradxform.skip_non_finite and torch_compat's option.

Times, on the CPU, one jitted Adam update of a list of float32 leaves, with and without
donating the parameters and state:
  adam         gradxform.adam
  cond         gradxform.skip_non_finite(adam)  (jax.lax.cond, the shipped version)
  where        the same choice made by computing both and selecting with jnp.where
and one torch_compat.optim.Adam step() with and without set_skip_non_finite().

    PYTHONPATH=. python benchmarks/skip_cost.py [--sizes 10000,1000000] [--leaves 10]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

import gradxform
import torch_compat
from torch_compat import optim


def where_variant(inner):
    """The alternative to gradxform's lax.cond: compute both, select with jnp.where."""

    def init(params):
        return gradxform.SkipNonFiniteState(inner.init(params), jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
        finite = gradxform.all_finite(updates)
        new_updates, new_inner = inner.update(updates, state.inner_state, params)
        new_updates = jax.tree.map(lambda u: jnp.where(finite, u, -0.0), new_updates)
        new_inner = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_inner, state.inner_state)
        one = jnp.logical_not(finite).astype(jnp.int32)
        return new_updates, gradxform.SkipNonFiniteState(
            new_inner, state.total_skipped + one, jnp.where(finite, 0, state.consecutive_skipped + one)
        )

    return gradxform.GradientTransformation(init, update)


def best_of(fn, repeats=50):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e6


def core(size, leaves, donate, bad=False):
    out = {}
    for name, tx in [
        ("plain", gradxform.adam(1e-3)),
        ("cond", gradxform.skip_non_finite(gradxform.adam(1e-3))),
        ("where", where_variant(gradxform.adam(1e-3))),
    ]:
        params = [jnp.full(size // leaves, 1.0 + i, jnp.float32) for i in range(leaves)]
        fill = jnp.nan if bad else 0.1
        grads = [jnp.full(size // leaves, fill, jnp.float32) for _ in range(leaves)]
        state = jax.tree.map(lambda x: jnp.array(x, copy=True), tx.init(params))  # no shared buffers

        def step(p, s, g, tx=tx):
            u, s = tx.update(g, s, p)
            return gradxform.apply_updates(p, u), s

        step = jax.jit(step, donate_argnums=(0, 1) if donate else ())
        carry = [params, state]

        def run():
            carry[0], carry[1] = step(carry[0], carry[1], grads)
            jax.block_until_ready(carry[0])

        out[name] = best_of(run)
    return out


def compat(size, leaves, skip):
    model = [torch_compat.Parameter(jnp.ones(size // leaves, jnp.float32)) for _ in range(leaves)]
    opt = optim.Adam(model, lr=1e-3)
    if skip:
        opt.set_skip_non_finite()
    grads = [jnp.full(size // leaves, 0.1, jnp.float32) for _ in range(leaves)]

    def run():
        for p, g in zip(model, grads):
            p.grad = g
        opt.step()
        jax.block_until_ready([p.data for p in model])

    run()
    return best_of(run)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,1000000,4000000")
    parser.add_argument("--leaves", type=int, default=10)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, float32, Adam, {args.leaves} leaves; best of 50, microseconds")
    print("| parameters | donated | adam | skip_non_finite (lax.cond) | jnp.where variant | cond, skipped step |")
    print("|---|---|---|---|---|---|")
    for size in [int(s) for s in args.sizes.split(",")]:
        for donate in (False, True):
            c = core(size, args.leaves, donate)
            bad = core(size, args.leaves, donate, bad=True)
            print(f"| {size:,} | {donate} | {c['plain']:.0f} | {c['cond']:.0f} | {c['where']:.0f} | {bad['cond']:.0f} |")
    print()
    print("| parameters | torch_compat Adam.step() | with set_skip_non_finite() |")
    print("|---|---|---|")
    for size in [int(s) for s in args.sizes.split(",")]:
        off, on = compat(size, args.leaves, False), compat(size, args.leaves, True)
        print(f"| {size:,} | {off:.0f} | {on:.0f} |")


if __name__ == "__main__":
    main()

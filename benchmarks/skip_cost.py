"""Cost of skipping non-finite updates: gradxform.skip_non_finite and torch_compat's option.

Times, on the CPU, one jitted Adam update of a pytree of float32 leaves:
  plain        gradxform.adam
  where        gradxform.skip_non_finite(adam)  (jnp.where selects, the shipped version)
  cond         the same choice made with jax.lax.cond (for comparison)
and one torch_compat.optim.Adam step() with and without set_skip_non_finite().

    PYTHONPATH=. python benchmarks/skip_cost.py [--sizes 10000,1000000] [--leaves 10]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import gradxform
import torch_compat
from torch_compat import optim


def cond_variant(inner):
    def init(params):
        return gradxform.SkipNonFiniteState(inner.init(params), jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
        finite = gradxform.all_finite(updates)

        def accept(_):
            return inner.update(updates, state.inner_state, params)

        def reject(_):
            return jax.tree.map(lambda u: jnp.full_like(u, -0.0), updates), state.inner_state

        new_updates, new_inner = jax.lax.cond(finite, accept, reject, None)
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


def core(size, leaves):
    params = [jnp.ones(size // leaves, jnp.float32) for _ in range(leaves)]
    grads = [jnp.full(size // leaves, 0.1, jnp.float32) for _ in range(leaves)]
    out = {}
    for name, tx in [
        ("plain", gradxform.adam(1e-3)),
        ("where", gradxform.skip_non_finite(gradxform.adam(1e-3))),
        ("cond", cond_variant(gradxform.adam(1e-3))),
    ]:
        state = tx.init(params)

        @jax.jit
        def step(p, s, g, tx=tx):
            u, s = tx.update(g, s, p)
            return gradxform.apply_updates(p, u), s

        def run(state=state):
            jax.block_until_ready(step(params, state, grads))

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
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--leaves", type=int, default=10)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, float32, Adam, {args.leaves} leaves; best of 50, microseconds")
    print("| parameters | plain | skip (where) | skip (lax.cond) | torch_compat step | with skip |")
    print("|---|---|---|---|---|---|")
    for size in [int(s) for s in args.sizes.split(",")]:
        c = core(size, args.leaves)
        off, on = compat(size, args.leaves, False), compat(size, args.leaves, True)
        print(f"| {size:,} | {c['plain']:.0f} | {c['where']:.0f} | {c['cond']:.0f} | {off:.0f} | {on:.0f} |")


if __name__ == "__main__":
    np.random.seed(0)
    main()

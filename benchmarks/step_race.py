"""Step time of gradxform.adam against optax.adam, alternating steps in one process.

    python benchmarks/step_race.py [--trees 200x100,1000x16] [--steps 300]

For each tree (N float32 leaves of S values), both optimizers run a jitted step
(``update`` + ``apply_updates``, parameters and state donated), one step of each in turn,
``--steps`` times; the first 20 steps are dropped. On a loaded machine the two see the
same load, and the minimum and the 25th percentile are far steadier than one median per
contender: the ratios to read are in the last three columns.
"""

from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradxform


def race(leaves: int, size: int, steps: int) -> dict[str, np.ndarray]:
    """Milliseconds per step of each contender, alternating."""
    params = {f"{i}": jnp.ones(size, jnp.float32) for i in range(leaves)}
    grads = jax.tree.map(lambda p: p * 0.1, params)

    def make(tx, apply):
        def step(p, s, g):
            updates, s = tx.update(g, s, p)
            return apply(p, updates), s

        return jax.jit(step, donate_argnums=(0, 1)), tx.init(params)

    contenders = {
        "gradxform": make(gradxform.adam(1e-3), gradxform.apply_updates),
        "optax": make(optax.adam(1e-3), optax.apply_updates),
    }
    carried = {name: (jax.tree.map(jnp.copy, params), state) for name, (_, state) in contenders.items()}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(steps):
        for name, (step, _) in contenders.items():
            p, s = carried[name]
            start = time.perf_counter()
            p, s = step(p, s, grads)
            jax.block_until_ready(p)
            times[name].append(time.perf_counter() - start)
            carried[name] = (p, s)
    return {name: np.asarray(t[20:]) * 1e3 for name, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", default="200x100,1000x16", help="comma-separated LEAVESxSIZE")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    print(f"# {platform.machine()}, jax {jax.__version__} on {jax.devices()[0].device_kind}, optax {optax.__version__}; "
          "adam, float32, donated")
    print()
    print("| tree | gradxform median (ms) | optax median (ms) | ratio of medians | of 25th percentiles | of minima |")
    print("|---|---|---|---|---|---|")
    for tree in args.trees.split(","):
        leaves, size = (int(x) for x in tree.split("x"))
        t = race(leaves, size, args.steps)
        g, o = t["gradxform"], t["optax"]
        print(
            f"| {leaves} x {size} | {np.median(g):.3f} | {np.median(o):.3f} | {np.median(g) / np.median(o):.2f} "
            f"| {np.percentile(g, 25) / np.percentile(o, 25):.2f} | {g.min() / o.min():.2f} |"
        )


if __name__ == "__main__":
    main()

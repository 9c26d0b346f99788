"""Where a leaf's compile cost comes from: Adam's math written four ways, in plain jnp.

    python benchmarks/leaf_cost_variants.py [--leaves 1000] [--variants per_leaf,shared,stacked,packed]

Each variant is one jitted, donated Adam step (float32, torch's formulas) over N leaves
of 16 values, compiled in a fresh process of its own (this script runs itself as a
subprocess); the table gives trace + lower time, XLA compile time and the child's peak
RSS. No gradxform code is involved: the variants isolate the layout choices.

- ``per_leaf``: each leaf has its own int32 step counter (torch's ``state["step"]``,
  gradxform's layout): each leaf increments it and computes its own bias corrections.
- ``shared``: one step counter for the whole tree (optax's ``count``): the bias
  corrections are computed once.
- ``stacked``: per-leaf counters, stacked into one vector for one bias-correction
  kernel, whose entries each leaf then slices out.
- ``packed``: one shared counter, and every leaf concatenated into flat buffers at each
  step, updated in one loop, and split back into leaves.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from _timing import run_child

VARIANTS = ("per_leaf", "shared", "stacked", "packed")
SIZE = 16


def child(variant: str, leaves: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    def lerp(start, end, weight):
        small = jnp.abs(weight) < 0.5
        return jnp.where(small, start, end) + jnp.where(small, weight, -(1 - weight)) * (end - start)

    def corrections(h, t):
        t = t.astype(jnp.float32)
        return 1 - h["b1"] ** t, jnp.sqrt(1 - h["b2"] ** t)

    def moments(g, m, v, bc1, sqrt_bc2, h):
        m = lerp(m, g, 1 - h["b1"])
        v = v * h["b2"] + (1 - h["b2"]) * g * g
        return (m / (jnp.sqrt(v) / sqrt_bc2 + h["eps"])) * (1 / bc1), m, v

    def step(p, m, v, s, g, h):
        if variant in ("shared", "packed"):
            t = s[0] + 1
            bc1, sqrt_bc2 = corrections(h, t)
            if variant == "packed":
                flat = [jnp.concatenate([x.ravel() for x in tree]) for tree in (p, g, m, v)]
                d, m_flat, v_flat = moments(flat[1], flat[2], flat[3], bc1, sqrt_bc2, h)
                cuts = np.cumsum([x.size for x in p])[:-1]
                split = lambda x: [a.reshape(ref.shape) for a, ref in zip(jnp.split(x, cuts), p)]  # noqa: E731
                return split(flat[0] - h["lr"] * d), split(m_flat), split(v_flat), [t]
            out = [moments(gi, mi, vi, bc1, sqrt_bc2, h) for gi, mi, vi in zip(g, m, v)]
            return [pi - h["lr"] * o[0] for pi, o in zip(p, out)], [o[1] for o in out], [o[2] for o in out], [t]
        if variant == "stacked":
            t = jnp.stack(s) + 1
            bc1, sqrt_bc2 = corrections(h, t)
            out = [moments(gi, mi, vi, bc1[i], sqrt_bc2[i], h) for i, (gi, mi, vi) in enumerate(zip(g, m, v))]
            steps = list(t)
        else:
            out, steps = [], []
            for gi, mi, vi, si in zip(g, m, v, s):
                t = si + 1
                out.append(moments(gi, mi, vi, *corrections(h, t), h))
                steps.append(t)
        return [pi - h["lr"] * o[0] for pi, o in zip(p, out)], [o[1] for o in out], [o[2] for o in out], steps

    params = [jnp.full((SIZE,), float(i), jnp.float32) for i in range(leaves)]
    grads = [jnp.full((SIZE,), 0.01, jnp.float32) for _ in range(leaves)]
    ms = [jnp.zeros(SIZE) for _ in range(leaves)]
    vs = [jnp.zeros(SIZE) for _ in range(leaves)]
    steps = [jnp.zeros([], jnp.int32) for _ in range(1 if variant in ("shared", "packed") else leaves)]
    h = {k: jnp.float32(x) for k, x in dict(b1=0.9, b2=0.999, eps=1e-8, lr=1e-3).items()}
    jitted = jax.jit(step, donate_argnums=(0, 1, 2, 3))
    t0 = time.perf_counter()
    lowered = jitted.trace(params, ms, vs, steps, grads, h).lower()
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
    return {"trace_lower_s": t1 - t0, "compile_s": t2 - t1,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leaves", type=int, default=1000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.leaves)))
        return
    print(f"| variant ({args.leaves} leaves of {SIZE}) | trace + lower (s) | compile (s) | peak RSS (MB) | compile / per_leaf |")
    print("|---|---|---|---|---|")
    rows = {}
    for variant in args.variants.split(","):
        r = run_child(__file__, ["--child", variant, "--leaves", str(args.leaves)])
        if "error" in r:
            print(f"| {variant} | failed: {r['error']} | | | |", flush=True)
            continue
        rows[variant] = r
        base = rows.get("per_leaf")
        ratio = f"{r['compile_s'] / base['compile_s']:.2f}" if base else "n/a"
        print(f"| {variant} | {r['trace_lower_s']:.1f} | {r['compile_s']:.1f} | {r['maxrss_mb']:.0f} | {ratio} |",
              flush=True)


if __name__ == "__main__":
    main()

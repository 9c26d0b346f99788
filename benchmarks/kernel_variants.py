"""What in a leaf's kernels costs XLA compile time and memory: Adam's step written six
ways in plain jnp, one difference at a time.

    python benchmarks/kernel_variants.py [--leaves 1000] [--repeats 2]
        [--variants constants,where,select,cond,optax,stacked]

Each variant is one jitted, donated Adam step over N float32 leaves of 16 values, with
one shared int32 step (gradxform's and optax's layout), compiled in a fresh process of
its own (this script runs itself as a subprocess). No gradxform code is involved.

- ``optax``: optax's formulas, hyperparameters as constants (what ``optax.adam(1e-3)``
  compiles).
- ``constants``: gradxform's (torch's) formulas with the hyperparameters as constants:
  ``lerp``'s choice of formula is then made while tracing.
- ``where``: the hyperparameters as traced scalars (gradxform keeps them in the state,
  so that changing one never recompiles), and ``lerp``'s choice of formula from the
  traced ``1 - beta1`` made with ``jnp.where``, as gradxform does: XLA copies that
  cheap scalar work (a subtract, an abs, a compare, a negate, a select) into every
  leaf's kernel, and ``jnp.where`` adds a call per leaf.
- ``select``: as ``where``, with ``lax.select`` for the per-element choice (no call).
- ``cond``: as ``select``, with the scalar choice made by one ``lax.cond``, whose results
  XLA cannot copy into the kernels: each kernel gets them as values. gradxform does NOT
  do this: tried in ``gradxform._numerics.lerp_weight``, XLA then compiled the kernels so
  that a few elements of Adam's results differed in their last bit (leaf-by-leaf against
  ``flatten``, ``tests/test_layout.py``), and the core's numbers must stay as they are.
- ``stacked``: optax's formulas on the leaves stacked into one ``[N, 16]`` array (one
  ``jnp.stack`` per input), the results taken back out leaf by leaf (``x[i]``): one
  step for all the leaves, as a layout that groups leaves of one shape would compile.
  XLA fuses the step into each leaf's slice, and each slice, at an offset of its own,
  is a distinct kernel with code of its own.

The table gives XLA's compile time (wall and CPU seconds of the process, the minimum
over ``--repeats`` fresh processes, since other jobs' load only adds), the child's peak
RSS, and the compiled step's instructions, fused kernels included (exact).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

from _timing import run_child

VARIANTS = ("optax", "constants", "where", "select", "cond", "stacked")
SIZE = 16


def child(variant: str, leaves: int) -> dict:
    import jax
    import jax.numpy as jnp
    from jax import lax

    def choice(weight):
        """lerp's (small, coefficient) for a scalar weight."""
        small = jnp.abs(weight) < 0.5
        if variant == "cond":
            return lax.cond(small, lambda w: (jnp.array(True), w), lambda w: (jnp.array(False), -(1 - w)), weight)
        return small, jnp.where(small, weight, -(1 - weight))

    def lerp(start, end, small, coefficient):
        if variant == "where" or variant == "constants":
            base = jnp.where(small, start, end)
        else:
            base = lax.select(jnp.broadcast_to(small, start.shape), start, end)
        return base + coefficient * (end - start)

    def step(p, m, v, count, g, h):
        b1, b2, eps, lr = h["b1"], h["b2"], h["eps"], h["lr"]
        t = count + 1
        tf = t.astype(jnp.float32)
        out = []
        if variant == "stacked":
            bc1, bc2 = 1 - b1**tf, 1 - b2**tf
            pi, mi, vi, gi = (jnp.stack(x) for x in (p, m, v, g))
            mi = (1 - b1) * gi + b1 * mi
            vi = (1 - b2) * gi * gi + b2 * vi
            pi = pi + (-lr) * ((mi / bc1) / (jnp.sqrt(vi / bc2) + eps))
            out = [(pi[i], mi[i], vi[i]) for i in range(len(p))]
        elif variant == "optax":
            bc1, bc2 = 1 - b1**tf, 1 - b2**tf
            for pi, mi, vi, gi in zip(p, m, v, g):
                mi = (1 - b1) * gi + b1 * mi
                vi = (1 - b2) * gi * gi + b2 * vi
                out.append((pi + (-lr) * ((mi / bc1) / (jnp.sqrt(vi / bc2) + eps)), mi, vi))
        else:
            small, coefficient = choice(1 - b1) if variant != "constants" else (True, 1 - b1)
            sqrt_bc2, inv_bc1 = jnp.sqrt(1 - b2**tf), 1 / (1 - b1**tf)
            for pi, mi, vi, gi in zip(p, m, v, g):
                mi = lerp(mi, gi, small, coefficient)
                vi = vi * b2 + (1 - b2) * gi * gi
                direction = (mi / (jnp.sqrt(vi) / sqrt_bc2 + eps)) * inv_bc1
                out.append((pi + direction * (lr * -1), mi, vi))
        return [o[0] for o in out], [o[1] for o in out], [o[2] for o in out], t

    params = [jnp.full((SIZE,), float(i), jnp.float32) for i in range(leaves)]
    grads = [jnp.full((SIZE,), 0.01, jnp.float32) for _ in range(leaves)]
    ms = [jnp.zeros(SIZE, jnp.float32) for _ in range(leaves)]
    vs = [jnp.zeros(SIZE, jnp.float32) for _ in range(leaves)]
    count = jnp.zeros([], jnp.int32)
    values = dict(b1=0.9, b2=0.999, eps=1e-8, lr=1e-3)
    if variant in ("optax", "constants", "stacked"):
        jitted = jax.jit(lambda p, m, v, c, g: step(p, m, v, c, g, values), donate_argnums=(0, 1, 2, 3))
        args = (params, ms, vs, count, grads)
    else:
        jitted = jax.jit(step, donate_argnums=(0, 1, 2, 3))
        args = (params, ms, vs, count, grads, {k: jnp.float32(x) for k, x in values.items()})
    lowered = jitted.trace(*args).lower()
    wall, cpu = time.perf_counter(), time.process_time()
    compiled = lowered.compile()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    text = compiled.as_text()
    return {"compile_s": wall, "compile_cpu_s": cpu,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "instructions": sum(1 for line in text.splitlines() if " = " in line)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leaves", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.leaves)))
        return
    variants = args.variants.split(",")
    runs = {v: [] for v in variants}
    for _ in range(args.repeats):  # interleaved, so that every variant sees the same load
        for variant in variants:
            r = run_child(__file__, ["--child", variant, "--leaves", str(args.leaves)])
            if "error" in r:
                print(f"{variant} failed: {r['error']}", file=sys.stderr)
            else:
                runs[variant].append(r)
    print(f"| variant ({args.leaves} leaves of {SIZE}) | compile wall (s) | compile CPU (s) | peak RSS (MB) "
          "| instructions per leaf | wall / optax | RSS / optax |")
    print("|---|---|---|---|---|---|---|")
    best = {v: {k: min(r[k] for r in rs) for k in rs[0]} for v, rs in runs.items() if rs}
    base = best.get("optax")
    for variant, r in best.items():
        ratio = lambda key: f"{r[key] / base[key]:.2f}" if base else "n/a"  # noqa: E731
        print(f"| {variant} | {r['compile_s']:.2f} | {r['compile_cpu_s']:.2f} | {r['maxrss_mb']:.0f} "
              f"| {r['instructions'] / args.leaves:.1f} | {ratio('compile_s')} | {ratio('maxrss_mb')} |")


if __name__ == "__main__":
    main()

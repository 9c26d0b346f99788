"""``minimize`` and optax's ``lbfgs`` with XLA CPU's small-while-loop threshold raised.

    python benchmarks/small_while_loops.py [--repeats 3] [--threshold 10000000]

XLA's CPU runtime runs a compiled ``while`` loop one thunk (kernel, copy, nested
conditional) at a time, through an executor, at every pass (``lbfgs_executors.py``).
A loop whose buffers hold fewer bytes than ``xla_cpu_small_while_loop_byte_threshold``
(a backend option, set only through ``XLA_FLAGS``:
``--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=N``) is compiled
instead into one function, loop and all, with no executor inside it.

For each ``lbfgs_bench.py`` problem (float64, history size 10, strong Wolfe) this runs,
in a fresh process with and without the option, ``gradxform.minimize`` and optax's
``lbfgs`` in a ``lax.while_loop``, each jitted and returning ``(params, n_iter)``: the
first call's compile time, the warm median, and a digest of the solution's bytes. It
prints, per problem and solver, the warm time and compile time with the option over
those without (the best of ``--repeats`` processes each, taken in turn), and whether
the solution is the same bit for bit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time

from _timing import run_child


def child() -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    import lbfgs_bench

    out = {}
    for name, f, x0, _ in lbfgs_bench.problems():
        x0 = jnp.asarray(x0)
        for solver, make in (("gradxform", lambda: lbfgs_bench.gradxform_solver(f, lambda r: (r.params, r.n_iter))),
                             ("optax", lambda: lbfgs_bench.optax_solver(f))):
            lowered = make().lower(x0)
            start = time.perf_counter()
            compiled = lowered.compile()
            compile_s = time.perf_counter() - start
            params, n_iter = jax.block_until_ready(compiled(x0))
            times = []
            for _ in range(15):
                start = time.perf_counter()
                jax.block_until_ready(compiled(x0))
                times.append(time.perf_counter() - start)
            out[f"{name}/{solver}"] = dict(compile_s=compile_s, warm_s=statistics.median(times), n_iter=int(n_iter),
                                           digest=hashlib.sha256(np.asarray(params).tobytes()).hexdigest())
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threshold", type=int, default=10_000_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child()))
        return
    flag = f"--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold={args.threshold}"
    runs = {"default": [], "raised": []}
    for _ in range(args.repeats):  # in turn, so that both see the same load
        for label, env in (("default", {}), ("raised", {"XLA_FLAGS": flag})):
            r = run_child(__file__, ["--child"], env=env)
            if "error" in r:
                raise SystemExit(f"{label}: {r['error']}")
            runs[label].append(r)
    best = {label: {key: {field: min(r[key][field] for r in rs) for field in ("compile_s", "warm_s")}
                    | {"n_iter": rs[0][key]["n_iter"], "digest": rs[0][key]["digest"]} for key in rs[0]}
            for label, rs in runs.items()}
    print(f"# XLA_FLAGS={flag}; best of {args.repeats} processes each")
    print("| problem | solver | warm, default (ms) | warm, raised (ms) | raised / default | compile raised / default "
          "| iterations | same solution |")
    print("|---|---|---|---|---|---|---|---|")
    for key, d in best["default"].items():
        r = best["raised"][key]
        name, solver = key.split("/")
        print(f"| {name} | {solver} | {d['warm_s'] * 1e3:.3f} | {r['warm_s'] * 1e3:.3f} | {r['warm_s'] / d['warm_s']:.2f} "
              f"| {r['compile_s'] / d['compile_s']:.2f} | {d['n_iter']}, {r['n_iter']} | {d['digest'] == r['digest']} |")


if __name__ == "__main__":
    main()

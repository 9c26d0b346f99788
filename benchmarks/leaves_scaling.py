"""How compile time, memory and step time grow with the number of leaves.

    python benchmarks/leaves_scaling.py [--leaves 1000,4000,10000] [--size 16]
        [--optimizer adam|sgd] [--contenders gradxform,flatten,optax] [--repeats 20]
        [--shapes K] [--timeout 1800] [--passes N]

For each number of leaves N, a tree of N float32 leaves of ``--size`` values each
(``--shapes K``: leaf i has ``size + i % K`` values, so the leaves have K distinct
shapes; ``--shapes 0``: N distinct shapes) is optimized by each contender, every
contender in a FRESH PROCESS of its own (this script runs itself as a subprocess), so
that one contender's compile caches and memory never count for another. Each child:

1. builds the transformation (the default alias, no opt-in: ``gradxform.adam(1e-3)``
   against ``optax.adam(1e-3)``; ``gradxform.flatten(gradxform.adam(1e-3))`` is the
   opt-in row), runs a jitted ``init``;
2. traces, lowers and compiles one jitted step (``update`` + ``apply_updates``,
   parameters and state donated) through ``jax.stages`` (``trace()``, ``lower()``,
   ``compile()``), each timed on its own, then runs it once;
3. runs ``--repeats`` more steps and takes the median;
4. reports its peak resident memory, ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
   (the whole process: Python, JAX, XLA's compiler and the buffers), the peak so far
   after the imports and after the jitted init (where a difference in peak RSS comes
   from), and three counts
   that, unlike the times, do not depend on the machine's load: the equations of the
   traced step's jaxpr, the instructions of the compiled step's entry computation, and
   its kernels (fusions).

"compile" in the table is everything before the first step's result: the jitted init
plus trace + lower + compile + the first run, as a user's first call pays it. Ratios are
to optax in the same run. A child that fails or runs past ``--timeout`` seconds is
reported as such (it is killed), and the next one runs.

optax is needed for the optax rows only (a row whose package is not installed is left
out).

Why ``--shapes`` matters: XLA's CPU compiler generates machine code once for kernels that
are the same computation on the same shapes, so leaves of one shape share their kernels'
code, and what grows with N is mostly the HLO passes, in proportion to the instructions.
Each distinct kernel pays its own code generation too (about 10-20 ms and 1 MB of
compile memory here). ``flatten`` has one distinct kernel per leaf (the slice of the
flat update that the leaf adds), where the leaf-by-leaf layouts have three per distinct
shape: it loses with few shapes and wins with many.

``--passes N`` also times XLA's HLO passes over the step (XLA's own log of each pass's
time, ``TF_CPP_VMODULE=hlo_pass_pipeline=1``, read back by each child) and prints,
after the table, their total beside the rest of ``compile()`` (code generation, buffer
assignment, the runtime's program), and the N passes that took longest, each contender's
time and its ratio to optax's. The logging itself costs a little time: read the ratios.

Keep memory in mind: at 10000 leaves optax's compile alone takes about 13 GB.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import resource
import statistics
import tempfile
import time

from _timing import run_child

CONTENDERS = ("gradxform", "flatten", "optax")


_PASS_LOG = {"TF_CPP_MIN_LOG_LEVEL": "0", "TF_CPP_VMODULE": "hlo_pass_pipeline=1"}
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def pass_times(log: str, module: str) -> dict:
    """``{pass name: seconds}`` summed over the HLO pass pipelines XLA ran on ``module``
    (its lines of XLA's log with ``TF_CPP_VMODULE=hlo_pass_pipeline=1``)."""
    times = collections.Counter()
    current = None
    for line in log.splitlines():
        pipeline = re.search(r"Running HLO pass pipeline on module (\S+): ", line)
        if pipeline:
            current = pipeline.group(1)
            continue
        timed = re.search(r"HLO pass: (\S+) time: ([\d.]+) (us|ms|s) ", line)
        if timed and current == module:
            times[timed.group(1)] += float(timed.group(2)) * _UNITS[timed.group(3)]
    return dict(times)


def child(contender: str, optimizer: str, leaves: int, size: int, repeats: int, shapes: int = 1,
          passes: bool = False) -> dict:
    """Runs one contender in this process; returns its measurements (with ``passes``,
    XLA's log, which goes to file descriptor 2, is read back for the step's pass times)."""
    if passes:
        log_file = tempfile.TemporaryFile("w+")
        os.dup2(log_file.fileno(), 2)
    import jax
    import jax.numpy as jnp
    import numpy as np

    if contender == "optax":
        import optax

        tx = optax.adam(1e-3) if optimizer == "adam" else optax.sgd(1e-3, momentum=0.9)
        apply_updates = optax.apply_updates
    else:
        import gradxform

        tx = gradxform.adam(1e-3) if optimizer == "adam" else gradxform.sgd(1e-3, momentum=0.9)
        if contender == "flatten":
            tx = gradxform.flatten(tx)
        apply_updates = gradxform.apply_updates
    import_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    rng = np.random.default_rng(0)
    sizes = [size + (i % shapes if shapes else i) for i in range(leaves)]
    params = [jnp.asarray(rng.standard_normal(n), jnp.float32) for n in sizes]
    grads = [jnp.full((n,), 0.01, jnp.float32) for n in sizes]
    jax.block_until_ready((params, grads))

    def step(p, s, g):
        updates, s = tx.update(g, s, p)
        return apply_updates(p, updates), s

    start = time.perf_counter()
    state = jax.jit(tx.init)(params)
    jax.block_until_ready(state)
    init_s = time.perf_counter() - start
    init_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    jitted = jax.jit(step, donate_argnums=(0, 1))
    t0 = time.perf_counter()
    traced = jitted.trace(params, state, grads)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    compiled = lowered.compile()
    t3 = time.perf_counter()
    params, state = compiled(params, state, grads)
    jax.block_until_ready(params)
    t4 = time.perf_counter()

    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        params, state = compiled(params, state, grads)
        jax.block_until_ready(params)
        samples.append(time.perf_counter() - start)
    hlo = compiled.as_text()
    xla_passes = {}
    if passes:
        log_file.seek(0)
        xla_passes = pass_times(log_file.read(), "jit_step")
    return {
        "xla_passes": xla_passes,
        "init_s": init_s,
        "trace_s": t1 - t0,
        "lower_s": t2 - t1,
        "compile_only_s": t3 - t2,
        "first_run_s": t4 - t3,
        "compile_s": init_s + (t4 - t0),
        "step_ms": 1e3 * statistics.median(samples),
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "import_rss_mb": import_rss_mb,  # after the imports and building the transformation
        "init_rss_mb": init_rss_mb,  # after the jitted init too (the peak so far)
        # Deterministic measures of the work per leaf (the times above are noisy):
        "jaxpr_eqns": len(traced.jaxpr.eqns),
        "hlo_instructions": entry_instructions(hlo),
        "hlo_fusions": hlo.count(" fusion("),
    }


def entry_instructions(hlo: str) -> int:
    """The number of instructions of the compiled step's entry computation (its kernels,
    copies and parameters: what XLA schedules, assigns buffers to and runs)."""
    entry = hlo[hlo.index("\nENTRY"):]
    return sum(1 for line in entry.splitlines()[1:] if " = " in line)


def run_contender(contender, optimizer, leaves, size, repeats, timeout, shapes=1, passes=False):
    """Runs ``child`` in a fresh interpreter; returns its dict, or ``{"error": ...}``."""
    if contender != "gradxform" and contender != "flatten":
        try:
            __import__(contender)
        except ImportError:
            return {"error": f"{contender} not installed"}
    result = run_child(__file__, ["--child", contender, "--optimizer", optimizer, "--leaves", str(leaves),
                                  "--size", str(size), "--repeats", str(repeats), "--shapes", str(shapes),
                                  *(["--passes", "1"] if passes else [])],
                       timeout, env=_PASS_LOG if passes else None)
    if passes and result.get("error", "").startswith("exit"):
        # The child's standard error went into its copy of XLA's log.
        result["error"] += " (run without --passes to see the child's error)"
    return result


def print_passes(leaves: int, rows: dict, top: int) -> None:
    """The table of ``--passes``: XLA's pass time against the rest of ``compile()``, and
    the ``top`` passes that took longest (summed over the contenders)."""
    rows = {name: r for name, r in rows.items() if "error" not in r}
    if not rows:
        return
    total = collections.Counter()
    for r in rows.values():
        total.update(r["xla_passes"])
    names = [name for name, _ in total.most_common(top)]
    base = rows.get("optax")

    def cell(r, seconds, key):
        ratio = f" ({seconds / key(base):.2f})" if base is not None and key(base) > 0 else ""
        return f"{seconds:.2f}{ratio}"

    print()
    print(f"XLA's passes over the step, {leaves} leaves: seconds (ratio to optax)")
    print()
    print("| contender | compile() | all passes | the rest | " + " | ".join(names) + " |")
    print("|---|---|---|---|" + "---|" * len(names))
    for contender, r in rows.items():
        passes = sum(r["xla_passes"].values())
        cells = [cell(r, r["compile_only_s"], lambda b: b["compile_only_s"]),
                 cell(r, passes, lambda b: sum(b["xla_passes"].values())),
                 cell(r, r["compile_only_s"] - passes,
                      lambda b: b["compile_only_s"] - sum(b["xla_passes"].values()))]
        cells += [cell(r, r["xla_passes"].get(n, 0.0), lambda b, n=n: b["xla_passes"].get(n, 0.0)) for n in names]
        print(f"| {contender} | " + " | ".join(cells) + " |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leaves", default="1000,4000,10000", help="comma-separated numbers of leaves")
    parser.add_argument("--size", type=int, default=16, help="values per leaf")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="subset of " + ",".join(CONTENDERS))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--shapes", type=int, default=1,
                        help="number of distinct leaf shapes (leaf i has size + i %% K values); 0: every leaf its own")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per child")
    parser.add_argument("--passes", type=int, default=0,
                        help="time XLA's passes over the step too, and print the N longest")
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.shapes < 0:
        parser.error(f"--shapes must be 0 or more, got {args.shapes}")
    if args.child:
        print(json.dumps(child(args.child, args.optimizer, int(args.leaves), args.size, args.repeats, args.shapes,
                               passes=args.passes > 0)))
        return

    import jax

    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"jax {jax.__version__}; {args.optimizer}, float32 leaves of {args.size} values"
          f"{'' if args.shapes == 1 else f' + i % {args.shapes}' if args.shapes else ' + i'}; "
          "one fresh process per contender")
    print()
    print("| leaves | contender | compile (s) | trace / lower / compile / 1st run (s) | peak RSS (MB) "
          "| step (ms) | compile / optax | RSS / optax | step / optax | jaxpr eqns / HLO instructions / fusions "
          "| RSS after import / init (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for leaves in [int(n) for n in args.leaves.split(",")]:
        rows = {}
        for contender in args.contenders.split(","):
            rows[contender] = run_contender(contender, args.optimizer, leaves, args.size, args.repeats, args.timeout,
                                            args.shapes, passes=args.passes > 0)
        base = rows.get("optax", {})
        for contender, r in rows.items():
            if "error" in r:
                print(f"| {leaves} | {contender} | {r['error']} | | | | | | | | |", flush=True)
                continue

            def ratio(key):
                return f"{r[key] / base[key]:.2f}" if "error" not in base and key in base else "n/a"

            split = f"{r['trace_s']:.1f} / {r['lower_s']:.1f} / {r['compile_only_s']:.1f} / {r['first_run_s']:.1f}"
            print(f"| {leaves} | {contender} | {r['compile_s']:.1f} | {split} | {r['maxrss_mb']:.0f} "
                  f"| {r['step_ms']:.2f} | {ratio('compile_s')} | {ratio('maxrss_mb')} | {ratio('step_ms')} "
                  f"| {r['jaxpr_eqns']} / {r['hlo_instructions']} / {r['hlo_fusions']} "
                  f"| {r['import_rss_mb']:.0f} / {r['init_rss_mb']:.0f} |",
                  flush=True)
        if args.passes:
            print_passes(leaves, rows, args.passes)


if __name__ == "__main__":
    main()

"""Which of ``minimize``'s thunks XLA's CPU runtime runs one after another, and which not.

    python benchmarks/lbfgs_executors.py [--detail PROBLEM] [--threshold]

XLA's CPU runtime runs each computation of a compiled program (the entry, a loop's
body, each branch of a conditional) with an executor of its own. An executor runs its
thunks (kernels, copies, nested loops and conditionals) in one of two ways
(``xla/backends/cpu/runtime/thunk_executor.cc``, jax 0.10):

* **in order**, one after the other on the calling thread, when the computation has at
  most 8 thunks, or every buffer it touches holds at most 512 bytes, or each thunk
  depends on the one before it;
* **as a graph** otherwise: each thunk starts when its inputs are ready, through atomic
  counters and a ready queue, and when many are ready at once (ten, in the loop of
  ``--threshold``), half of them are handed to another thread of the pool.

A thunk run as a graph costs more than one run in order, and a handoff costs more
still on a 2-core machine. So two programs with the same arithmetic can differ in time
by how many of their thunks land in graph executors.

On the ``lbfgs_bench.py`` problems (float64, history size 10, strong Wolfe), for
``gradxform.minimize`` and optax's ``lbfgs`` in a ``lax.while_loop``, each in a fresh
process, this prints per iteration: the thunks run in order, the thunks run as a graph,
and the handoffs. ``--detail PROBLEM`` lists instead, for each solver, the graph
executors of that problem with their computation, thunk count and runs per iteration.
``--threshold`` times a loop whose body has k independent multiply-adds on
100-value float64 vectors (k + 1 thunks with the loop counter), for k = 5 to 10: the
time per loop step jumps where the body passes 8 thunks and runs as a graph.

The executors' kinds come from XLA's own log (``TF_CPP_VMODULE=thunk_executor=6``, read
by the child process from its stderr), the runs from one profiled solve
(``jax.profiler``). The log's format belongs to XLA, not to any API: the child fails
with a message when it finds no executor there.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

_CONSTRUCTED = re.compile(r"Constructed ThunkExecutor with (\d+) thunks.*is_sequential=(true|false)")
_GRAPH = re.compile(r"^ThunkExecutor: #thunks=(\d+)")
_THUNK = re.compile(r"^ thunk #\d+: op_name=([^,]+),")


def _executors(log_text: str) -> list[tuple[bool, list[str]]]:
    """``(in_order, thunk names)`` of each executor the log shows, in order of creation."""
    executors, in_order = [], None
    for line in log_text.splitlines():
        constructed = _CONSTRUCTED.search(line)
        if constructed:
            in_order = constructed.group(2) == "true"
        elif _GRAPH.match(line):
            executors.append((in_order, []))
        else:
            thunk = _THUNK.match(line)
            if thunk and executors:
                executors[-1][1].append(thunk.group(1))
    return executors


def _owners(hlo_text: str) -> tuple[dict[str, str], dict[str, str]]:
    """Instruction name -> name of the computation that holds it, and computation name ->
    the named scope (``lbfgs.py``'s, as ``lbfgs_overhead.py --where``) most of its
    instructions come from."""
    from lbfgs_overhead import hlo_instructions, named_scopes

    owner, scopes = {}, collections.defaultdict(collections.Counter)
    for computation, name, rest in hlo_instructions(hlo_text):
        owner[name] = computation
        if named_scopes(rest):
            scopes[computation][named_scopes(rest)] += 1
    return owner, {c: counts.most_common(1)[0][0] for c, counts in scopes.items()}


def child(problem: str, solver: str, log_path: str) -> None:
    """Compiles and profiles one solver on one problem; prints its counts as JSON."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import lbfgs_bench
    from lbfgsb_overhead import profile_events

    (f, x0), = [(f, x0) for name, f, x0, _ in lbfgs_bench.problems() if name == problem]
    x = jax.block_until_ready(jnp.asarray(x0))
    make = lbfgs_bench.gradxform_solver if solver == "gradxform" else lbfgs_bench.optax_solver
    sys.stderr.flush()
    start = os.path.getsize(log_path)
    compiled = make(f).lower(x).compile()  # only this program's executors are logged from here
    sys.stderr.flush()
    with open(log_path) as log:
        log.seek(start)
        executors = _executors(log.read())
    if not executors:
        raise SystemExit("no thunk executor found in XLA's log (TF_CPP_VMODULE=thunk_executor=6): "
                         "this jaxlib logs them otherwise")
    out = jax.block_until_ready(compiled(x))
    iterations = int(out.n_iter) if solver == "gradxform" else int(out[1])
    events, handoffs = profile_events(lambda: jax.block_until_ready(compiled(x)), all_threads=True)
    runs = collections.Counter(events)
    owner, scope = _owners(compiled.as_text())
    in_order = graph = 0
    graphs = []
    for sequential, thunks in executors:
        count = sum(runs[t] for t in thunks)
        if sequential or len(thunks) == 1:
            in_order += count
        else:
            graph += count
            computation = owner.get(thunks[0], "?")
            graphs.append(dict(computation=computation, scope=scope.get(computation, "-"), thunks=len(thunks),
                               runs=max(runs[t] for t in thunks) / iterations))
    print(json.dumps(dict(iterations=iterations, in_order=in_order / iterations, graph=graph / iterations,
                          handoffs=handoffs / iterations, graphs=graphs)))


def measure(problem: str, solver: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="thunk_executor=6")
    with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
        done = subprocess.run([sys.executable, __file__, "--child", problem, solver, log.name], env=env,
                              stdout=subprocess.PIPE, stderr=log, text=True)
        if done.returncode:
            log.seek(0)
            raise SystemExit(f"{solver} on {problem} failed:\n{log.read()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def threshold(steps: int = 5000, repeats: int = 9) -> None:
    """Microseconds per loop step of a body of k independent multiply-adds, k = 5..10."""
    import statistics
    import time

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    @jax.jit
    def loop(vectors, n):
        return jax.lax.fori_loop(0, n, lambda i, vs: tuple(v * 1.0001 + 1.0 for v in vs), vectors)

    print(f"# jax {jax.__version__}; a lax.fori_loop of {steps} steps, median of {repeats} calls")
    print("| multiply-adds in the body (k) | thunks in the body | microseconds per loop step |")
    print("|---|---|---|")
    for k in range(5, 11):
        vectors = tuple(jnp.full(100, float(j)) for j in range(k))
        jax.block_until_ready(loop(vectors, steps))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(loop(vectors, steps))
            times.append(time.perf_counter() - start)
        print(f"| {k} | {k + 1} | {statistics.median(times) / steps * 1e6:.2f} |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detail", metavar="PROBLEM", help="the graph executors of one problem")
    parser.add_argument("--threshold", action="store_true", help="time loop bodies of 6 to 11 thunks")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return
    if args.threshold:
        threshold()
        return
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import lbfgs_bench

    solvers = ("gradxform", "optax")
    if args.detail:
        for solver in solvers:
            result = measure(args.detail, solver)
            print(f"\n{solver} on {args.detail}: {result['graph']:.1f} thunks per iteration run as a graph")
            print("| computation | most of it from | thunks | runs per iteration | thunks per iteration |")
            print("|---|---|---|---|---|")
            for g in sorted(result["graphs"], key=lambda g: -g["thunks"] * g["runs"]):
                if g["runs"]:
                    print(f"| {g['computation']} | {g['scope']} | {g['thunks']} | {g['runs']:.2f} | {g['thunks'] * g['runs']:.1f} |")
        return
    print("| problem | solver | iterations | thunks per iteration, in order | as a graph | handoffs per iteration |")
    print("|---|---|---|---|---|---|")
    for name, *_ in lbfgs_bench.problems():
        for solver in solvers:
            r = measure(name, solver)
            print(f"| {name} | {solver} | {r['iterations']} | {r['in_order']:.1f} | {r['graph']:.1f} "
                  f"| {r['handoffs']:.2f} |", flush=True)


if __name__ == "__main__":
    main()

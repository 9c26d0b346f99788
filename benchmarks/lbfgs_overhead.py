"""Where ``gradxform.minimize``'s warm time goes beside optax's, on XLA's CPU runtime.

    python benchmarks/lbfgs_overhead.py [--repeats 15] [--quick] [--where N]

On the ``lbfgs_bench.py`` problems (float64, history size 10, strong Wolfe; optax's
``lbfgs`` in a ``lax.while_loop``) it times the two jitted solvers round-robin
(``_timing.race``) and prints the warm medians, their ratio, and, from one profiled call
of each (``jax.profiler``, as ``lbfgsb_overhead.py``), the thunks the runtime executed
and the handoffs of work to its other thread, per solve and per evaluation. On small
problems these counts, not arithmetic, set the time, and among them the thunks that
touch a vector count far more than the scalar ones (``benchmarks/two_loop_variants.py``).

``--where N`` prints instead, for ``gradxform.minimize`` on Rosenbrock-N, the thunks per
evaluation of each computation of the compiled program (the loop body, each branch,
the two-loop recursion's loops...), with those among them that read or write an
N-value vector, labelled by the JAX operations most of its instructions come from; then
the totals per iteration, and optax's.
"""

from __future__ import annotations

import argparse
import collections
import re

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import lbfgs_bench  # noqa: E402
from _timing import race  # noqa: E402
from lbfgsb_overhead import profile_counts, profile_events  # noqa: E402


_SCOPES = ("objective", "first_evaluation", "line_search_step", "unsearched_step", "iteration_start",
           "two_loop_backward", "two_loop_forward", "bracket_step", "zoom_step")


def hlo_instructions(hlo_text: str):
    """``(computation, instruction name, rest of the line after "name = ")`` for each
    instruction of a compiled program's text (``.compile().as_text()``)."""
    computation = None
    for line in hlo_text.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
        if header:
            computation = header.group(1)
            continue
        instruction = re.match(r"^\s*(?:ROOT )?%?([\w.\-]+) = ", line)
        if instruction and computation:
            yield computation, instruction.group(1), line[instruction.end():]


def named_scopes(rest: str) -> str:
    """The named scopes (``lbfgs.py``'s and ``linesearch.py``'s, without control flow's)
    an instruction comes from, joined by ``/``, or ``""``."""
    scope = re.search(r'op_name="([^"]*)"', rest)
    return "/".join(p for p in scope.group(1).split("/") if p in _SCOPES) if scope else ""


def _thunks_by_computation(solve, x0):
    """The thunks one call of the jitted ``solve(x0)`` ran, by computation of its compiled
    program: ``(thunks, vector, labels)``. ``vector`` counts those of them that read or
    write an array with a dimension of ``x0``'s size (so that size should differ from
    every other dimension in the program: the history size, 10, and the bracket's 2);
    ``labels`` counts each computation's instructions by named scope."""
    n = x0.size
    owner, shapes, touches = {}, {}, {}
    labels = collections.defaultdict(collections.Counter)
    for computation, name, rest in hlo_instructions(solve.lower(x0).compile().as_text()):
        call = re.search(r"\s([a-z][\w\-]*)\(([^)]*)\)", rest)  # the opcode after the shape
        shapes[name] = rest[: call.start()] if call else rest
        operands = re.findall(r"%([\w.\-]+)", call.group(2)) if call else []
        owner[name] = computation
        touches[name] = [shapes[name]] + [shapes.get(o, "") for o in operands]
        if "op_name=" in rest:
            labels[computation][named_scopes(rest) or "(other)"] += 1
    vector_dim = re.compile(rf"[\[,]{n}[\],]")
    thunks, vector = collections.Counter(), collections.Counter()
    for event in profile_events(lambda: jax.block_until_ready(solve(x0)))[0]:
        computation = owner.get(event, "?")
        thunks[computation] += 1
        vector[computation] += any(vector_dim.search(t) for t in touches.get(event, ()))
    return thunks, vector, labels


def where(n: int) -> None:
    """Thunks per evaluation by computation of ``minimize`` on Rosenbrock-``n``, and the
    totals per iteration beside optax's."""
    x0 = jnp.asarray(np.tile([-1.2, 1.0], n // 2))
    solve = lbfgs_bench.gradxform_solver(lbfgs_bench.rosenbrock)
    result = jax.block_until_ready(solve(x0))
    evals, iterations = int(result.n_evals), int(result.n_iter)
    thunks, vector, labels = _thunks_by_computation(solve, x0)
    print(f"# minimize on Rosenbrock-{n}: {evals} evaluations, {sum(thunks.values()) / evals:.1f} thunks per evaluation")
    print(f"| thunks per evaluation | of which read or write a {n}-vector | computation | most of its instructions from |")
    print("|---|---|---|---|")
    for computation, count in thunks.most_common():
        label = ", ".join(f"{k} ({v})" for k, v in labels[computation].most_common(2))
        print(f"| {count / evals:.1f} | {vector[computation] / evals:.1f} | {computation} | {label} |")
    theirs = lbfgs_bench.optax_solver(lbfgs_bench.rosenbrock)
    their_iterations = int(jax.block_until_ready(theirs(x0))[1])
    their_thunks, their_vector, _ = _thunks_by_computation(theirs, x0)
    print()
    print(f"| per iteration (Rosenbrock-{n}) | thunks | of which read or write a {n}-vector | iterations |")
    print("|---|---|---|---|")
    for name, t, v, i in (("gradxform.minimize", thunks, vector, iterations),
                          ("optax.lbfgs", their_thunks, their_vector, their_iterations)):
        print(f"| {name} | {sum(t.values()) / i:.1f} | {sum(v.values()) / i:.1f} | {i} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="5 repeats, no Rosenbrock-1000")
    parser.add_argument("--where", type=int, metavar="N", help="thunks by computation on Rosenbrock-N")
    args = parser.parse_args(argv)
    if args.where:
        where(args.where)
        return
    repeats = 5 if args.quick else args.repeats
    print(f"# jax {jax.__version__}, {repeats} warm calls each, round-robin")
    print("| problem | evaluations | gradxform (ms) | optax (ms) | ratio to optax | gradxform thunks | "
          "optax thunks | gradxform handoffs | optax handoffs | gradxform thunks per evaluation |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, f, x0_np, _ in lbfgs_bench.problems():
        if args.quick and name.endswith("1000"):
            continue
        x0 = jnp.asarray(x0_np)
        ours, theirs = lbfgs_bench.gradxform_solver(f), lbfgs_bench.optax_solver(f)
        evals = int(jax.block_until_ready(ours(x0)).n_evals)
        jax.block_until_ready(theirs(x0))
        calls = {"gradxform": lambda: jax.block_until_ready(ours(x0)),
                 "optax": lambda: jax.block_until_ready(theirs(x0))}
        times = race(calls, repeats)
        (t_ours, h_ours), (t_theirs, h_theirs) = profile_counts(calls["gradxform"]), profile_counts(calls["optax"])
        print(f"| {name} | {evals} | {times['gradxform'] * 1e3:.2f} | {times['optax'] * 1e3:.2f} | "
              f"{times['gradxform'] / times['optax']:.2f} | {t_ours} | {t_theirs} | {h_ours} | {h_theirs} | "
              f"{t_ours / evals:.0f} |", flush=True)


if __name__ == "__main__":
    main()

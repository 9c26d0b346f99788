"""``torch_compat.optim``'s ``step()`` beside ``torch.optim``'s and the core's, in one process.

    python benchmarks/compat_step.py [--table step|compile|all] [--repeats 50]

Table ``step`` (the default): ``Adam.step()`` on two float32 models, 200 leaves of 100
values (latency-bound: per-step overhead) and 73 leaves holding 23M values
(bandwidth-bound). Prints the median time of one step (round-robin over the contenders,
see ``_timing.race``) and the ratio to torch's for-loop implementation, which is what
``torch.optim.Adam(params)`` runs on CPU by default.

Table ``compile``: the cost of torch_compat's compiled step as the number of parameters
grows (issue #16), on 1000 float32 leaves of 16 values and 200 leaves of 100 values, for
torch_compat's ``Adam``, ``AdamW`` and ``SGD(momentum=0.9)``, beside the core's
``gradxform.adam`` (``update`` + ``apply_updates`` under ``jax.jit`` with the parameters
and state donated) and torch's for-loop optimizers. For each: the time to trace, lower
and compile the step a steady ``step()`` runs (every parameter has state; a fresh
``jax.jit`` of the same function, so nothing is cached), the optimized HLO's instruction
and kernel (fusion) counts in its entry computation (machine-independent), the median
step time and its ratio to torch's.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

import gradxform
import torch_compat
from torch_compat import optim
from torch_compat.optim.optimizer import GradxformOptimizer
from _timing import race

CASES = {
    "200 leaves x 100": [(100,)] * 200,
    "73 leaves, 23.6M values": [(768, 853)] * 36 + [(768,)] * 36 + [(1,)],
}

COMPILE_CASES = {
    "1000 leaves x 16": [(16,)] * 1000,
    "200 leaves x 100": [(100,)] * 200,
}

# (label, torch_compat class and options, torch class and options)
COMPILE_ROWS = [
    ("Adam", optim.Adam, torch.optim.Adam, dict(lr=1e-3)),
    ("AdamW", optim.AdamW, torch.optim.AdamW, dict(lr=1e-3)),
    ("SGD momentum 0.9", optim.SGD, torch.optim.SGD, dict(lr=1e-3, momentum=0.9)),
]


def step_table(repeats: int) -> None:
    print(f"# jax {jax.__version__}, torch {torch.__version__}, float32, Adam(lr=1e-3)")
    print("| model | implementation | median step (ms) | ratio to torch for-loop |")
    print("|---|---|---|---|")
    for name, shapes in CASES.items():
        rng = np.random.default_rng(0)
        arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        params = [torch_compat.Parameter(a) for a in arrays]
        for p in params:
            p.grad = jnp.ones(p.shape, jnp.float32)
        ours = optim.Adam(params, lr=1e-3)

        def ours_step(ours=ours, params=params):
            ours.step()
            jax.block_until_ready(params[0].data)

        runners = {"torch_compat.optim.Adam": ours_step}
        for label, flags in (("torch for-loop", dict(foreach=False)), ("torch foreach", dict(foreach=True)),
                             ("torch fused", dict(fused=True))):
            tparams = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in arrays]
            for p in tparams:
                p.grad = torch.ones_like(p)
            runners[label] = torch.optim.Adam(tparams, lr=1e-3, **flags).step
        rows = list(race(runners, repeats).items())
        reference = rows[1][1]
        for label, t in rows:
            print(f"| {name} | {label} | {t * 1e3:.2f} | {t / reference:.2f} |")


def _abstract(tree):
    """``tree`` with each array replaced by its shape and dtype (for lowering afresh)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def _compile_cost(jitted, args) -> tuple[float, int, int]:
    """Seconds to trace, lower and compile ``jitted`` for ``args`` (abstract), and the
    instruction and kernel counts of the optimized HLO's entry computation."""
    start = time.perf_counter()
    text = jitted.lower(*args).compile().as_text()
    seconds = time.perf_counter() - start
    entry = text[text.index("ENTRY"):]
    return seconds, entry.count("\n  %"), entry.count(" fusion(")


def _compat_compile_cost(opt) -> tuple[float, int, int]:
    """:func:`_compile_cost` of the step ``opt.step()`` runs now, from a fresh ``jax.jit``."""
    recorded = {}
    original = GradxformOptimizer._compiled_step

    def recording(self, key, statics):
        fn = original(self, key, statics)

        def call(*args):
            recorded["args"] = _abstract(args)
            return fn(*args)

        recorded["statics"] = statics
        return call

    GradxformOptimizer._compiled_step = recording
    try:
        opt.step()
    finally:
        GradxformOptimizer._compiled_step = original
    return _compile_cost(type(opt)._compile(recorded["statics"]), recorded["args"])


def _core_adam(arrays):
    """The core's Adam step (to jit with parameters and state donated) and its arguments."""
    tx = gradxform.adam(1e-3)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gradxform.apply_updates(params, updates), state

    params = [jnp.asarray(a) for a in arrays]
    grads = [jnp.ones_like(p) for p in params]
    return step, [params, tx.init(params), grads]


def compile_table(repeats: int) -> None:
    print(f"# jax {jax.__version__}, torch {torch.__version__}, float32; steady step (every parameter has state)")
    print("| model | implementation | trace + compile (s) | HLO instructions | kernels | median step (ms) "
          "| step ratio to torch for-loop |")
    print("|---|---|---|---|---|---|---|")
    for name, shapes in COMPILE_CASES.items():
        rng = np.random.default_rng(0)
        arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        rows, runners = {}, {}
        for label, ours_cls, torch_cls, options in COMPILE_ROWS:
            params = [torch_compat.Parameter(a) for a in arrays]
            for p in params:
                p.grad = jnp.ones(p.shape, jnp.float32)
            opt = ours_cls(params, **options)
            opt.step()  # every parameter gets its state: the next step is the steady one
            rows[f"torch_compat {label}"] = _compat_compile_cost(opt)

            def ours_step(opt=opt, params=params):
                opt.step()
                jax.block_until_ready(params[0].data)

            runners[f"torch_compat {label}"] = ours_step
            tparams = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in arrays]
            for p in tparams:
                p.grad = torch.ones_like(p)
            runners[f"torch {label}"] = torch_cls(tparams, foreach=False, **options).step
            if label == "Adam":
                step, args = _core_adam(arrays)
                rows["gradxform.adam"] = _compile_cost(jax.jit(step, donate_argnums=(0, 1)), _abstract(args))
                jitted = jax.jit(step, donate_argnums=(0, 1))
                state = {"args": args}

                def core_step(jitted=jitted, state=state):
                    params, opt_state, grads = state["args"]
                    params, opt_state = jitted(params, opt_state, grads)
                    state["args"] = [params, opt_state, grads]
                    jax.block_until_ready(params[0])

                runners["gradxform.adam"] = core_step
        times = race(runners, repeats)
        for label, _, _, _ in COMPILE_ROWS:
            reference = times[f"torch {label}"]
            for row in (f"torch_compat {label}", "gradxform.adam" if label == "Adam" else None, f"torch {label}"):
                if row is None:
                    continue
                seconds, instructions, kernels = rows.get(row, (0.0, "", ""))
                t = times[row]
                compile_cell = "" if row.startswith("torch ") else f"{seconds:.2f}"
                print(f"| {name} | {row} | {compile_cell} | {instructions} | {kernels} | {t * 1e3:.2f} "
                      f"| {t / reference:.2f} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", choices=("step", "compile", "all"), default="step")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    if args.table in ("step", "all"):
        step_table(args.repeats)
    if args.table in ("compile", "all"):
        compile_table(args.repeats)


if __name__ == "__main__":
    main()

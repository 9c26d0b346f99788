"""One optimizer step: gradxform beside optax and torch, in one process.

    python benchmarks/step_bench.py [--repeats 30] [--only small|large] [--skip-compile]
        [--optimizers Adam,AdamW,...] [--torch-device cpu|cuda]

Prints Markdown tables (paste them into RESULTS.md):

(a) one step of Adam, AdamW, SGD with momentum and Adafactor, float32, over two models:
    "large" (73 leaves holding 23.6M values, the shapes of a small transformer) and
    "small" (200 leaves of 100 values, where per-leaf overhead dominates). Contenders:
    - gradxform, leaf by leaf: ``jax.jit`` of update + apply_updates, buffers donated;
    - ``gradxform.flatten(...)``: the same step, state kept as one flat buffer per dtype;
    - gradxform with flat parameters: the user keeps the parameters raveled
      (``jax.flatten_util.ravel_pytree``) and the gradients arrive flat;
    - optax's alias of the same name, jitted and donated the same way;
    - torch 2.13's for-loop, foreach and fused implementations (2 threads).
(b) a bandwidth floor measured in the same run: one read-modify-write pass over as many
    bytes as the step touches (params + grads + state), by XLA (one jitted, donated
    ``x * a + b``) and by torch (in place, 2 threads). Each row is also given as a
    multiple of the XLA floor. A third floor is the cost of the ``jax.jit`` boundary
    alone: ``params + grads`` leaf by leaf, donated, which any step that takes and
    returns the tree pays.
(d) compile time of the first step (trace, compile and run) for a 1000-leaf tree,
    gradxform against optax.
(e) peak memory of a jitted, donated step from XLA's own memory analysis of the compiled
    step: arguments + outputs + temporaries - donated (aliased) bytes, against
    params + grads + state.

On a GPU, jax runs on its default device, and ``--torch-device cuda`` puts torch's rows
on the GPU too (each torch step then ends with ``torch.cuda.synchronize()``, as each
jax step ends with ``jax.block_until_ready``).

Times are medians of ``--repeats`` steps after two warm-up steps, taken round-robin over
the contenders (``_timing.race``); ratios are what to read, since these machines are
noisy. (c), torch_compat's ``Adam.step()``, is in ``compat_step.py``.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from jax.flatten_util import ravel_pytree

import gradxform
from _timing import race

MODELS = {
    "large": [(768, 853)] * 36 + [(768,)] * 36 + [(1,)],
    "small": [(100,)] * 200,
}
LR = 1e-3
OPTIMIZERS = {
    # name: (gradxform transform, optax transform, torch class and kwargs, element-wise?)
    "Adam": (lambda: gradxform.adam(LR), lambda: optax.adam(LR), (torch.optim.Adam, {}), True),
    "AdamW": (
        lambda: gradxform.adamw(LR, weight_decay=1e-2),
        lambda: optax.adamw(LR, weight_decay=1e-2),
        (torch.optim.AdamW, dict(weight_decay=1e-2)),
        True,
    ),
    "SGD momentum": (
        lambda: gradxform.sgd(LR, momentum=0.9),
        lambda: optax.sgd(LR, momentum=0.9),
        (torch.optim.SGD, dict(momentum=0.9)),
        True,
    ),
    "Adafactor": (
        lambda: gradxform.adafactor(LR),
        lambda: optax.adafactor(LR),
        (torch.optim.Adafactor, {}),
        False,
    ),
}


def make_arrays(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def nbytes(tree):
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree) if hasattr(x, "dtype"))


def jax_stepper(tx, params, grads):
    """A donated, jitted update + apply; returns (run one step, bytes of state)."""

    def step(p, s, g):
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    compiled = jax.jit(step, donate_argnums=(0, 1))
    box = [jax.tree.map(jnp.array, params), tx.init(params)]
    state_bytes = nbytes(box[1])

    def run():
        box[0], box[1] = compiled(box[0], box[1], grads)
        jax.block_until_ready(box[0])

    return run, state_bytes


TORCH_DEVICE = "cpu"


def torch_sync():
    if TORCH_DEVICE != "cpu":
        torch.cuda.synchronize()


def torch_stepper(arrays, cls, kwargs, flags):
    params = [torch.nn.Parameter(torch.from_numpy(a.copy()).to(TORCH_DEVICE)) for a in arrays]
    for p in params:
        p.grad = torch.full_like(p, 0.01)
    opt = cls(params, lr=LR, **kwargs, **flags)

    def run():
        opt.step()
        torch_sync()

    return run


def xla_floor(total_bytes):
    buf = jnp.zeros(total_bytes // 4, jnp.float32)
    rmw = jax.jit(lambda x: x * 0.999 + 1e-3, donate_argnums=0)
    box = [buf]

    def run():
        box[0] = rmw(box[0])
        jax.block_until_ready(box[0])

    return run


def boundary_floor(params, grads):
    """``params + grads`` leaf by leaf, jitted and donated: the least any step that takes
    and returns the tree pays at the ``jax.jit`` boundary."""
    add = jax.jit(lambda p, g: [a + b for a, b in zip(p, g)], donate_argnums=0)
    box = [[jnp.array(x) for x in params]]

    def run():
        box[0] = add(box[0], grads)
        jax.block_until_ready(box[0])

    return run


def torch_floor(total_bytes):
    buf = torch.zeros(total_bytes // 4, device=TORCH_DEVICE)

    def run():
        buf.mul_(0.999)
        torch_sync()

    return run


def table_a(models, repeats):
    print("\n## (a) one step, float32; (b) bandwidth floor\n")
    print("| model | optimizer | implementation | median (ms) | ratio to optax | ratio to torch fused | x XLA floor |")
    print("|---|---|---|---|---|---|---|")
    for model in models:
        shapes = MODELS[model]
        arrays = make_arrays(shapes)
        params = [jnp.asarray(a) for a in arrays]
        grads = [jnp.full(s, 0.01, jnp.float32) for s in shapes]
        flat_params, _ = ravel_pytree(params)
        flat_grads, _ = ravel_pytree(grads)
        for name, (ours, theirs, (cls, kwargs), elementwise) in OPTIMIZERS.items():
            runners = {}
            runners["gradxform (leaf by leaf)"], state_bytes = jax_stepper(ours(), params, grads)
            if elementwise:
                runners["gradxform.flatten"], _ = jax_stepper(gradxform.flatten(ours()), params, grads)
                runners["gradxform, flat params"], _ = jax_stepper(ours(), flat_params, flat_grads)
            runners["optax"], _ = jax_stepper(theirs(), params, grads)
            for label, flags in (("for-loop", dict(foreach=False)), ("foreach", dict(foreach=True)),
                                 ("fused", dict(fused=True))):
                try:
                    step = torch_stepper(arrays, cls, kwargs, flags)
                    step()
                except (RuntimeError, TypeError, ValueError):
                    continue  # torch has no such implementation for this optimizer
                runners[f"torch {label}"] = step
            touched = 2 * nbytes(params) + state_bytes  # params + grads + state
            floor_label = f"floor: XLA pass over {touched / 1e6:.0f} MB"
            runners[floor_label] = xla_floor(touched)
            runners["floor: torch in-place pass"] = torch_floor(touched)
            runners["floor: jit boundary (params + grads, leaf by leaf)"] = boundary_floor(params, grads)
            times = race(runners, repeats)
            optax_t = times["optax"]
            fused_t = times.get("torch fused")
            floor_t = times[floor_label]
            for label, t in times.items():
                fused_ratio = f"{t / fused_t:.2f}" if fused_t else "n/a"
                print(f"| {model} | {name} | {label} | {t * 1e3:.2f} | {t / optax_t:.2f} | {fused_ratio} | {t / floor_t:.2f} |",
                      flush=True)
            del runners
            gc.collect()


def compile_seconds(make_tx, params, grads):
    tx = make_tx()

    def step(p, s, g):
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    start = time.perf_counter()
    state = jax.jit(tx.init)(params)
    out = jax.jit(step, donate_argnums=(0, 1))(jax.tree.map(jnp.array, params), state, grads)
    jax.block_until_ready(out)
    return time.perf_counter() - start


def table_d(repeats=3):
    print("\n## (d) first step for 1000 leaves (trace + compile + run of init and step)\n")
    print("| optimizer | implementation | median (s) | ratio to optax |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(1)
    shapes = [(int(rng.integers(1, 64)), int(rng.integers(1, 64))) for _ in range(1000)]
    params = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]
    grads = [jnp.full(s, 0.01, jnp.float32) for s in shapes]
    for name in [n for n in ("Adam", "SGD momentum") if n in OPTIMIZERS]:
        ours, theirs, _, _ = OPTIMIZERS[name]
        rows = [
            ("gradxform (leaf by leaf)", ours),
            ("gradxform.flatten", lambda: gradxform.flatten(ours())),
            ("optax", theirs),
        ]
        times = {}
        for label, make in rows:
            samples = []
            for _ in range(repeats):
                jax.clear_caches()
                samples.append(compile_seconds(make, params, grads))
            times[label] = statistics.median(samples)
        for label, t in times.items():
            print(f"| {name} | {label} | {t:.2f} | {t / times['optax']:.2f} |", flush=True)


def peak_bytes(tx, params, grads):
    def step(p, s, g):
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    state = tx.init(params)
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads).compile()
    m = compiled.memory_analysis()
    peak = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    return peak, 2 * nbytes(params) + nbytes(state)


def table_e():
    print("\n## (e) peak memory of a donated step (XLA memory analysis)\n")
    print("| model | optimizer | implementation | peak (MB) | params + grads + state (MB) | ratio |")
    print("|---|---|---|---|---|---|")
    for model, shapes in MODELS.items():
        params = [jnp.zeros(s, jnp.float32) for s in shapes]
        grads = [jnp.zeros(s, jnp.float32) for s in shapes]
        for name, (ours, theirs, _, elementwise) in OPTIMIZERS.items():
            rows = [("gradxform (leaf by leaf)", ours())]
            if elementwise:
                rows.append(("gradxform.flatten", gradxform.flatten(ours())))
            rows.append(("optax", theirs()))
            for label, tx in rows:
                peak, floor = peak_bytes(tx, params, grads)
                print(f"| {model} | {name} | {label} | {peak / 1e6:.1f} | {floor / 1e6:.1f} | {peak / floor:.2f} |",
                      flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--only", choices=tuple(MODELS), default=None)
    parser.add_argument("--skip-compile", action="store_true", help="leave out table (d)")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                        help="comma-separated subset of: " + ", ".join(OPTIMIZERS))
    parser.add_argument("--torch-device", choices=("cpu", "cuda"), default="cpu",
                        help="where torch's rows run (jax uses its default device)")
    args = parser.parse_args(argv)
    global TORCH_DEVICE
    TORCH_DEVICE = args.torch_device
    chosen = args.optimizers.split(",")
    for name in list(OPTIMIZERS):
        if name not in chosen:
            del OPTIMIZERS[name]
    torch.set_num_threads(2)
    print(f"# {platform.processor() or platform.machine()}, jax {jax.__version__}, optax {optax.__version__}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads, on {TORCH_DEVICE}); "
          f"jax device: {jax.devices()[0].device_kind}")
    table_a([args.only] if args.only else list(MODELS), args.repeats)
    if not args.skip_compile:
        table_d()
    table_e()


if __name__ == "__main__":
    main()

"""Long runs: N steps of every optimizer with extreme but valid hyperparameters.

For each optimizer and dtype (float32, bfloat16) the same small problem runs on both
sides, gradxform (one ``jax.lax.scan`` over all steps) and torch 2.13 (a for-loop, its
single-tensor implementation), and the first step after which a parameter holds a NaN
or an Inf is reported for each side (``-`` when none does).

Problem: one 4x4 parameter, initialised to ``linspace(-1, 1)``; at step ``t`` the
gradient is ``0.5 * p_t + noise[t % 64]`` computed in the parameter's dtype from each
side's *own* parameters (``noise`` is a fixed table of values exact in bfloat16). The
hyperparameters (:data:`CONFIGS`) push every option to its edge: tiny ``eps``, large
learning rates, betas within 1e-6 of 1, large weight decay, extreme step-size bounds.

Usage (from the repository root)::

    PYTHONPATH=. python tests/soak.py                      # 100000 steps, both sides
    PYTHONPATH=. python tests/soak.py --steps 2000 --write-golden tests/golden/soak.json
    PYTHONPATH=. python tests/soak.py --no-torch --optimizers adam,sgd

The table it prints is the one in docs/reliability.md ("Long runs"); ``test_soak.py``
runs a short version against the committed golden results (torch's side), without torch.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from gradxform.registry import FIRST_ORDER, SPECS

STEPS = 100_000
SHAPE = (4, 4)
COEF = 0.5
TABLE = 64

# torch keyword arguments (``lr`` as torch spells it); gradxform takes the same names,
# with ``learning_rate`` for ``lr``.
CONFIGS: dict[str, dict] = {
    "sgd": dict(lr=1.0, momentum=0.9999, dampening=0.0, weight_decay=0.0, nesterov=True),
    "asgd": dict(lr=1.0, lambd=1.0, alpha=0.99, t0=1.0, weight_decay=100.0),
    "rprop": dict(lr=10.0, etas=(1e-3, 50.0), step_sizes=(1e-30, 1e30)),
    "adagrad": dict(lr=100.0, lr_decay=1.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-30),
    "adadelta": dict(lr=1000.0, rho=0.999999, eps=1e-30, weight_decay=0.0),
    "rmsprop": dict(lr=10.0, alpha=0.999999, eps=1e-30, weight_decay=0.0, momentum=0.999, centered=True),
    "adam": dict(lr=10.0, betas=(0.999999, 0.999999), eps=1e-30, weight_decay=0.0, amsgrad=True),
    "adamw": dict(lr=10.0, betas=(0.0, 0.999999), eps=1e-30, weight_decay=0.09, amsgrad=False),
    "adamax": dict(lr=10.0, betas=(0.999999, 0.999999), eps=1e-30, weight_decay=0.0),
    "sparse_adam": dict(lr=10.0, betas=(0.999999, 0.999999), eps=1e-30),
    "nadam": dict(lr=10.0, betas=(0.999999, 0.999999), eps=1e-30, weight_decay=0.05,
                  momentum_decay=1000.0, decoupled_weight_decay=True),
    "radam": dict(lr=10.0, betas=(0.9, 0.999999), eps=1e-30, weight_decay=1000.0, decoupled_weight_decay=False),
    "adafactor": dict(lr=10.0, beta2_decay=-0.01, eps=(None, 1e-30), d=1.0, weight_decay=0.09),
    "muon": dict(lr=10.0, weight_decay=0.05, momentum=0.9999, nesterov=True, eps=1e-30, ns_steps=5),
    # Two runs that diverge on purpose (torch overflows too): the step of the first
    # non-finite value must match.
    "sgd:diverging": dict(lr=10.0),
    "adafactor:diverging": dict(lr=10.0, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=1000.0),
}

TORCH_NAMES = {alias: SPECS[alias].torch_name for alias in FIRST_ORDER}
NO_FOREACH = {alias for alias in FIRST_ORDER if "foreach" not in (o.name for o in SPECS[alias].options)}
# torch's SparseAdam (sparse tensors) and Muon (bfloat16 matmuls) take milliseconds a
# step on a CPU: their torch side runs at most this many steps by default.
TORCH_STEP_CAP = {"sparse_adam": 20_000, "muon": 20_000}
DTYPES = ("float32", "bfloat16")


def optimizer_of(name: str) -> str:
    """The optimizer a configuration runs (``"sgd:diverging"`` runs ``sgd``)."""
    return name.split(":")[0]


def noise_table() -> np.ndarray:
    """``[64, 4, 4]`` float32 values exact in bfloat16 (multiples of 1/64 in [-1, 1])."""
    rng = np.random.default_rng(8)
    return (rng.integers(-64, 65, size=(TABLE, *SHAPE)) / 64.0).astype(np.float32)


def initial() -> np.ndarray:
    return np.linspace(-1.0, 1.0, int(np.prod(SHAPE)), dtype=np.float32).reshape(SHAPE)


def run_gradxform(name: str, dtype: str, steps: int) -> dict:
    """First bad step (1-based, or None) and the final max |p|, from one lax.scan."""
    import jax
    import jax.numpy as jnp

    import gradxform

    options = dict(CONFIGS[name])
    lr = options.pop("lr")
    tx = getattr(gradxform, optimizer_of(name))(learning_rate=lr, **options)
    jdtype = jnp.dtype(dtype)
    table = jnp.asarray(noise_table()).astype(jdtype)
    coef = jnp.asarray(COEF, jdtype)
    p0 = jnp.asarray(initial()).astype(jdtype)

    def body(carry, t):
        p, state, first_bad = carry
        grad = p * coef + table[t % TABLE]
        updates, state = tx.update(grad, state, p)
        p = gradxform.apply_updates(p, updates)
        bad = jnp.logical_not(jnp.all(jnp.isfinite(p)))
        first_bad = jnp.where((first_bad < 0) & bad, t + 1, first_bad)
        return (p, state, first_bad), None

    @jax.jit
    def run(p):
        carry = (p, tx.init(p), jnp.asarray(-1, jnp.int32))
        (p, _, first_bad), _ = jax.lax.scan(body, carry, jnp.arange(steps, dtype=jnp.int32))
        return p, first_bad

    p, first_bad = run(p0)
    first_bad = int(first_bad)
    p = np.asarray(p.astype(jnp.float32))
    return dict(first_bad=None if first_bad < 0 else first_bad, max_abs=float(np.max(np.abs(p))))


def run_torch(name: str, dtype: str, steps: int) -> dict:
    """The same run with torch 2.13's optimizer (single-tensor path), step by step."""
    import torch

    tdtype = getattr(torch, dtype)
    table = torch.from_numpy(noise_table()).to(tdtype)
    p = torch.nn.Parameter(torch.from_numpy(initial()).to(tdtype))
    options = dict(CONFIGS[name])
    optimizer = optimizer_of(name)
    if optimizer not in NO_FOREACH:
        options["foreach"] = False
    opt = getattr(torch.optim, TORCH_NAMES[optimizer])([p], **options)
    first_bad = None
    with torch.no_grad():
        for t in range(steps):
            grad = p.detach() * COEF + table[t % TABLE]
            p.grad = grad.to_sparse() if optimizer == "sparse_adam" else grad
            opt.step()
            if first_bad is None and not bool(torch.isfinite(p).all()):
                first_bad = t + 1
    return dict(first_bad=first_bad, max_abs=float(p.detach().abs().max().to(torch.float32)))


def show_bad(result: dict) -> str:
    return "-" if result["first_bad"] is None else str(result["first_bad"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--optimizers", default=",".join(CONFIGS))
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--x64", action="store_true", help="enable jax_enable_x64 (float64 hyperparameter arithmetic, as torch's Python floats)")
    parser.add_argument("--no-torch-cap", action="store_true", help="run torch for all steps everywhere")
    parser.add_argument("--write-golden", metavar="PATH", help="write torch's results as JSON")
    args = parser.parse_args(argv)
    if args.x64:
        import jax

        jax.config.update("jax_enable_x64", True)
    names = args.optimizers.split(",")
    dtypes = args.dtypes.split(",")
    results: dict[str, dict] = {}
    print(f"{args.steps} steps, x64 {'on' if args.x64 else 'off'}; first step with a NaN/Inf parameter ('-': none); final max |p|")
    print("| optimizer | dtype | gradxform | torch (steps run) | gradxform max abs | torch max abs | seconds (gradxform, torch) |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        for dtype in dtypes:
            t0 = time.perf_counter()
            ours = run_gradxform(name, dtype, args.steps)
            t1 = time.perf_counter()
            torch_steps = args.steps if args.no_torch_cap else min(args.steps, TORCH_STEP_CAP.get(optimizer_of(name), args.steps))
            theirs = None if args.no_torch else run_torch(name, dtype, torch_steps)
            if theirs is not None:
                theirs["steps"] = torch_steps
            t2 = time.perf_counter()
            results[f"{name}/{dtype}"] = dict(gradxform=ours, torch=theirs)
            torch_cell = "n/a" if theirs is None else f"{show_bad(theirs)} ({theirs['steps']})"
            print(
                f"| {name} | {dtype} | {show_bad(ours)} | {torch_cell} | "
                f"{ours['max_abs']:.3g} | {theirs['max_abs'] if theirs else float('nan'):.3g} | "
                f"{t1 - t0:.1f}, {t2 - t1:.1f} |",
                flush=True,
            )
    if args.write_golden:
        import torch

        golden = {
            "steps": args.steps,
            "torch_version": torch.__version__,
            "torch": {k: v["torch"] for k, v in results.items()},
        }
        with open(args.write_golden, "w") as f:
            json.dump(golden, f, indent=1, sort_keys=True)
            f.write("\n")


if __name__ == "__main__":
    main()

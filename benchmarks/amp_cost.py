"""Cost of dynamic loss scaling on a finite step: torch_compat.amp.GradScaler and gradxform.loss_scaled.

Times, on JAX's default device, one Adam step of a list of float32 leaves (median of
interleaved repeats, microseconds; see ``_timing.py``):

  core         a jitted, donating ``gradxform.adam`` update
  core scaled  the same with ``gradxform.loss_scaled(adam)`` (unscale, check, cond, scale update)
  compat       ``torch_compat.optim.Adam.step()``
  compat amp   ``scaler.step(opt); scaler.update()`` (a compiled unscale, the step with the
               scaler's skip decision inside, a compiled scale update: three calls, no sync)
  torch        ``torch.optim.Adam.step()`` (single-tensor, CPU), and with ``torch.amp.GradScaler("cpu")``

torch is not a project dependency: its columns are left out when it is not installed.

    PYTHONPATH=. python benchmarks/amp_cost.py [--sizes 10000,1000000] [--leaves 10] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gradxform  # noqa: E402
import torch_compat  # noqa: E402
from _timing import race  # noqa: E402
from torch_compat import optim  # noqa: E402
from torch_compat.amp import GradScaler  # noqa: E402

try:
    import torch
except ImportError:  # not a dependency
    torch = None


def core_runner(tx, size, leaves):
    params = [jnp.full(size // leaves, 1.0 + i, jnp.float32) for i in range(leaves)]
    grads = [jnp.full(size // leaves, 0.1, jnp.float32) for _ in range(leaves)]
    state = tx.init(params)

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return gradxform.apply_updates(p, u), s

    step = jax.jit(step, donate_argnums=(0, 1))
    carry = [params, state]

    def run():
        carry[0], carry[1] = step(carry[0], carry[1], grads)
        jax.block_until_ready(carry[0])

    return run


def compat_runner(size, leaves, amp):
    model = [torch_compat.Parameter(jnp.ones(size // leaves, jnp.float32)) for _ in range(leaves)]
    opt = optim.Adam(model, lr=1e-3)
    grads = [jnp.full(size // leaves, 0.1, jnp.float32) for _ in range(leaves)]
    scaler = GradScaler("cpu", init_scale=1.0)
    scaler.scale(jnp.ones(()))

    def run():
        for p, g in zip(model, grads):
            p.grad = g
        if amp:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        jax.block_until_ready([p.data for p in model])

    return run


def torch_runner(size, leaves, amp):
    model = [torch.nn.Parameter(torch.ones(size // leaves)) for _ in range(leaves)]
    opt = torch.optim.Adam(model, lr=1e-3, foreach=False)
    grads = [torch.full((size // leaves,), 0.1) for _ in range(leaves)]
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    scaler.scale(torch.ones(()))

    def run():
        for p, g in zip(model, grads):
            p.grad = g.clone()
        if amp:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()

    return run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--leaves", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    device = jax.devices()[0].platform
    print(f"jax {jax.__version__} ({device}), torch {torch.__version__ if torch else 'not installed'}; "
          f"float32 Adam, {args.leaves} leaves, finite gradients; median of {args.repeats} interleaved repeats, microseconds")
    columns = ["core", "core scaled", "compat", "compat amp"] + (["torch", "torch amp"] if torch else [])
    print("| parameters | " + " | ".join(columns) + " | core scaled / core | compat amp / compat |"
          + (" torch amp / torch |" if torch else ""))
    print("|---" * (len(columns) + 3 + bool(torch)) + "|")
    for size in [int(s) for s in args.sizes.split(",")]:
        runners = {
            "core": core_runner(gradxform.adam(1e-3), size, args.leaves),
            "core scaled": core_runner(gradxform.loss_scaled(gradxform.adam(1e-3), init_scale=1.0), size, args.leaves),
            "compat": compat_runner(size, args.leaves, False),
            "compat amp": compat_runner(size, args.leaves, True),
        }
        if torch:
            runners["torch"] = torch_runner(size, args.leaves, False)
            runners["torch amp"] = torch_runner(size, args.leaves, True)
        t = {k: v * 1e6 for k, v in race(runners, args.repeats).items()}
        ratios = [t["core scaled"] / t["core"], t["compat amp"] / t["compat"]]
        if torch:
            ratios.append(t["torch amp"] / t["torch"])
        print(f"| {size:,} | " + " | ".join(f"{t[c]:.0f}" for c in columns) + " | "
              + " | ".join(f"{r:.2f}" for r in ratios) + " |")


if __name__ == "__main__":
    main()

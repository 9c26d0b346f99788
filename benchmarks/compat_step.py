"""``torch_compat.optim.Adam.step()`` beside ``torch.optim.Adam.step()``, in one process.

    python benchmarks/compat_step.py [--repeats 50]

Two float32 models: 200 leaves of 100 values (latency-bound: per-step overhead) and
73 leaves holding 23M values (bandwidth-bound). Prints the median time of one step
(round-robin over the contenders, see ``_timing.race``) and the ratio to torch's for-loop
implementation, which is what ``torch.optim.Adam(params)`` runs on CPU by default.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import torch

import torch_compat
from torch_compat import optim
from _timing import race

CASES = {
    "200 leaves x 100": [(100,)] * 200,
    "73 leaves, 23.6M values": [(768, 853)] * 36 + [(768,)] * 36 + [(1,)],
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
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
        rows = list(race(runners, args.repeats).items())
        reference = rows[1][1]
        for label, t in rows:
            print(f"| {name} | {label} | {t * 1e3:.2f} | {t / reference:.2f} |")


if __name__ == "__main__":
    main()

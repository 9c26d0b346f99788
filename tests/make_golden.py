"""Writes the golden torch trajectories, ``tests/golden/<name>.npz``, with torch 2.13.0.

Usage (from the repository root)::

    python tests/make_golden.py            # every optimizer
    python tests/make_golden.py adam sgd   # some

For each optimizer, the cases are the seeds chosen by
:func:`parity_cases.covering_seeds`: a greedy set cover of every option of every flag
and every supported dtype, topped up to :data:`MIN_CASES` (few cases, because each costs
a jit compilation in the tests; the live tests add fresh seeds), each run for
:data:`parity_cases.STEPS` steps by torch's single-tensor implementation.

File layout (``np.load(path)``, no pickles):

* ``__meta__``: a JSON string ``{"format", "torch_version", "name", "cases": [...]}``;
  each case entry holds ``"case"`` (:meth:`parity_cases.Case.to_json`: hyperparameters
  in torch's and gradxform's spelling, dtype, shapes, coef, ...) and ``"state_shapes"``
  (``key -> per leaf, the shape of torch's final opt.state[p][key], or None``).

Leaves are stored packed (flattened and concatenated, :func:`parity_cases.pack`; read
back with :func:`parity_cases.read_golden`), one member per kind and case:

* ``c{i}_p0``: initial params of case ``i``;
* ``c{i}_noise``: ``[steps, n]`` noise of the gradient recipe;
* ``c{i}_mask``: ``[steps, n]`` bool masks (SparseAdam only);
* ``c{i}_traj``: ``[steps, n]`` torch's params after every step;
* ``c{i}_state_{key}``: torch's final ``opt.state[p][key]`` of the leaves that have it.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import parity_cases as pc  # noqa: E402

GOLDEN_DIR = os.path.join(HERE, "golden")
MIN_CASES = 5
FORMAT = 1
GOLDEN_SEED_LIMIT = 1000
"""Golden seeds are below this; the live tests use seeds from it upwards."""


def golden_path(name: str) -> str:
    return os.path.join(GOLDEN_DIR, f"{name}.npz")


def generate(name: str) -> str:
    import torch

    from parity_torch import run_torch

    seeds = pc.covering_seeds(name, MIN_CASES, 0, 200)
    assert max(seeds) < GOLDEN_SEED_LIMIT
    arrays: dict[str, np.ndarray] = {}
    entries = []
    for i, seed in enumerate(seeds):
        case = pc.make_case(name, seed)
        p0, noise, masks = pc.initial_params(case), pc.noises(case), pc.masks(case)
        traj, state = run_torch(case, p0, noise, masks)
        for j in range(len(p0)):
            if not np.isfinite(traj[j]).all():
                raise RuntimeError(f"{case.id}: torch's trajectory is not finite (leaf {j})")
        arrays[f"c{i}_p0"] = pc.pack(p0)
        arrays[f"c{i}_noise"] = pc.pack(noise, 1)
        arrays[f"c{i}_traj"] = pc.pack(traj, 1)
        if masks is not None:
            arrays[f"c{i}_mask"] = pc.pack(masks, 1).astype(bool)
        # per key, the leaves' final torch state, packed; shapes (None: no such key) in meta
        state_shapes = {}
        for key in sorted({k for s in state for k in s}):
            state_shapes[key] = [list(s[key].shape) if key in s else None for s in state]
            arrays[f"c{i}_state_{key}"] = pc.pack([s[key] for s in state if key in s])
        entries.append({"case": case.to_json(), "state_shapes": state_shapes})
    meta = {
        "format": FORMAT,
        "torch_version": torch.__version__,
        "name": name,
        "cases": entries,
    }
    os.makedirs(GOLDEN_DIR, exist_ok=True)
    path = golden_path(name)
    np.savez_compressed(path, __meta__=np.array(json.dumps(meta)), **arrays)
    return path


def main(argv: list[str]) -> int:
    import torch

    assert torch.__version__.startswith("2.13.0"), (
        f"golden files must come from torch 2.13.0, this is torch {torch.__version__}"
    )
    torch.set_default_dtype(torch.float32)
    names = argv or pc.OPTIMIZERS
    unknown = sorted(set(names) - set(pc.OPTIMIZERS))
    if unknown:
        raise SystemExit(f"unknown optimizers: {unknown}")
    total = 0
    for name in names:
        path = generate(name)
        size = os.path.getsize(path)
        total += size
        with np.load(path) as data:
            n = len(json.loads(str(data["__meta__"]))["cases"])
        print(f"{os.path.relpath(path)}: {n} cases, {size / 1024:.1f} KiB")
    print(f"total {total / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

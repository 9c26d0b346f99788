"""Writes ``tests/golden/param_groups.npz``: torch 2.13.0 with three param groups, per optimizer.

Usage (from the repository root, with torch installed)::

    python tests/make_golden_param_groups.py

The cases are :mod:`param_groups_cases`' (one per optimizer, float64, ``STEPS``
steps). Layout (``np.load``, no pickles): ``__meta__`` (JSON: format, torch version,
steps, optimizers) and, per optimizer, ``<name>/p0``, ``<name>/noise`` and
``<name>/traj`` packed by :func:`param_groups_cases.pack`.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import param_groups_cases as gc  # noqa: E402

PATH = os.path.join(HERE, "golden", "param_groups.npz")


def main() -> None:
    import torch

    members = {}
    for name in gc.OPTIMIZERS:
        params0, noise = gc.data(name)
        trajectory = gc.run_torch(name, params0, noise)
        members[f"{name}/p0"] = gc.pack(params0)
        members[f"{name}/noise"] = gc.pack(noise, lead=1)
        members[f"{name}/traj"] = gc.pack(trajectory, lead=1)
    meta = {"format": 1, "torch_version": torch.__version__, "steps": gc.STEPS, "optimizers": gc.OPTIMIZERS}
    np.savez_compressed(PATH, __meta__=json.dumps(meta), **members)
    print(f"wrote {PATH} ({os.path.getsize(PATH)} bytes)")


if __name__ == "__main__":
    main()

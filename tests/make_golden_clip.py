"""Writes ``tests/golden/clip_grad.npz``: torch 2.13.0's gradient clipping on every case.

Usage (from the repository root)::

    python tests/make_golden_clip.py

The cases are :func:`clip_cases.cases` (inputs are rebuilt from a fixed seed, so only
torch's outputs are stored). Layout (``np.load(path)``, no pickles): for case ``name``,
``name/norm`` (float64 ``[]``, the total norm ``clip_grad_norm_`` returned; norm cases
only) and ``name/grad{i}`` (float64 or complex128, the clipped gradient of parameter
``i``; absent for a parameter without gradient); ``__meta__`` is a JSON string
``{"torch_version", "norm_dtypes": {name: dtype name}}``.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import clip_cases  # noqa: E402

GOLDEN_PATH = os.path.join(HERE, "golden", "clip_grad.npz")


def read(path: str = GOLDEN_PATH) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    return meta, arrays


def main() -> None:
    import torch

    arrays: dict[str, np.ndarray] = {}
    norm_dtypes = {}
    for case in clip_cases.cases():
        total, grads = clip_cases.run_torch(case)
        if total is not None:
            arrays[f"{case['name']}/norm"] = np.asarray(total[0])
            norm_dtypes[case["name"]] = total[1]
        for i, g in enumerate(grads):
            if g is not None:
                arrays[f"{case['name']}/grad{i}"] = g
    arrays["__meta__"] = np.array(json.dumps({"torch_version": torch.__version__, "norm_dtypes": norm_dtypes}))
    np.savez_compressed(GOLDEN_PATH, **arrays)
    print(f"wrote {GOLDEN_PATH}: {len(arrays) - 1} arrays")


if __name__ == "__main__":
    main()

"""Writes ``tests/golden/schedules.npz``: torch 2.13.0's learning rates for every scenario.

Usage (from the repository root)::

    python tests/make_golden_schedules.py

Each scenario of :func:`schedule_cases.scenarios` is run with torch's
``torch.optim.lr_scheduler``; ``test_schedules_golden.py`` replays it with torch_compat's
and compares, without torch.

File layout (``np.load(path)``, no pickles), two members:

* ``values``: float64, every number of every scenario, one after the other;
* ``__meta__``: a JSON string ``{"format", "torch_version", "scenarios": {name: {field:
  entry}}}``. The fields are those :mod:`schedule_cases` records. A numeric field
  (``lr``, ``momentum``, ``last_lr``: float64 ``[steps, groups]``; ``last_epoch``:
  int64 ``[steps]``) is ``{"offset", "shape", "dtype"}`` into ``values``; ``warnings``
  (a list of str) and ``error`` (a str) are stored in the JSON itself.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import schedule_cases as sc  # noqa: E402

GOLDEN_PATH = os.path.join(HERE, "golden", "schedules.npz")
FORMAT = 2
TEXT_FIELDS = ("warnings", "error")


def read(path: str = GOLDEN_PATH) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """``(meta, {scenario: {field: array}})`` from a golden file, arrays as recorded."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["__meta__"]))
        values = data["values"]
    runs: dict[str, dict[str, np.ndarray]] = {}
    for name, fields in meta["scenarios"].items():
        run = {}
        for field, entry in fields.items():
            if field in TEXT_FIELDS:
                run[field] = np.asarray(entry, dtype=str)
            else:
                size = int(np.prod(entry["shape"], dtype=np.int64))
                chunk = values[entry["offset"] : entry["offset"] + size]
                run[field] = chunk.reshape(entry["shape"]).astype(entry["dtype"])
        runs[name] = run
    return meta, runs


def main() -> None:
    import torch

    assert torch.__version__.startswith(sc.TORCH_VERSION_PREFIX), torch.__version__
    backend = sc.TorchBackend()
    chunks: list[np.ndarray] = []
    offset = 0
    scenarios: dict[str, dict] = {}
    for name, run in sc.scenarios().items():
        fields = {}
        for field, value in run(backend).items():
            if field in TEXT_FIELDS:
                fields[field] = value.tolist()
                continue
            if value.dtype.kind == "i":
                assert np.all(np.abs(value) < 2**53), (name, field)
            flat = value.astype(np.float64).ravel()
            fields[field] = {"offset": offset, "shape": list(value.shape), "dtype": value.dtype.str}
            chunks.append(flat)
            offset += flat.size
        scenarios[name] = fields
    meta = {"format": FORMAT, "torch_version": torch.__version__, "scenarios": scenarios}
    os.makedirs(os.path.dirname(GOLDEN_PATH), exist_ok=True)
    np.savez_compressed(GOLDEN_PATH, values=np.concatenate(chunks), __meta__=np.asarray(json.dumps(meta)))
    print(f"wrote {len(scenarios)} scenarios to {GOLDEN_PATH} ({os.path.getsize(GOLDEN_PATH)} bytes)")


if __name__ == "__main__":
    main()

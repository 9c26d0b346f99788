"""Writes ``tests/golden/swa_utils.npz``: torch 2.13.0's results for every ``swa_cases`` scenario.

Usage (from the repository root)::

    python tests/make_golden_swa.py

File layout (``np.load(path)``, no pickles): one member per scenario and field, named
``"<scenario>/<field>"`` (float64 arrays; an ``error`` field is a str array), and
``__meta__``, a JSON string ``{"format", "torch_version"}``. ``test_swa_utils.py`` replays
the scenarios with torch_compat and compares, without torch.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import swa_cases as sc  # noqa: E402

GOLDEN_PATH = os.path.join(HERE, "golden", "swa_utils.npz")
FORMAT = 1


def read(path: str = GOLDEN_PATH) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """``(meta, {scenario: {field: array}})`` from the golden file."""
    runs: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["__meta__"]))
        for key in data.files:
            if key != "__meta__":
                name, field = key.split("/", 1)
                runs.setdefault(name, {})[field] = data[key]
    return meta, runs


def main() -> None:
    import torch

    assert torch.__version__.startswith(sc.TORCH_VERSION_PREFIX), torch.__version__
    backend = sc.TorchBackend()
    members = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, run in sc.scenarios().items():
            for field, value in run(backend).items():
                members[f"{name}/{field}"] = value
    meta = {"format": FORMAT, "torch_version": torch.__version__}
    np.savez_compressed(GOLDEN_PATH, __meta__=np.asarray(json.dumps(meta)), **members)
    print(f"wrote {GOLDEN_PATH}: {len(members)} arrays")


if __name__ == "__main__":
    main()

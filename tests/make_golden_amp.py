"""Writes ``tests/golden/amp.npz``: torch 2.13.0's ``GradScaler`` on fixed gradient sequences.

Usage (from the repository root)::

    python tests/make_golden_amp.py

Each case of :data:`CASES` runs ``steps`` iterations of torch's loop: the scaled
gradient of each parameter is its unscaled gradient (:func:`gradients`, rebuilt from a
fixed seed, with Inf and NaN at chosen steps) times the current scale, in float32;
then optionally ``unscale_`` and ``clip_grad_norm_``, ``scaler.step`` for each
optimizer and ``scaler.update()``. Layout (``np.load(path)``, no pickles): for case
``name``, ``name/scale`` (float32 ``[steps]``, the scale after each update),
``name/tracker`` (int32 ``[steps]``, the growth tracker after each update),
``name/param{i}`` (float32, parameter ``i`` at the end) and ``name/step{i}`` (float32
``[]``, its optimizer's ``step`` count, -1 for no state); ``__meta__`` is a JSON string
``{"torch_version"}``.
"""

from __future__ import annotations

import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN_PATH = os.path.join(HERE, "golden", "amp.npz")

SHAPES = [(3,), (2, 2)]

# name -> options. "optimizers": one (name, options) per parameter group of one optimizer,
# or "two" for two optimizers (SGD on parameter 0, Adam on parameter 1).
CASES = {
    "defaults": {"scaler": {}, "optimizer": ("Adam", {"lr": 0.1}), "steps": 12, "bad": {2: (0, np.inf), 7: (1, np.nan)}},
    "growth": {
        "scaler": {"init_scale": 4.0, "growth_interval": 3},
        "optimizer": ("SGD", {"lr": 0.1, "momentum": 0.9}),
        "steps": 20,
        "bad": {0: (1, np.inf), 8: (0, -np.inf), 9: (0, np.nan)},
    },
    "odd_factors": {
        "scaler": {"init_scale": 3.3, "growth_factor": 1.5, "backoff_factor": 0.3, "growth_interval": 1},
        "optimizer": ("Adam", {"lr": 0.05}),
        "steps": 16,
        "bad": {3: (0, np.inf), 4: (1, np.inf), 11: (1, np.nan)},
    },
    # Gradients of 1e27: a scale of 2**40 overflows them, the backoff brings it down.
    "overflow": {
        "scaler": {"init_scale": 2.0**40, "growth_interval": 2},
        "optimizer": ("SGD", {"lr": 1e-28, "momentum": 0.5, "weight_decay": 0.1}),
        "steps": 12,
        "bad": {},
        "magnitude": 1e27,
    },
    "clip": {
        "scaler": {"init_scale": 256.0, "growth_interval": 2},
        "optimizer": ("SGD", {"lr": 0.1}),
        "steps": 10,
        "bad": {4: (0, np.inf)},
        "clip": 0.5,
    },
    "two": {
        "scaler": {"init_scale": 8.0, "growth_interval": 2},
        "optimizer": "two",
        "steps": 10,
        "bad": {3: (1, np.inf), 6: (0, np.nan)},
    },
}


def gradients(name: str, step: int) -> list[np.ndarray]:
    """The unscaled float32 gradients of the parameters at ``step`` of case ``name``."""
    case = CASES[name]
    rng = np.random.default_rng([sorted(CASES).index(name), step])
    grads = [(rng.standard_normal(shape) * case.get("magnitude", 1.0)).astype(np.float32) for shape in SHAPES]
    if step in case["bad"]:
        index, value = case["bad"][step]
        grads[index].reshape(-1)[0] = value
    return grads


def initial_params() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.standard_normal(shape).astype(np.float32) for shape in SHAPES]


def run_torch(name: str) -> dict[str, np.ndarray]:
    """Runs case ``name`` with torch; returns its golden arrays (keys without the prefix)."""
    import torch

    case = CASES[name]
    params = [torch.nn.Parameter(torch.tensor(p)) for p in initial_params()]
    if case["optimizer"] == "two":
        optimizers = [torch.optim.SGD([params[0]], lr=0.1), torch.optim.Adam([params[1]], lr=0.1)]
    else:
        cls, options = case["optimizer"]
        optimizers = [getattr(torch.optim, cls)(params, **options)]
    scaler = torch.amp.GradScaler("cpu", **case["scaler"])
    scales, trackers = [], []
    for step in range(case["steps"]):
        scaled = scaler.scale(torch.ones((), dtype=torch.float32))
        for p, g in zip(params, gradients(name, step)):
            p.grad = torch.tensor(g) * scaled
        for opt in optimizers:
            if "clip" in case:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_([p for group in opt.param_groups for p in group["params"]], case["clip"])
            scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        trackers.append(scaler._get_growth_tracker())
        for opt in optimizers:
            opt.zero_grad()
    out = {"scale": np.array(scales, np.float32), "tracker": np.array(trackers, np.int32)}
    for i, p in enumerate(params):
        out[f"param{i}"] = p.detach().numpy().copy()
        opt = optimizers[i] if len(optimizers) > 1 else optimizers[0]
        state = opt.state.get(p, {})
        out[f"step{i}"] = np.asarray(float(state["step"]) if "step" in state else -1.0, np.float32)
    return out


def read(path: str = GOLDEN_PATH) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    return meta, arrays


def main() -> None:
    import torch

    arrays: dict[str, np.ndarray] = {}
    for name in CASES:
        for key, value in run_torch(name).items():
            arrays[f"{name}/{key}"] = value
    arrays["__meta__"] = np.array(json.dumps({"torch_version": torch.__version__}))
    np.savez_compressed(GOLDEN_PATH, **arrays)
    print(f"wrote {GOLDEN_PATH}: {len(arrays) - 1} arrays")


if __name__ == "__main__":
    main()

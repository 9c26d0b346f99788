"""Scenarios for gradient clipping, shared by the golden-data script and the tests.

Each case is a dict: ``name``, ``fn`` (``"norm"`` for ``clip_grad_norm_``, ``"value"``
for ``clip_grad_value_``), ``dtypes`` (one dtype name per parameter), ``grads`` (one
float64 numpy array per parameter, or None for a parameter without gradient; values are
exactly representable in the parameter's dtype) and the options (``max_norm`` and
``norm_type``, or ``clip_value``).
"""

from __future__ import annotations

import numpy as np

SHAPES = [(4, 3), None, (7,), (2, 2, 2), ()]
NORM_TYPES = [2.0, 1.0, float("inf"), 0.5, 3.0, 0.0, float("-inf")]


def _round(x: np.ndarray, dtype: str) -> np.ndarray:
    """Values representable in ``dtype`` (bfloat16 through its float32 top bits)."""
    if dtype == "bfloat16":
        bits = np.asarray(x, np.float32).view(np.uint32) & np.uint32(0xFFFF0000)
        return bits.view(np.float32).astype(np.float64)
    if dtype.startswith("complex"):
        return np.asarray(x).astype(dtype).astype(np.complex128)
    return np.asarray(x).astype(dtype).astype(np.float64)


def _grads(rng, dtypes, shapes, scale=3.0):
    out = []
    for dtype, shape in zip(dtypes, shapes):
        if shape is None:
            out.append(None)
            continue
        x = rng.standard_normal(shape) * scale
        if dtype.startswith("complex"):
            x = x + 1j * rng.standard_normal(shape) * scale
        out.append(_round(x, dtype))
    return out


def cases() -> list[dict]:
    rng = np.random.default_rng(20261201)
    out = []
    for dtype in ("float32", "float64"):
        dtypes = [dtype] * len(SHAPES)
        for norm_type in NORM_TYPES:
            for max_norm in (0.5, 1e6):
                out.append(
                    dict(
                        name=f"norm_{dtype}_p{norm_type}_max{max_norm:g}",
                        fn="norm",
                        dtypes=dtypes,
                        grads=_grads(rng, dtypes, SHAPES),
                        max_norm=max_norm,
                        norm_type=norm_type,
                    )
                )
        for clip_value in (0.3, 10.0):
            out.append(
                dict(
                    name=f"value_{dtype}_{clip_value:g}",
                    fn="value",
                    dtypes=dtypes,
                    grads=_grads(rng, dtypes, SHAPES),
                    clip_value=clip_value,
                )
            )
    mixed = ["float32", "float64", "float32", "float64"]
    shapes = [(5,), (3, 2), None, (4,)]
    for norm_type in (2.0, float("inf"), 3.0):
        out.append(
            dict(
                name=f"norm_mixed_p{norm_type}",
                fn="norm",
                dtypes=mixed,
                grads=_grads(rng, mixed, shapes),
                max_norm=1.0,
                norm_type=norm_type,
            )
        )
    for dtype in ("bfloat16", "complex64", "complex128"):
        dtypes = [dtype] * 3
        for norm_type in (2.0, 1.0, float("inf")):
            out.append(
                dict(
                    name=f"norm_{dtype}_p{norm_type}",
                    fn="norm",
                    dtypes=dtypes,
                    grads=_grads(rng, dtypes, [(6,), (2, 3), (3,)]),
                    max_norm=1.0,
                    norm_type=norm_type,
                )
            )
    out.append(
        dict(
            name="value_bfloat16",
            fn="value",
            dtypes=["bfloat16"] * 2,
            grads=_grads(rng, ["bfloat16"] * 2, [(6,), (2, 3)]),
            clip_value=0.3,
        )
    )
    # Non-finite gradients, without error_if_nonfinite: the norm and the gradients are
    # what torch computes (NaN or inf norm, NaN or zeroed gradients).
    for bad in (np.nan, np.inf, -np.inf):
        for norm_type in (2.0, float("inf"), 1.0):
            grads = _grads(rng, ["float32"] * 2, [(4,), (3,)])
            grads[0][1] = bad
            out.append(
                dict(
                    name=f"norm_nonfinite_{bad}_p{norm_type}",
                    fn="norm",
                    dtypes=["float32"] * 2,
                    grads=grads,
                    max_norm=1.0,
                    norm_type=norm_type,
                )
            )
        grads = _grads(rng, ["float64"] * 2, [(4,), (3,)])
        grads[1][0] = bad
        out.append(dict(name=f"value_nonfinite_{bad}", fn="value", dtypes=["float64"] * 2, grads=grads, clip_value=0.5))
    out.append(dict(name="norm_all_none", fn="norm", dtypes=["float32"] * 2, grads=[None, None], max_norm=1.0, norm_type=2.0))
    return out


def run_torch(case: dict):
    """torch's result: ``(total_norm or None, [clipped grad or None])`` as float64/complex128."""
    import torch

    params = []
    for dtype, grad in zip(case["dtypes"], case["grads"]):
        tdtype = getattr(torch, dtype)
        shape = () if grad is None else grad.shape
        p = torch.zeros(shape, dtype=tdtype, requires_grad=True)
        if grad is not None:
            p.grad = torch.from_numpy(np.array(grad, copy=True)).to(tdtype)
        params.append(p)
    if case["fn"] == "norm":
        total = torch.nn.utils.clip_grad_norm_(params, case["max_norm"], case["norm_type"])
        total = (total.to(torch.float64).numpy(), str(total.dtype).replace("torch.", ""))
    else:
        torch.nn.utils.clip_grad_value_(params, case["clip_value"])
        total = None
    grads = []
    for p in params:
        if p.grad is None:
            grads.append(None)
        elif p.grad.is_complex():
            grads.append(p.grad.to(torch.complex128).numpy())
        else:
            grads.append(p.grad.to(torch.float64).numpy())
    return total, grads

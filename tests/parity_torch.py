"""The torch side of the parity tests: runs a :class:`parity_cases.Case` with torch.optim.

torch is imported inside the functions, so this module can be imported (by pytest's
doctest collection, for instance) where torch is not installed.
"""

from __future__ import annotations

import numpy as np

import parity_cases as pc

TORCH_VERSION_PREFIX = "2.13.0"


def _to_numpy(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone().numpy()
    return np.asarray(value)


def make_optimizer(case: pc.Case, params):
    """``torch.optim.<Name>`` over ``params`` (torch tensors), with ``case.groups`` if any."""
    import torch

    cls = getattr(torch.optim, pc.TORCH_NAMES[case.name])
    kwargs = dict(case.torch_kwargs)
    if case.name in pc.TORCH_HAS_FOREACH:
        kwargs["foreach"] = False  # the single-tensor (for-loop) reference
    if case.groups is None:
        return cls(params, **kwargs)
    kwargs.pop("lr")
    groups = [{"params": [params[i] for i in idx], "lr": lr} for idx, lr in case.groups]
    return cls(groups, **kwargs)


def run_torch(case: pc.Case, params0, noise, masks=None):
    """Runs ``case`` with torch from numpy ``params0``/``noise``/``masks``.

    Returns ``(trajectory, state)``: ``trajectory[j]`` is ``[steps, *shape]``, the
    params of leaf ``j`` after every step; ``state[j]`` is ``{key: numpy array}``, the
    final ``opt.state[p]`` of leaf ``j`` (tensors and numbers, None entries left out).
    """
    import torch

    params = [torch.from_numpy(np.array(p, copy=True)).requires_grad_(True) for p in params0]
    opt = make_optimizer(case, params)
    noise_t = [torch.from_numpy(np.ascontiguousarray(n)) for n in noise]
    mask_t = None if masks is None else [torch.from_numpy(np.ascontiguousarray(m)) for m in masks]
    traj = [np.empty((case.steps,) + tuple(p.shape), dtype=p0.dtype) for p, p0 in zip(params, params0)]
    for t in range(case.steps):
        with torch.no_grad():
            for j, p in enumerate(params):
                g = pc.gradient(p, noise_t[j][t], case.coef, None if mask_t is None else mask_t[j][t])
                p.grad = g.to_sparse() if case.sparse else g
        opt.step()
        for j, p in enumerate(params):
            traj[j][t] = p.detach().numpy()
    state = [
        {key: _to_numpy(v) for key, v in opt.state[p].items() if v is not None} for p in params
    ]
    return traj, state


def run_torch_sparse_coo(case: pc.Case, params0, indices, values_noise):
    """SparseAdam with explicit (possibly uncoalesced) COO gradients.

    ``indices[j]``: ``[steps, nse, n_sparse]`` int array; ``values_noise[j]``:
    ``[steps, nse, *dense_shape]``. The gradient values are
    ``coef * p[index] + noise`` (the recipe, gathered at the indices); duplicates are
    summed by torch's ``coalesce``.
    """
    import torch

    params = [torch.from_numpy(np.array(p, copy=True)).requires_grad_(True) for p in params0]
    opt = make_optimizer(case, params)
    traj = [np.empty((case.steps,) + tuple(p.shape), dtype=p0.dtype) for p, p0 in zip(params, params0)]
    for t in range(case.steps):
        with torch.no_grad():
            for j, p in enumerate(params):
                idx = torch.from_numpy(np.ascontiguousarray(indices[j][t].T)).long()
                gathered = p[tuple(idx)]
                vals = pc.gradient(gathered, torch.from_numpy(values_noise[j][t]), case.coef)
                p.grad = torch.sparse_coo_tensor(
                    idx, vals, tuple(p.shape), check_invariants=True
                )
        opt.step()
        for j, p in enumerate(params):
            traj[j][t] = p.detach().numpy()
    state = [
        {key: _to_numpy(v) for key, v in opt.state[p].items() if v is not None} for p in params
    ]
    return traj, state

"""The gradxform side of the parity tests, and the comparison rules.

Relative error of one leaf (one parameter, or one state buffer)::

    rel_err(a, b) = ||a - b|| / max(||b||, tiny)

with ``a`` gradxform's array, ``b`` torch's, ``||.||`` the Euclidean (Frobenius) norm of
the flattened array (complex moduli for complex arrays), computed in float64/complex128,
and ``tiny`` the smallest normal float64. NaN anywhere fails.

Tolerances by dtype (of the torch parameter, or of the torch state buffer for state):
float64 and complex128 1e-10, float32 and complex64 1e-5, applied at every step to every
leaf. Muon is the documented exception (see :data:`MUON_TOL`). State ``step`` counters
must be equal.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

import parity_cases as pc

TINY = np.finfo(np.float64).tiny

TOL = {"float64": 1e-10, "complex128": 1e-10, "float32": 1e-5, "complex64": 1e-5}

MUON_TOL = {"float64": 1e-3, "float32": 1e-3}
"""Muon's tolerance (params and state, per step and leaf): the documented exception.

torch 2.13 runs Muon's Newton–Schulz iteration in bfloat16 (8-bit mantissa) whatever the
parameter dtype, and adds the bfloat16 result to the parameter. Whenever one entry of a
bfloat16 result rounds the other way on the two sides (a 2**-8 relative jump in that
entry), the parameters move by ~1e-6..1e-4 relative at once. That happens

* when the float32 inputs differ by an ulp (float32 params differ at the ulp level from
  the first step: torch computes ``p - (lr * ratio) * O``, gradxform ``p - lr * (ratio * O)``);
* in the bfloat16 matmuls themselves, even on identical inputs: torch's CPU bfloat16
  ``addmm(C, A, B, beta, alpha)`` computes ``bf16(fma(beta, C, f32(alpha * (A @ B))))``
  with an accumulation order of its own (hardware dependent); gradxform rounds
  ``beta * C`` separately, which differs on ~0.2-1% of Newton–Schulz calls on the small
  matrices here, and emulating the fma in float64 still leaves ~0.1% (accumulation
  order). So float64 is no better than float32 here.

Measured (CPU, 60 fresh seeds x 30 steps each dtype, 3 leaves of at most 9x9): float64
max 8.0e-6 (5 of 60 seeds above 1e-10, the rest ~1e-15), float32 max 9.7e-5 (2 of 60
above 1e-5, the rest below 4e-6). One flip costs up to ~1e-4 and a few may add up, hence
1e-3. Everything but the bfloat16 iteration is checked to 1e-10 by
``test_parity_live.py::test_live_muon_logic_with_float64_newton_schulz``.
"""

# Largest errors seen, for the optional report (GRADXFORM_PARITY_REPORT=1).
MAX_ERRORS: dict[tuple[str, str, str], float] = collections.defaultdict(float)

STATE_KEYS = (
    "step exp_avg exp_avg_sq max_exp_avg_sq momentum_buffer sum square_avg acc_delta "
    "grad_avg eta mu ax prev step_size mu_product row_var col_var variance exp_inf"
).split()


# ------------------------------------------------------------------ state lookup

_MISSING = object()


def find_state_field(state: Any, name: str, default: Any = _MISSING) -> Any:
    """The first field called ``name`` in a nested optimizer state (depth first).

    Walks tuples, lists and NamedTuples (an ``InjectHyperparamsState``'s ``inner_state``
    chain included); dicts (the hyperparameter dict) are not searched. Raises KeyError,
    or returns ``default``, when there is no such field.
    """

    def walk(node):
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            if name in node._fields:
                return getattr(node, name)
            children = list(node)
        elif isinstance(node, (tuple, list)):
            children = list(node)
        else:
            return _MISSING
        for child in children:
            found = walk(child)
            if found is not _MISSING:
                return found
        return _MISSING

    found = walk(state)
    if found is _MISSING:
        if default is _MISSING:
            raise KeyError(name)
        return default
    return found


# ------------------------------------------------------------------- comparison


def rel_err(actual, expected) -> float:
    """``||actual - expected|| / max(||expected||, tiny)``; shapes must match in size."""
    a = np.asarray(actual)
    b = np.asarray(expected)
    if a.shape != b.shape:
        if a.size != b.size:
            raise AssertionError(f"shape {a.shape} != torch's {b.shape}")
        a = a.reshape(b.shape)
    wide = np.complex128 if (a.dtype.kind == "c" or b.dtype.kind == "c") else np.float64
    a = a.astype(wide)
    b = b.astype(wide)
    err = float(np.linalg.norm((a - b).ravel()) / max(float(np.linalg.norm(b.ravel())), TINY))
    if not np.isfinite(err) or np.isnan(a).any() or np.isnan(b).any():
        return float("inf")
    return err


def tolerance(name: str, dtype) -> float:
    dtype = str(np.dtype(dtype))
    if name == "muon":
        return MUON_TOL[dtype]
    return TOL[dtype]


def check_trajectory(name: str, dtype: str, traj, expected) -> float:
    """Asserts every step of every leaf is within tolerance; returns the max error."""
    tol = tolerance(name, dtype)
    worst = 0.0
    failures = []
    for j, (a, b) in enumerate(zip(traj, expected)):
        assert a.dtype == b.dtype, f"leaf {j}: gradxform dtype {a.dtype} != torch's {b.dtype}"
        for t in range(b.shape[0]):
            err = rel_err(a[t], b[t])
            worst = max(worst, err)
            if not err <= tol:
                failures.append((t + 1, j, err))
    MAX_ERRORS[(name, dtype, "params")] = max(MAX_ERRORS[(name, dtype, "params")], worst)
    if failures:
        t, j, err = failures[0]
        raise AssertionError(
            f"params diverge from torch: first at step {t}, leaf {j} (shape "
            f"{expected[j].shape[1:]}): rel err {err:.3e} > {tol:g}; "
            f"{len(failures)} (step, leaf) failures, max rel err {worst:.3e}"
        )
    return worst


def check_state(name: str, dtype: str, gx_states, leaf_groups, torch_state) -> dict[str, float]:
    """Compares gradxform's final state buffers with torch's ``opt.state[p]``.

    ``gx_states[g]`` is the state of the transform that owns the leaves
    ``leaf_groups[g]`` (one entry for a single transform). A key is compared where both
    sides have it for that leaf; keys gradxform does not (yet) have are skipped.
    Returns ``{key: max rel err}`` for the keys compared.
    """
    errors: dict[str, float] = {}
    failures = []
    for gx_state, leaves in zip(gx_states, leaf_groups):
        for key in sorted({k for j in leaves for k in torch_state[j]}):
            field = find_state_field(gx_state, key, None)
            if field is None:
                continue
            for pos, j in enumerate(leaves):
                if key not in torch_state[j]:
                    continue
                value = field[pos] if isinstance(field, (list, tuple)) else field
                if value is None:
                    continue
                ours = np.asarray(value)
                theirs = np.asarray(torch_state[j][key])
                if key == "step":
                    if not np.array_equal(ours.astype(np.float64), theirs.astype(np.float64)):
                        failures.append(f"{key}[leaf {j}]: {ours} != torch's {theirs}")
                    continue
                if ours.dtype != theirs.dtype:
                    failures.append(f"{key}[leaf {j}]: dtype {ours.dtype} != torch's {theirs.dtype}")
                    continue
                err = rel_err(ours, theirs)
                errors[key] = max(errors.get(key, 0.0), err)
                tol = tolerance(name, theirs.dtype)
                if not err <= tol:
                    failures.append(f"{key}[leaf {j}]: rel err {err:.3e} > {tol:g}")
    worst = max(errors.values(), default=0.0)
    MAX_ERRORS[(name, dtype, "state")] = max(MAX_ERRORS[(name, dtype, "state")], worst)
    if failures:
        raise AssertionError("final state differs from torch's: " + "; ".join(failures))
    return errors


# ------------------------------------------------------------------- gradxform run


def leaf_groups(case: pc.Case) -> list[tuple[int, ...]]:
    if case.groups is None:
        return [tuple(range(len(case.shapes)))]
    return [tuple(idx) for idx, _ in case.groups]


def _transforms(case: pc.Case):
    import gradxform

    factory = getattr(gradxform, case.name)  # AttributeError: not implemented yet
    if case.groups is None:
        return [factory(**case.gx_kwargs)]
    out = []
    for _, lr in case.groups:
        kwargs = dict(case.gx_kwargs)
        kwargs["learning_rate"] = lr
        out.append(factory(**kwargs))
    return out


def run_gradxform(case: pc.Case, params0, noise, masks=None):
    """Runs ``case`` with gradxform, one jitted call per step (grads, update, apply).

    Returns ``(trajectory, states)`` like :func:`parity_torch.run_torch`, with
    ``states[g]`` the final state of the transform for ``leaf_groups(case)[g]``.
    """
    import jax
    import jax.numpy as jnp

    import gradxform

    txs = _transforms(case)
    groups = leaf_groups(case)
    coef = float(case.coef)

    def step(params, states, noise_t, mask_t):
        grads = [
            pc.gradient(p, n, coef, None if mask_t is None else m)
            for p, n, m in zip(params, noise_t, mask_t or [None] * len(params))
        ]
        new_params = list(params)
        new_states = []
        for tx, idx, st in zip(txs, groups, states):
            sub_p = [params[i] for i in idx]
            updates, st = tx.update([grads[i] for i in idx], st, sub_p)
            for i, p in zip(idx, gradxform.apply_updates(sub_p, updates)):
                new_params[i] = p
            new_states.append(st)
        return new_params, tuple(new_states)

    step = jax.jit(step)
    params = [jnp.asarray(p) for p in params0]
    states = tuple(jax.jit(tx.init)([params[i] for i in idx]) for tx, idx in zip(txs, groups))
    traj = [np.empty((case.steps,) + p.shape, dtype=p.dtype) for p in params0]
    for t in range(case.steps):
        params, states = step(
            params,
            states,
            [n[t] for n in noise],
            None if masks is None else [m[t] for m in masks],
        )
        for j, p in enumerate(params):
            traj[j][t] = np.asarray(p)
    return traj, states


def bcoo_gradients(case: pc.Case):
    """``(params, indices_t, noise_t) -> list of BCOO``: the recipe gathered at the indices.

    ``indices_t[j]`` is ``[nse, n_sparse]``; with ``n_sparse < ndim`` the trailing axes
    are dense (row-sparse, as an embedding's gradient).
    """
    import jax.numpy as jnp
    from jax.experimental import sparse

    def grads(params, idx_t, noise_t):
        out = []
        for p, idx, n in zip(params, idx_t, noise_t):
            gathered = p[tuple(idx[:, k] for k in range(idx.shape[1]))]
            data = pc.gradient(gathered, n, case.coef)
            out.append(sparse.BCOO((data, jnp.asarray(idx, jnp.int32)), shape=p.shape))
        return out

    return grads


def run_gradxform_bcoo(case: pc.Case, params0, indices, values_noise):
    """SparseAdam fed ``jax.experimental.sparse.BCOO`` gradients (see run_torch_sparse_coo)."""
    import jax
    import jax.numpy as jnp

    import gradxform

    (tx,) = _transforms(case)
    make_grads = bcoo_gradients(case)

    @jax.jit
    def step(params, state, idx_t, noise_t):
        grads = make_grads(params, idx_t, noise_t)
        updates, state = tx.update(grads, state, params)
        return gradxform.apply_updates(params, updates), state

    params = [jnp.asarray(p) for p in params0]
    state = jax.jit(tx.init)(params)
    traj = [np.empty((case.steps,) + p.shape, dtype=p.dtype) for p in params0]
    for t in range(case.steps):
        params, state = step(params, state, [i[t] for i in indices], [v[t] for v in values_noise])
        for j, p in enumerate(params):
            traj[j][t] = np.asarray(p)
    return traj, (state,)


def report() -> str:
    """A table of the largest errors recorded so far."""
    lines = [f"{'optimizer':<12} {'dtype':<22} {'params':>10} {'state':>10}"]
    keys = sorted({(n, d) for n, d, _ in MAX_ERRORS})
    for n, d in keys:
        p = MAX_ERRORS.get((n, d, "params"))
        s = MAX_ERRORS.get((n, d, "state"))
        fmt = lambda v: "-" if v is None else f"{v:.2e}"  # noqa: E731
        lines.append(f"{n:<12} {d:<22} {fmt(p):>10} {fmt(s):>10}")
    return "\n".join(lines)

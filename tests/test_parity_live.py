"""gradxform against torch 2.13's ``torch.optim``, live (needs torch; skipped without it).

Same scenarios, comparison and tolerances as ``test_parity_golden.py`` (see its
docstring and ``parity_harness``), on seeds the golden files do not use (>= 1000):

* every optimizer in two dtypes: float64 and float32 for SparseAdam, Adafactor and Muon
  (torch refuses complex parameters there), one real and one complex dtype of opposite
  precision for the others (alternating between optimizers, so every dtype appears);
  the golden files hold every dtype of every optimizer;
* param groups: one torch optimizer with two param groups of different ``lr`` against
  two gradxform transforms, one per group;
* Muon with its bfloat16 Newton–Schulz iteration replaced, on both sides, by the same
  iteration in float64, so that the rest of Muon is checked to 1e-10 (the trajectories
  with torch's bfloat16 iteration only agree to bfloat16 rounding);
* SparseAdam fed ``jax.experimental.sparse.BCOO`` gradients (element-sparse with unique
  indices, with duplicate indices, which torch's ``coalesce`` sums, and row-sparse with
  dense trailing axes, as an embedding's gradient), against torch COO gradients.

Each case costs a jit compilation (~0.5-1 s of CPU on a 2-core machine), hence few of them.
``GRADXFORM_PARITY_LIVE_SEEDS=N`` runs, instead, N fresh seeds for every optimizer in
every dtype it supports.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import parity_cases as pc  # noqa: E402
import parity_harness as ph  # noqa: E402
import parity_torch as pt  # noqa: E402

LIVE_SEED_BASE = 1000  # golden seeds are all below
N_SEEDS = int(os.environ.get("GRADXFORM_PARITY_LIVE_SEEDS", "0"))


def test_torch_version():
    assert torch.__version__.startswith(pt.TORCH_VERSION_PREFIX), torch.__version__


@pytest.mark.parametrize("name", pc.OPTIMIZERS)
def test_generator_draws_valid_torch_hyperparams(name):
    """torch accepts every drawn hyperparameter set (golden and live seed ranges), and so
    do the gradxform alias and the torch_compat class."""
    import gradxform
    import torch_compat
    from torch_compat import optim

    cls = getattr(torch.optim, pc.TORCH_NAMES[name])
    param = torch.zeros((2, 2), requires_grad=True)
    ours = torch_compat.Parameter(np.zeros((2, 2)))
    for seed in list(range(20)) + list(range(LIVE_SEED_BASE, LIVE_SEED_BASE + 20)) + [2000, 3000]:
        torch_kwargs, gx_kwargs = pc.HYPERPARAMS[name](seed)
        assert cls([param], **torch_kwargs).defaults["lr"] == torch_kwargs["lr"]
        assert isinstance(getattr(gradxform, name)(**gx_kwargs), gradxform.GradientTransformation)
        assert getattr(optim, pc.TORCH_NAMES[name])([ours], **torch_kwargs).defaults["lr"] == torch_kwargs["lr"]


def _live_params():
    out = []
    for i, name in enumerate(pc.OPTIMIZERS):
        dtypes = pc.dtypes_for(name)
        if N_SEEDS == 0:  # default: two dtypes per optimizer
            if name in pc.NO_COMPLEX:
                plan = [(LIVE_SEED_BASE, "float64"), (LIVE_SEED_BASE + 1, "float32")]
            else:
                real, cplx = (("float64", "complex64"), ("float32", "complex128"))[i % 2]
                plan = [(LIVE_SEED_BASE, real), (LIVE_SEED_BASE + 1, cplx)]
        else:
            plan = [
                (LIVE_SEED_BASE + 10 * r + k, dtype)
                for r in range(N_SEEDS)
                for k, dtype in enumerate(dtypes)
            ]
        for seed, dtype in plan:
            out.append(pytest.param(name, seed, dtype, id=f"{name}-{dtype}-seed{seed}"))
    return out


def _compare(case, params0, noise, masks=None):
    expected, torch_state = pt.run_torch(case, params0, noise, masks)
    traj, states = ph.run_gradxform(case, params0, noise, masks)
    ph.check_trajectory(case.name, case.dtype, traj, expected)
    ph.check_state(case.name, case.dtype, states, ph.leaf_groups(case), torch_state)


@pytest.mark.parametrize("name, seed, dtype", _live_params())
def test_live(name, seed, dtype):
    case = pc.make_case(name, seed, dtype=dtype)
    _compare(case, pc.initial_params(case), pc.noises(case), pc.masks(case))


@pytest.mark.parametrize("name", pc.OPTIMIZERS)
def test_live_param_groups(name):
    case = pc.make_case(name, 2000, groups=True)
    assert case.groups[0][1] != case.groups[1][1]
    _compare(case, pc.initial_params(case), pc.noises(case), pc.masks(case))


# ------------------------------------------------------------------ SparseAdam BCOO


def _coo_inputs(case: pc.Case, variant: str):
    """Per leaf ``[steps, nse, n_sparse]`` indices and ``[steps, nse, *dense]`` noise."""
    rng = np.random.default_rng([pc._key(case.name), case.seed, 5])
    indices, values = [], []
    for shape in case.shapes:
        if variant == "rows":  # row-sparse: index the first axis, the rest is dense
            sparse_shape, dense_shape = shape[:1], shape[1:]
        else:
            sparse_shape, dense_shape = shape, ()
        size = int(np.prod(sparse_shape))
        nse = max(1, size // 2) if variant != "duplicates" else size
        idx = np.empty((case.steps, nse, len(sparse_shape)), np.int64)
        for t in range(case.steps):
            flat = rng.choice(size, nse, replace=variant == "duplicates")
            if variant == "duplicates" and nse > 1:
                flat[1] = flat[0]  # at least one duplicate every step
            idx[t] = np.stack(np.unravel_index(flat, sparse_shape), axis=-1)
        indices.append(idx)
        noise = case.noise_scale * rng.standard_normal((case.steps, nse) + dense_shape)
        values.append(noise.astype(case.dtype))
    return indices, values


@pytest.mark.parametrize(
    "variant, dtype", [("unique", "float64"), ("duplicates", "float32"), ("rows", "float64")]
)
def test_live_sparse_adam_bcoo(variant, dtype):
    case = pc.make_case("sparse_adam", 3000, dtype=dtype)
    # BCOO needs at least one axis; keep the 1-d, 2-d and 3-d leaves
    case = dataclasses.replace(case, shapes=tuple(s for s in case.shapes if len(s) >= 1))
    params0 = pc.initial_params(case)
    indices, values = _coo_inputs(case, variant)
    expected, torch_state = pt.run_torch_sparse_coo(case, params0, indices, values)
    traj, states = ph.run_gradxform_bcoo(case, params0, indices, values)
    ph.check_trajectory(case.name, case.dtype, traj, expected)
    ph.check_state(case.name, case.dtype, states, ph.leaf_groups(case), torch_state)


# ------------------------------------------------------------ Muon's logic, exactly
# Muon's trajectories only match to bfloat16 rounding (parity_harness.MUON_TOL). To
# check everything else exactly (momentum, Nesterov, transposition, normalization eps,
# adjust_lr_fn, weight decay), both sides get the same Newton–Schulz iteration in
# float64 instead of bfloat16, and float64 trajectories must agree to 1e-10.


def _newton_schulz_float64_torch(grad, ns_coefficients, ns_steps, eps):
    a, b, c = ns_coefficients
    x = grad.to(torch.float64)
    tall = grad.size(0) > grad.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        gram_update = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, gram_update, x, beta=a)
    return x.T if tall else x


def _newton_schulz_float64_jax(matrix, ns_coefficients=(3.4445, -4.775, 2.0315), ns_steps=5, eps=1e-7):
    import jax.numpy as jnp

    a, b, c = (jnp.asarray(v).astype(jnp.float64) for v in ns_coefficients)
    x = jnp.asarray(matrix).astype(jnp.float64)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / jnp.maximum(jnp.sqrt(jnp.sum(x * x)), jnp.asarray(eps).astype(jnp.float64))
    for _ in range(ns_steps):
        gram = x @ x.T
        gram_update = b * gram + c * (gram @ gram)
        x = a * x + gram_update @ x
    return x.T if tall else x


def _muon_logic_seeds():
    """The first seeds from 4000 drawing each ``adjust_lr_fn`` option."""
    seeds = {}
    seed = 4000
    while len(seeds) < 3:
        index = pc.make_case("muon", seed).choices["adjust_lr_fn"][0]
        seeds.setdefault(index, seed)
        seed += 1
    return sorted(seeds.values())


@pytest.mark.parametrize("seed", _muon_logic_seeds())
def test_live_muon_logic_with_float64_newton_schulz(seed, monkeypatch):
    import torch.optim._muon as torch_muon

    import gradxform.optimizers.muon as gx_muon

    calls = {"torch": 0, "gradxform": 0}

    def counted(side, fn):
        def wrapped(*args, **kwargs):
            calls[side] += 1
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(
        torch_muon, "_zeropower_via_newtonschulz", counted("torch", _newton_schulz_float64_torch)
    )
    monkeypatch.setattr(
        gx_muon, "orthogonalize_via_newton_schulz", counted("gradxform", _newton_schulz_float64_jax)
    )
    case = pc.make_case("muon", seed, dtype="float64")
    params0, noise = pc.initial_params(case), pc.noises(case)
    expected, torch_state = pt.run_torch(case, params0, noise)
    traj, states = ph.run_gradxform(case, params0, noise)
    assert calls["torch"] > 0 and calls["gradxform"] > 0, f"the float64 iteration was not used: {calls}"
    tol = ph.TOL["float64"]
    for j, (a, b) in enumerate(zip(traj, expected)):
        errs = [ph.rel_err(a[t], b[t]) for t in range(case.steps)]
        ph.MAX_ERRORS[("muon", "float64 (float64 NS)", "params")] = max(
            ph.MAX_ERRORS[("muon", "float64 (float64 NS)", "params")], max(errs)
        )
        assert max(errs) <= tol, f"leaf {j}: max rel err {max(errs):.3e} > {tol:g} ({case.torch_kwargs})"
    buf = ph.find_state_field(states[0], "momentum_buffer")
    for j, b in enumerate(torch_state):
        assert ph.rel_err(np.asarray(buf[j]), b["momentum_buffer"]) <= tol

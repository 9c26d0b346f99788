"""Non-finite gradients: gradxform.skip_non_finite and torch_compat's set_skip_non_finite."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform
import torch_compat
from gradxform.registry import FIRST_ORDER, SPECS
from torch_compat import optim

CORE = list(FIRST_ORDER)
CORE_KWARGS = {"sgd": {"momentum": 0.9}}


def _params(name, dtype=jnp.float64):
    w = jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float64).reshape(3, 4).at[0, 0].set(-0.0).astype(dtype)
    if name == "muon":
        return {"w": w}
    return {"w": w, "b": jnp.array([-0.0, 0.5, 2.0], dtype)}


def _grads(params, step, bad=None):
    grads = jax.tree.map(lambda p: (jnp.cos(jnp.arange(p.size) + step).reshape(p.shape) * 0.3).astype(p.dtype), params)
    if bad is not None:
        grads["w"] = grads["w"].at[1, 2].set(bad)
    return grads


def _bits(tree):
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.bfloat16], ids=["float64", "bfloat16"])
@pytest.mark.parametrize("name", CORE)
def test_core_skip_keeps_params_and_state_bitwise(name, dtype):
    inner = getattr(gradxform, name)(0.1, **CORE_KWARGS.get(name, {}))
    tx = gradxform.skip_non_finite(inner)
    params = _params(name, dtype)
    state = tx.init(params)
    step = jax.jit(lambda g, s, p: tx.update(g, s, p))
    ref_params, ref_state = params, inner.init(params)
    ref_step = jax.jit(inner.update)
    n = 0
    for bad in [None, jnp.nan, None, jnp.inf, -jnp.inf, None]:
        g = _grads(params, n, bad)
        updates, new_state = step(g, state, params)
        new_params = gradxform.apply_updates(params, updates)
        if bad is None:
            # A finite update is the wrapped optimizer's, to the bit.
            ref_updates, ref_state = ref_step(g, ref_state, ref_params)
            ref_params = gradxform.apply_updates(ref_params, ref_updates)
            assert _bits(new_params) == _bits(ref_params)
            assert _bits(new_state.inner_state) == _bits(ref_state)
            assert int(new_state.consecutive_skipped) == 0
            n += 1
        else:
            assert _bits(new_params) == _bits(params)  # -0.0 entries stay -0.0
            assert _bits(new_state.inner_state) == _bits(state.inner_state)
            assert int(new_state.consecutive_skipped) == int(state.consecutive_skipped) + 1
        params, state = new_params, new_state
    assert int(state.total_skipped) == 3


def test_max_consecutive_skips():
    tx = gradxform.skip_non_finite(gradxform.sgd(1.0), max_consecutive_skips=2)
    params = jnp.zeros(2)
    state = tx.init(params)
    bad, good = jnp.array([jnp.nan, 1.0]), jnp.array([1.0, 1.0])
    seen = []
    for g in [bad, bad, bad, bad, good, bad, bad, bad]:
        updates, state = tx.update(g, state, params)
        applied = not bool(jnp.all(updates == 0))
        seen.append((applied, int(state.total_skipped), int(state.consecutive_skipped)))
    assert seen == [
        (False, 1, 1), (False, 2, 2), (True, 2, 2), (True, 2, 2),  # limit reached: NaN goes through
        (True, 2, 0),  # a finite update resets the run
        (False, 3, 1), (False, 4, 2), (True, 4, 2),
    ]
    never = gradxform.skip_non_finite(gradxform.sgd(1.0), max_consecutive_skips=0)
    updates, s = never.update(bad, never.init(params), params)
    assert bool(jnp.isnan(updates[0])) and int(s.total_skipped) == 0


def test_bad_limits():
    with pytest.raises(ValueError, match=r"^max_consecutive_skips must be >= 0, got -1$"):
        gradxform.skip_non_finite(gradxform.sgd(1.0), max_consecutive_skips=-1)
    with pytest.raises(TypeError, match=r"^max_consecutive_skips must be None or an int, got float$"):
        gradxform.skip_non_finite(gradxform.sgd(1.0), max_consecutive_skips=2.0)


def test_schedule_and_injected_hyperparams_do_not_advance():
    inner = gradxform.adam(lambda count: 0.1 * (count + 1))
    tx = gradxform.skip_non_finite(inner)
    params = jnp.ones(3)
    state = tx.init(params)
    _, state = tx.update(jnp.full(3, jnp.nan), state, params)
    assert int(state.inner_state.count) == 0  # the schedule's step did not move
    updates, state = tx.update(jnp.ones(3), state, params)
    np.testing.assert_allclose(np.asarray(updates), -0.1, rtol=1e-6)  # the schedule's first value
    tx = gradxform.skip_non_finite(gradxform.adam(0.1))
    state = tx.init(params)
    state = state._replace(inner_state=gradxform.set_hyperparams(state.inner_state, learning_rate=0.5))
    _, state = tx.update(jnp.full(3, jnp.inf), state, params)
    assert float(gradxform.get_hyperparams(state)["learning_rate"]) == 0.5
    updates, state = tx.update(jnp.ones(3), state, params)
    np.testing.assert_allclose(np.asarray(updates), -0.5, rtol=1e-6)
    assert int(state.inner_state.count) == 1


@pytest.mark.parametrize("order", ["skip(flatten)", "flatten(skip)"])
def test_with_flatten(order):
    adam = gradxform.adam(0.1)
    tx = (gradxform.skip_non_finite(gradxform.flatten(adam)) if order == "skip(flatten)"
          else gradxform.flatten(gradxform.skip_non_finite(adam)))
    params = {"a": jnp.ones(3, jnp.float32), "b": jnp.ones(2, jnp.float64)}
    state = tx.init(params)
    updates, new_state = jax.jit(tx.update)({"a": jnp.ones(3, jnp.float32), "b": jnp.array([1.0, jnp.nan])}, state, params)
    assert _bits(gradxform.apply_updates(params, updates)) == _bits(params)
    skip_state = new_state if order == "skip(flatten)" else new_state.inner_state
    assert int(skip_state.total_skipped) == 1


def test_complex_params():
    tx = gradxform.skip_non_finite(gradxform.adam(0.1))
    params = jnp.array([complex(-0.0, -0.0), 1 + 2j], jnp.complex64)
    state = tx.init(params)
    updates, new_state = jax.jit(tx.update)(jnp.array([1j, complex(1.0, np.inf)], jnp.complex64), state, params)
    assert _bits(gradxform.apply_updates(params, updates)) == _bits(params)
    assert int(new_state.total_skipped) == 1
    updates, _ = tx.update(jnp.array([1j, 1.0], jnp.complex64), state, params)
    assert not bool(jnp.all(updates == 0))


def test_with_optax_inside_and_outside():
    optax = pytest.importorskip("optax")
    tx = optax.chain(optax.clip_by_global_norm(1.0), gradxform.skip_non_finite(optax.adam(0.1)))
    params = {"a": jnp.ones(2)}
    state = tx.init(params)
    updates, state = tx.update({"a": jnp.array([jnp.nan, 1.0])}, state, params)
    assert _bits(optax.apply_updates(params, updates)) == _bits(params)
    assert int(state[1].total_skipped) == 1
    updates, state = tx.update({"a": jnp.array([1.0, 1.0])}, state, params)
    assert float(updates["a"][0]) == pytest.approx(-0.1, rel=1e-6)


def test_extra_args_reach_lbfgs():
    tx = gradxform.skip_non_finite(gradxform.lbfgs(1.0, max_iter=5))
    fun = lambda x: jnp.sum((x - 2.0) ** 2)  # noqa: E731
    step = jax.jit(lambda g, s, p: tx.update(g, s, p, value_fn=fun))
    params = jnp.zeros(2)
    state = tx.init(params)
    updates, state = step(jnp.array([jnp.nan, 0.0]), state, params)
    assert _bits(gradxform.apply_updates(params, updates)) == _bits(params)
    updates, state = step(jax.grad(fun)(params), state, params)
    np.testing.assert_allclose(np.asarray(gradxform.apply_updates(params, updates)), [2.0, 2.0], rtol=1e-6)
    assert int(state.total_skipped) == 1


def test_inside_scan():
    tx = gradxform.skip_non_finite(gradxform.adam(0.1))
    params = jnp.ones(2)
    grads = jnp.array([[1.0, 1.0], [jnp.nan, 1.0], [1.0, 1.0]])

    def body(carry, g):
        p, s = carry
        u, s = tx.update(g, s, p)
        return (gradxform.apply_updates(p, u), s), None

    (p, s), _ = jax.lax.scan(body, (params, tx.init(params)), grads)
    assert int(s.total_skipped) == 1
    assert bool(jnp.all(jnp.isfinite(p)))


# -- torch_compat ------------------------------------------------------------------------

COMPAT = [SPECS[alias].torch_name for alias in FIRST_ORDER]
COMPAT_KWARGS = {"SGD": {"momentum": 0.9}}


def _compat(name, skip):
    params = [torch_compat.Parameter(v) for v in _params("muon" if name == "Muon" else "x", jnp.float32).values()]
    opt = getattr(optim, name)(params, lr=0.1, **COMPAT_KWARGS.get(name, {}))
    if skip:
        opt.set_skip_non_finite()
    return params, opt


def _snapshot(opt, params):
    sd = opt.state_dict()
    return _bits([p.data for p in params]), {k: _bits(v) for k, v in sd["state"].items()}, \
        {k: sorted(v) for k, v in sd["state"].items()}


def _set_grads(params, step, bad=None):
    for i, p in enumerate(params):
        g = jnp.cos(jnp.arange(p.data.size) + step + i).reshape(p.shape).astype(p.dtype) * 0.3
        if bad is not None and i == 0:
            g = g.at[1, 2].set(bad)
        p.grad = g


@pytest.mark.parametrize("name", COMPAT)
def test_compat_skip_is_as_if_the_step_never_happened(name):
    params, opt = _compat(name, skip=True)
    ref_params, ref = _compat(name, skip=False)
    before = _snapshot(opt, params)
    _set_grads(params, 0, jnp.nan)
    opt.step()  # first step: no state is created
    assert _snapshot(opt, params) == before
    n = 0
    for bad in [None, jnp.inf, None, None, -jnp.inf, jnp.nan, None]:
        before = _snapshot(opt, params)
        _set_grads(params, n, bad)
        opt.step()
        if bad is None:
            _set_grads(ref_params, n, None)
            ref.step()
            assert _snapshot(opt, params) == _snapshot(ref, ref_params)
            n += 1
        else:
            assert _snapshot(opt, params) == before
    assert opt.skipped_steps == 4 and opt.consecutive_skipped_steps == 0


def test_compat_default_lets_nan_through_as_torch():
    params, opt = _compat("Adam", skip=False)
    _set_grads(params, 0, jnp.nan)
    opt.step()
    assert bool(jnp.isnan(params[0].data[1, 2])) and opt.skipped_steps == 0
    assert "skip_non_finite" not in opt.state_dict()


def test_compat_limit_and_state_dict_round_trip():
    params, opt = _compat("Adam", skip=False)
    opt.set_skip_non_finite(max_consecutive_skips=2)
    _set_grads(params, 0)
    opt.step()
    for _ in range(2):
        _set_grads(params, 1, jnp.nan)
        opt.step()
    assert (opt.skipped_steps, opt.consecutive_skipped_steps) == (2, 2)
    assert bool(jnp.all(jnp.isfinite(params[0].data)))
    sd = opt.state_dict()
    assert sd["skip_non_finite"] == {"skipped_steps": 2, "consecutive_skipped_steps": 2}
    _set_grads(params, 1, jnp.nan)
    opt.step()  # the third in a row goes through
    assert bool(jnp.isnan(params[0].data[1, 2])) and opt.skipped_steps == 2
    other_params, other = _compat("Adam", skip=True)
    other.load_state_dict(sd)
    assert (other.skipped_steps, other.consecutive_skipped_steps) == (2, 2)
    without = {k: v for k, v in sd.items() if k != "skip_non_finite"}  # as torch saves it
    other.load_state_dict(without)
    assert (other.skipped_steps, other.consecutive_skipped_steps) == (0, 0)
    assert int(other.state[other_params[0]]["step"]) == 1


def test_compat_torch_loads_our_state_dict():
    torch = pytest.importorskip("torch")
    params, opt = _compat("Adam", skip=True)
    _set_grads(params, 0)
    opt.step()
    _set_grads(params, 1, jnp.inf)
    opt.step()
    sd = opt.state_dict()
    tparams = [torch.nn.Parameter(torch.from_numpy(np.asarray(p.data).copy())) for p in params]
    topt = torch.optim.Adam(tparams, lr=0.1)
    topt.load_state_dict({
        "state": {k: {kk: torch.tensor(np.asarray(vv)) for kk, vv in v.items()} for k, v in sd["state"].items()},
        "param_groups": sd["param_groups"],
        "skip_non_finite": sd["skip_non_finite"],
    })
    assert topt.state_dict()["state"][0]["step"].item() == 1.0


def test_compat_repeated_parameter_follows_the_step_decision():
    a = torch_compat.Parameter(jnp.ones(2))
    b = torch_compat.Parameter(jnp.ones(2))
    with pytest.warns(UserWarning, match="duplicate parameters"):
        opt = optim.SGD([a, b, b], lr=0.1, momentum=0.9)
    opt.set_skip_non_finite()
    a.grad = jnp.array([jnp.nan, 1.0])
    b.grad = jnp.ones(2)
    opt.step()
    assert _bits([a.data, b.data]) == _bits([jnp.ones(2), jnp.ones(2)])
    assert opt.skipped_steps == 1 and len(opt.state) == 0


def test_compat_groups_and_no_sync_when_state_exists():
    a = torch_compat.Parameter(jnp.ones(2))
    b = torch_compat.Parameter(jnp.ones(3))
    opt = optim.Adam([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    opt.set_skip_non_finite()
    a.grad, b.grad = jnp.ones(2), jnp.ones(3)
    opt.step()
    before = _snapshot(opt, [a, b])
    a.grad, b.grad = jnp.ones(2), jnp.array([1.0, jnp.inf, 1.0])  # the bad gradient is in group 2
    with jax.transfer_guard_device_to_host("disallow"):
        opt.step()  # the decision stays on the device
    assert _snapshot(opt, [a, b]) == before


def test_compat_bad_limit_and_lbfgs():
    _, opt = _compat("SGD", skip=False)
    with pytest.raises(ValueError, match=r"^max_consecutive_skips must be >= 0, got -3$"):
        opt.set_skip_non_finite(max_consecutive_skips=-3)
    with pytest.raises(TypeError, match=r"^max_consecutive_skips must be None or an int, got str$"):
        opt.set_skip_non_finite(max_consecutive_skips="2")
    lbfgs = optim.LBFGS([torch_compat.Parameter(jnp.ones(2))])
    with pytest.raises(NotImplementedError, match=r"^LBFGS does not support skipping non-finite steps$"):
        lbfgs.set_skip_non_finite()


def test_compat_deepcopy_keeps_the_option():
    import copy

    params, opt = _compat("Adam", skip=True)
    _set_grads(params, 0, jnp.nan)
    opt.step()
    clone = copy.deepcopy(opt)
    assert clone.skipped_steps == 1 and clone._skip_enabled

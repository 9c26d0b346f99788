"""Mixed precision: torch_compat.amp.GradScaler and gradxform.loss_scaled against torch 2.13.

Golden data (``tests/make_golden_amp.py``) runs without torch; the live tests rerun the
cases with torch when it is installed and compare errors and warnings with torch's.
"""

from __future__ import annotations

import os
import pickle
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform
import torch_compat
from torch_compat import optim
from torch_compat.amp import GradScaler
from torch_compat.amp import grad_scaler as grad_scaler_module
from torch_compat.nn.utils import clip_grad_norm_

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import make_golden_amp  # noqa: E402

CASES = sorted(make_golden_amp.CASES)
# The cases with one optimizer, for loss_scaled.
SINGLE = [name for name, case in sorted(make_golden_amp.CASES.items()) if case["optimizer"] != "two"]


@pytest.fixture(scope="module")
def golden():
    return make_golden_amp.read()


def run_compat(name: str) -> dict[str, np.ndarray]:
    """Case ``name`` with torch_compat's optimizers and GradScaler (as run_torch does it)."""
    case = make_golden_amp.CASES[name]
    params = [torch_compat.Parameter(jnp.asarray(p)) for p in make_golden_amp.initial_params()]
    if case["optimizer"] == "two":
        optimizers = [optim.SGD([params[0]], lr=0.1), optim.Adam([params[1]], lr=0.1)]
    else:
        cls, options = case["optimizer"]
        optimizers = [getattr(optim, cls)(params, **options)]
    scaler = GradScaler("cpu", **case["scaler"])
    scales, trackers = [], []
    for step in range(case["steps"]):
        scaled = scaler.scale(jnp.ones((), jnp.float32))
        for p, g in zip(params, make_golden_amp.gradients(name, step)):
            p.grad = jnp.asarray(g) * scaled
        for opt in optimizers:
            if "clip" in case:
                scaler.unscale_(opt)
                clip_grad_norm_([p for group in opt.param_groups for p in group["params"]], case["clip"])
            scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        trackers.append(scaler._get_growth_tracker())
        for opt in optimizers:
            opt.zero_grad()
    out = {"scale": np.array(scales, np.float32), "tracker": np.array(trackers, np.int32)}
    for i, p in enumerate(params):
        out[f"param{i}"] = np.asarray(p.data)
        opt = optimizers[i] if len(optimizers) > 1 else optimizers[0]
        state = opt.state.get(p, {})
        out[f"step{i}"] = np.asarray(float(state["step"]) if "step" in state else -1.0, np.float32)
    return out


def run_core(name: str) -> dict[str, np.ndarray]:
    """Case ``name`` with gradxform.loss_scaled around the same optimizer (after
    ``clip_by_global_norm`` where torch clips), jitted and donating."""
    case = make_golden_amp.CASES[name]
    cls, options = case["optimizer"]
    options = dict(options)
    lr = options.pop("lr")
    inner = getattr(gradxform, cls.lower())(lr, **options)
    if "clip" in case:  # torch clips between unscale_ and step: the inner chain sees unscaled gradients
        inner = gradxform.chain(gradxform.clip_by_global_norm(case["clip"]), inner)
    tx = gradxform.loss_scaled(inner, **case["scaler"])
    params = [jnp.asarray(p) for p in make_golden_amp.initial_params()]
    state = tx.init(params)

    @jax.jit
    def scaled_grads(unscaled, state):
        return [g * gradxform.get_loss_scale(state) for g in unscaled]

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gradxform.apply_updates(params, updates), state

    step = jax.jit(step, donate_argnums=(0, 1))
    scales, trackers = [], []
    for i in range(case["steps"]):
        grads = scaled_grads([jnp.asarray(g) for g in make_golden_amp.gradients(name, i)], state)
        params, state = step(params, state, grads)
        scales.append(float(state.scale))
        trackers.append(int(state.growth_tracker))
    out = {"scale": np.array(scales, np.float32), "tracker": np.array(trackers, np.int32)}
    for i, p in enumerate(params):
        out[f"param{i}"] = np.asarray(p)
    return out


def check_against(expected: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(got["scale"], expected["scale"])  # the same scales, bit for bit
    np.testing.assert_array_equal(got["tracker"], expected["tracker"])
    for key in expected:
        if key.startswith("param"):
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)
        elif key.startswith("step") and key in got:
            assert got[key] == expected[key], key


@pytest.mark.parametrize("name", CASES)
def test_grad_scaler_matches_golden(name, golden):
    _, arrays = golden
    expected = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(name + "/")}
    check_against(expected, run_compat(name))


@pytest.mark.parametrize("name", SINGLE)
def test_loss_scaled_matches_golden(name, golden):
    _, arrays = golden
    expected = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(name + "/")}
    check_against(expected, run_core(name))


def test_golden_covers_every_case(golden):
    meta, arrays = golden
    assert meta["torch_version"].startswith("2.13")
    assert {k.split("/")[0] for k in arrays} == set(CASES)
    # The cases see skips, growth and backoff.
    scales = arrays["growth/scale"]
    assert (np.diff(scales) > 0).any() and (np.diff(scales) < 0).any()


# -- the arithmetic ------------------------------------------------------------------------


def double_product(scale: float, factor: float) -> np.float32:
    return np.float32(float(np.float32(scale)) * factor)  # torch: the product in double, rounded once


@pytest.mark.parametrize("x64", [True, False])
@pytest.mark.parametrize("factor", [0.3, 1.1, 1.5, 0.9999, 1.0001, 0.5, 2.0, 3.0])
def test_scale_times_factor_is_rounded_once_from_double(factor, x64):
    rng = np.random.default_rng(0)
    scales = (rng.random(2000) * 2.0 ** rng.integers(-20, 40, 2000)).astype(np.float32)
    want = np.array([double_product(s, factor) for s in scales])
    with jax.enable_x64(x64):
        new, _ = jax.vmap(lambda s: gradxform.loss_scaling._update_scale(s, 0, True, 2.0, factor, 10))(jnp.asarray(scales))
        differ = np.mean(np.asarray(new) != want)
    if x64 or factor != 1.1:
        assert differ == 0
    else:  # float32 alone: near-ties may round the other way (documented)
        assert differ < 0.05
        np.testing.assert_allclose(np.asarray(new), want, rtol=2**-23)


def test_update_rules():
    update = gradxform.loss_scaling._update_scale
    # Growth after growth_interval finite steps, then the tracker restarts.
    assert [float(x) for x in update(4.0, 1, False, 2.0, 0.5, 2)] == [8.0, 0.0]
    assert [float(x) for x in update(4.0, 0, False, 2.0, 0.5, 2)] == [4.0, 1.0]
    # Backoff on a non-finite step resets the tracker.
    assert [float(x) for x in update(4.0, 1, True, 2.0, 0.5, 2)] == [2.0, 0.0]
    # A growth that overflows float32 keeps the scale (and still resets the tracker).
    big = float(np.finfo(np.float32).max) / 1.5
    scale, tracker = update(big, 0, False, 2.0, 0.5, 1)
    assert float(scale) == float(np.float32(big)) and int(tracker) == 0


def test_unscale_checks_the_scaled_values():
    # torch checks the gradients as given: a finite one that overflows once unscaled
    # (scale below 1) is not counted.
    grads, found_inf = gradxform.loss_scaling._unscale([jnp.array([1e10, 1.0], jnp.float32)], jnp.float32(1e-30))
    assert not bool(found_inf)
    assert np.isinf(np.asarray(grads[0])[0])
    _, found_inf = gradxform.loss_scaling._unscale({"a": jnp.ones(2), "b": jnp.array([jnp.nan])}, jnp.float32(2.0))
    assert bool(found_inf)


# -- the functional face ----------------------------------------------------------------------


def test_skipped_update_keeps_params_and_inner_state():
    tx = gradxform.loss_scaled(gradxform.adam(0.1), init_scale=8.0, growth_interval=1)
    params = {"w": jnp.array([1.0, -0.0])}
    state = tx.init(params)
    updates, new_state = tx.update({"w": jnp.array([jnp.inf, 1.0])}, state, params)
    after = gradxform.apply_updates(params, updates)
    assert np.asarray(after["w"]).tobytes() == np.asarray(params["w"]).tobytes()
    for old, new in zip(jax.tree.leaves(state.inner_state), jax.tree.leaves(new_state.inner_state)):
        np.testing.assert_array_equal(np.asarray(old), np.asarray(new))
    assert float(new_state.scale) == 4.0 and int(new_state.growth_tracker) == 0
    # A finite update unscales: the inner optimizer sees the true gradient.
    updates, state2 = tx.update({"w": jnp.array([8.0, 8.0])}, new_state, params)
    plain, _ = gradxform.adam(0.1).update({"w": jnp.array([2.0, 2.0])}, gradxform.adam(0.1).init(params), params)
    np.testing.assert_allclose(np.asarray(updates["w"]), np.asarray(plain["w"]))
    assert float(state2.scale) == 8.0


def test_composes_with_param_groups_and_inject_hyperparams():
    inner = gradxform.param_groups(gradxform.adamw, [{"params": "b", "weight_decay": 0.0}], learning_rate=0.1)
    tx = gradxform.loss_scaled(inner, init_scale=2.0)
    params = {"w": jnp.ones(2), "b": jnp.ones(1)}
    state = tx.init(params)
    updates, state = tx.update(jax.tree.map(lambda p: 2.0 * p, params), state, params)
    reference, _ = inner.update(params, inner.init(params), params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b)), updates, reference)
    state = gradxform.set_hyperparams(state, group=0, learning_rate=0.5)
    assert float(gradxform.get_hyperparams(state, group=0)["learning_rate"]) == 0.5
    tx = gradxform.loss_scaled(gradxform.inject_hyperparams(gradxform.sgd, learning_rate=0.1))
    state = tx.init(params)
    assert float(gradxform.get_loss_scale(gradxform.chain(gradxform.identity()).init(params) + (state,))) == 2.0**16


def test_wraps_optax_and_checkpoints(tmp_path):
    optax = pytest.importorskip("optax")
    tx = gradxform.loss_scaled(optax.chain(optax.clip_by_global_norm(10.0), optax.sgd(0.5)), init_scale=4.0,
                               growth_interval=1)
    params = {"w": jnp.ones(2, jnp.float32)}
    state = tx.init(params)
    updates, state = tx.update({"w": jnp.array([4.0, 8.0], jnp.float32)}, state, params)
    np.testing.assert_allclose(np.asarray(updates["w"]), [-0.5, -1.0])  # sgd on the unscaled [1, 2]
    assert float(gradxform.get_loss_scale(state)) == 8.0
    gradxform.checkpoint.save(tmp_path / "state.npz", state)
    restored = gradxform.checkpoint.load(tmp_path / "state.npz", target=state)
    assert isinstance(restored, gradxform.LossScaledState)
    assert float(restored.scale) == 8.0 and int(restored.growth_tracker) == 0


def test_get_loss_scale_needs_one_state():
    with pytest.raises(ValueError, match="found 0"):
        gradxform.get_loss_scale(gradxform.adam(0.1).init(jnp.ones(2)))
    state = gradxform.loss_scaled(gradxform.sgd(0.1)).init(jnp.ones(2))
    with pytest.raises(ValueError, match="found 2"):
        gradxform.get_loss_scale((state, state))


def test_loss_scaled_refuses_torchs_bad_factors():
    with pytest.raises(AssertionError, match=r"^The growth factor must be > 1.0.$"):
        gradxform.loss_scaled(gradxform.sgd(0.1), growth_factor=1.0)
    with pytest.raises(AssertionError, match=r"^The backoff factor must be < 1.0.$"):
        gradxform.loss_scaled(gradxform.sgd(0.1), backoff_factor=1.0)


# -- GradScaler: skipping, syncs, schedulers ---------------------------------------------------


def make(lr=0.1, **scaler):
    w = torch_compat.Parameter(jnp.array([1.0, 2.0], jnp.float32))
    opt = optim.Adam([w], lr=lr)
    return w, opt, GradScaler("cpu", **scaler)


def test_skipped_step_creates_no_state_and_keeps_params():
    w, opt, scaler = make()
    scaler.scale(jnp.ones(()))
    w.grad = jnp.array([jnp.inf, 1.0], jnp.float32)
    before = np.asarray(w.data).copy()
    scaler.step(opt)
    scaler.update()
    np.testing.assert_array_equal(np.asarray(w.data), before)
    assert len(opt.state) == 0 and scaler.get_scale() == 2.0**15
    w.grad = jnp.array([65536.0, 65536.0], jnp.float32) / 2
    scaler.step(opt)
    scaler.update()
    assert float(opt.state[w]["step"]) == 1.0
    w.grad = jnp.array([jnp.nan, 1.0], jnp.float32)
    data, exp_avg = np.asarray(w.data).copy(), np.asarray(opt.state[w]["exp_avg"]).copy()
    scaler.step(opt)
    scaler.update()
    assert float(opt.state[w]["step"]) == 1.0
    np.testing.assert_array_equal(np.asarray(w.data), data)
    np.testing.assert_array_equal(np.asarray(opt.state[w]["exp_avg"]), exp_avg)


def test_skip_non_finite_counters_are_left_to_the_scaler():
    w, opt, scaler = make()
    opt.set_skip_non_finite()
    scaler.scale(jnp.ones(()))
    w.grad = jnp.array([jnp.inf, 1.0], jnp.float32)
    scaler.step(opt)
    scaler.update()
    assert opt.skipped_steps == 0 and len(opt.state) == 0


def forbid_host_reads(monkeypatch):
    """Makes reading a JAX array's value on the host fail (on the CPU, where
    ``jax.transfer_guard`` sees no transfer, this is how a synchronization shows)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a JAX array was read on the host")

    cls = type(jnp.ones(()))
    for name in ("__bool__", "__float__", "__int__", "__index__", "__array__", "item", "tolist"):
        monkeypatch.setattr(cls, name, refuse)


def test_a_step_with_state_makes_no_host_sync(monkeypatch):
    w, opt, scaler = make()
    scaler.scale(jnp.ones(()))
    w.grad = jnp.ones(2, jnp.float32)
    with monkeypatch.context() as patch:
        forbid_host_reads(patch)
        # The first step creates the state: it reads whether the step was skipped
        # (which the check sees, mid-step, on a throwaway optimizer).
        w_first, opt_first, _ = make()
        w_first.grad = jnp.ones(2, jnp.float32)
        with pytest.raises(AssertionError, match="read on the host"):
            scaler.step(opt_first)
    scaler.step(opt)
    scaler.update()
    with monkeypatch.context() as patch, jax.transfer_guard_device_to_host("disallow"):
        forbid_host_reads(patch)
        for grad in (jnp.ones(2, jnp.float32), jnp.array([jnp.inf, 1.0], jnp.float32)):
            w.grad = grad * scaler.scale(jnp.ones((), jnp.float32))
            scaler.step(opt)
            scaler.update()
    assert float(opt.state[w]["step"]) == 2.0
    assert scaler.get_scale() == 2.0**15


def test_scheduler_warns_after_a_skipped_first_step_as_torch():
    w, opt, scaler = make()
    scheduler = optim.lr_scheduler.StepLR(opt, 1)
    scaler.scale(jnp.ones(()))
    w.grad = jnp.array([jnp.inf, 1.0], jnp.float32)
    scaler.step(opt)
    scaler.update()
    with pytest.warns(UserWarning, match=r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`"):
        scheduler.step()
    w, opt, scaler = make()
    scheduler = optim.lr_scheduler.StepLR(opt, 1)
    scaler.scale(jnp.ones(()))
    w.grad = jnp.ones(2, jnp.float32)
    scaler.step(opt)
    scaler.update()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scheduler.step()


def test_lbfgs_and_other_optimizers_step_by_reading_found_inf():
    w = torch_compat.Parameter(jnp.array([1.0, 2.0], jnp.float32))
    calls = []

    class Plain(optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {})

        def step(self, closure=None):
            calls.append(True)
            return "stepped"

    opt, scaler = Plain([w]), GradScaler("cpu")
    scaler.scale(jnp.ones(()))
    w.grad = jnp.ones(2, jnp.float32)
    assert scaler.step(opt) == "stepped"
    scaler.update()
    w.grad = jnp.array([jnp.inf, 1.0], jnp.float32)
    assert scaler.step(opt) is None and len(calls) == 1


# -- GradScaler: the API and torch's errors -----------------------------------------------------


FIX = "This may indicate your script did not use scaler.scale(loss or outputs) earlier in the iteration."


def test_misuse_errors():
    w, opt, scaler = make()
    for name, call in [("unscale_", lambda: scaler.unscale_(opt)), ("step", lambda: scaler.step(opt)),
                       ("update", lambda: scaler.update())]:
        with pytest.raises(AssertionError) as info:
            call()
        assert str(info.value) == f"Attempted {name} but _scale is None.  {FIX}"
    scaler.scale(jnp.ones(()))
    with pytest.raises(AssertionError, match=r"^No inf checks were recorded prior to update.$"):
        scaler.update()
    with pytest.raises(AssertionError, match=r"^No inf checks were recorded for this optimizer.$"):
        scaler.step(opt)  # no gradient at all
    with pytest.raises(AssertionError, match=r"^No inf checks were recorded prior to update.$"):
        scaler.update()  # the failed step checked nothing
    scaler.update(new_scale=2.0**16)  # a new scale starts the next iteration all the same
    with pytest.raises(RuntimeError, match=r"^Closure use is not currently supported if GradScaler is enabled.$"):
        scaler.step(opt, closure=lambda: 0.0)
    w.grad = jnp.ones(2, jnp.float32)
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match=r"^unscale_\(\) has already been called on this optimizer since the last update\(\).$"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match=r"^unscale_\(\) is being called after step\(\).$"):
        scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match=r"^step\(\) has already been called since the last update\(\).$"):
        scaler.step(opt)
    with pytest.raises(AssertionError, match="A GradScaler instance may only be pickled"):
        pickle.dumps(scaler)
    scaler.update()
    restored = pickle.loads(pickle.dumps(scaler))
    assert restored.state_dict() == scaler.state_dict()


def test_float16_gradients_are_refused_as_in_torch():
    w = torch_compat.Parameter(jnp.ones(2, jnp.float16))
    opt, scaler = optim.SGD([w], lr=0.1), GradScaler("cpu")
    scaler.scale(jnp.ones(()))
    w.grad = jnp.ones(2, jnp.float16)
    with pytest.raises(ValueError, match=r"^Attempting to unscale FP16 gradients.$"):
        scaler.step(opt)
    np.testing.assert_array_equal(np.asarray(w.grad), np.ones(2))


def test_bfloat16_gradients_are_unscaled_in_float32():
    w = torch_compat.Parameter(jnp.ones(2, jnp.bfloat16))
    opt, scaler = optim.SGD([w], lr=0.5), GradScaler("cpu", init_scale=4.0)
    scaler.scale(jnp.ones(()))
    w.grad = jnp.array([4.0, 12.0], jnp.bfloat16)
    scaler.unscale_(opt)
    assert w.grad.dtype == jnp.bfloat16 and np.asarray(w.grad, np.float32).tolist() == [1.0, 3.0]


def test_sparse_gradients_are_unscaled():
    from jax.experimental import sparse

    w = torch_compat.Parameter(jnp.ones(4, jnp.float32))
    opt, scaler = optim.SparseAdam([w], lr=0.5), GradScaler("cpu", init_scale=4.0)
    scaler.scale(jnp.ones(()))
    w.grad = sparse.BCOO.fromdense(jnp.array([0.0, 8.0, 0.0, -4.0], jnp.float32))
    scaler.unscale_(opt)
    assert isinstance(w.grad, sparse.BCOO)
    assert np.asarray(w.grad.todense()).tolist() == [0.0, 2.0, 0.0, -1.0]
    scaler.step(opt)
    scaler.update()
    assert int(opt.state[w]["step"]) == 1


def test_changing_the_options_does_not_recompile():
    w, opt, scaler = make()
    scaler.scale(jnp.ones(()))
    for factor in (2.0, 3.0, 1.5):
        scaler.set_growth_factor(factor)
        scaler.set_backoff_factor(factor / 4)
        scaler.set_growth_interval(int(factor * 2))
        w.grad = jnp.ones(2, jnp.float32)
        scaler.step(opt)
        scaler.update()
        if factor == 2.0:
            compiled = grad_scaler_module._update_scale._cache_size()
    assert grad_scaler_module._update_scale._cache_size() == compiled


def test_scale_outputs():
    scaler = GradScaler("cpu", init_scale=4.0)
    assert scaler.scale(jnp.ones(3, jnp.float16)).dtype == jnp.float16  # an array keeps its dtype
    assert scaler.scale(jnp.ones((), jnp.float16)).dtype == jnp.float32  # a 0-d one promotes
    # A float16 product is formed in float32 and rounded once: 2**15 * 2 fits, 2**16 does not.
    big = GradScaler("cpu").scale(jnp.array([0.5, 1.0], jnp.float16))
    assert np.asarray(big, np.float32).tolist() == [32768.0, np.inf]
    out = scaler.scale([jnp.ones(()), (jnp.full((), 2.0),), {"a": np.float32(3.0) * np.ones(1, np.float32)}])
    assert [float(out[0]), float(out[1][0]), float(out[2]["a"][0])] == [4.0, 8.0, 12.0]
    assert isinstance(out[1], tuple)
    lazy = scaler.scale(iter([jnp.ones(())]))
    assert isinstance(lazy, map) and [float(x) for x in lazy] == [4.0]
    with pytest.raises(ValueError, match=r"^outputs must be a Tensor or an iterable of Tensors$"):
        scaler.scale(1.0)
    with pytest.raises(TypeError, match="traced value"):
        jax.grad(lambda x: scaler.scale(x))(jnp.ones(()))


def test_new_scale():
    w, opt, scaler = make(init_scale=4.0)
    scaler.scale(jnp.ones(()))
    scaler.update(new_scale=10.0)
    assert scaler.get_scale() == 10.0
    scaler.update(new_scale=jnp.array([3.0]))
    assert scaler.get_scale() == 3.0
    with pytest.raises(AssertionError, match="new_scale should be a float or a 1-element"):
        scaler.update(new_scale=jnp.ones(2))
    with pytest.raises(AttributeError, match="'int' object has no attribute 'device'"):
        scaler.update(new_scale=2)


def test_options_state_dict_and_disabled():
    scaler = GradScaler("cpu", init_scale=8.0, growth_interval=5)
    assert scaler.state_dict() == {"scale": 8.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                   "growth_interval": 5, "_growth_tracker": 0}
    scaler.set_growth_factor(3.0)
    scaler.set_backoff_factor(0.25)
    scaler.set_growth_interval(7)
    assert (scaler.get_growth_factor(), scaler.get_backoff_factor(), scaler.get_growth_interval()) == (3.0, 0.25, 7)
    other = GradScaler("cpu")
    other.scale(jnp.ones(()))
    other.load_state_dict({"scale": 16.0, "growth_factor": 3.0, "backoff_factor": 0.25,
                           "growth_interval": 7, "_growth_tracker": 2})
    assert other.get_scale() == 16.0 and other._get_growth_tracker() == 2
    with pytest.raises(RuntimeError, match=r"^The source state dict is empty, possibly because it was saved "
                                           r"from a disabled instance of GradScaler.$"):
        other.load_state_dict({})
    with pytest.raises(AssertionError, match=r"^The growth factor must be > 1.0.$"):
        GradScaler("cpu", growth_factor=0.5)
    off = GradScaler("cpu", enabled=False)
    w = torch_compat.Parameter(jnp.ones(2))
    opt = optim.SGD([w], lr=0.5)
    w.grad = jnp.ones(2)
    loss = jnp.ones(())
    assert off.scale(loss) is loss and off.get_scale() == 1.0 and off.state_dict() == {} and not off.is_enabled()
    off.unscale_(opt)
    off.step(opt)
    off.update()
    assert np.asarray(w.data).tolist() == [0.5, 0.5]


def test_cuda_device_needs_a_gpu():
    if any(d.platform == "gpu" for d in jax.devices()):
        assert GradScaler().is_enabled()
        return
    with pytest.warns(UserWarning, match=r"^torch.cuda.amp.GradScaler is enabled, but CUDA is not available.  Disabling.$"):
        scaler = GradScaler()
    assert not scaler.is_enabled()


def test_float32_master_weights_with_float16_compute():
    """The loop of docs/mixed-precision.md: float32 Parameters, a float16 forward pass."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((64, 4)), jnp.float32)
    y = x @ jnp.array([1.0, -2.0, 0.5, 3.0], jnp.float32)
    model = torch_compat.as_parameters({"w": jnp.zeros(4, jnp.float32)})
    opt = optim.Adam(torch_compat.parameters(model), lr=0.1)
    scaler = GradScaler("cpu")

    def loss_fn(params, x, y, scale):
        w16 = params["w"].astype(jnp.float16)
        pred = x.astype(jnp.float16) @ w16
        loss = jnp.mean((pred.astype(jnp.float32) - y) ** 2)
        return loss * scale

    losses = []
    for _ in range(60):
        opt.zero_grad()
        scaled = torch_compat.backward(loss_fn, model, x, y, scaler.scale(jnp.ones((), jnp.float32)))
        losses.append(float(scaled) / scaler.get_scale())
        scaler.step(opt)
        scaler.update()
    assert model["w"].dtype == jnp.float32 and model["w"].grad.dtype == jnp.float32
    assert scaler.get_scale() < 2.0**16  # float16 overflowed at first, and the scale backed off
    assert losses[-1] < losses[0] / 20


# -- live comparisons with torch --------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_live_torch_matches_golden(name, golden):
    pytest.importorskip("torch")
    _, arrays = golden
    fresh = make_golden_amp.run_torch(name)
    for key, value in fresh.items():
        if key.startswith("param"):
            # torch's own float32 Adam is not the same bit for bit on every CPU: on an AMD
            # EPYC machine, 3 of odd_factors' 7 parameter values came out up to two units
            # in the last place from the golden file (written on another machine), with
            # the same torch 2.13.0 wheel under ATEN_CPU_CAPABILITY=default, avx2 and
            # avx512 alike (the other cases matched exactly). The scales, trackers and
            # step counts, which say what torch decided, stay exact.
            np.testing.assert_array_max_ulp(value, arrays[f"{name}/{key}"], maxulp=4)
        else:
            np.testing.assert_array_equal(value, arrays[f"{name}/{key}"], err_msg=key)


def test_live_messages_are_torchs():
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.ones(2))
    t_opt, t_scaler = torch.optim.SGD([p], lr=0.1), torch.amp.GradScaler("cpu")
    w, opt, scaler = make()

    def message(call):
        try:
            call()
        except Exception as error:  # noqa: BLE001
            return type(error).__name__, str(error)
        return None

    pairs = [
        (lambda: t_scaler.step(t_opt), lambda: scaler.step(opt)),
        (lambda: t_scaler.scale(torch.ones(())), lambda: scaler.scale(jnp.ones(()))),
        (lambda: t_scaler.update(), lambda: scaler.update()),
        (lambda: t_scaler.step(t_opt), lambda: scaler.step(opt)),
        (lambda: t_scaler.step(t_opt, closure=None), lambda: scaler.step(opt, closure=None)),
        (lambda: t_scaler.load_state_dict({}), lambda: scaler.load_state_dict({})),
        (lambda: t_scaler.scale(1.0), lambda: scaler.scale(1.0)),
    ]
    for torch_call, our_call in pairs:
        assert message(our_call) == message(torch_call)
    assert torch.amp.GradScaler("cpu").state_dict() == GradScaler("cpu").state_dict()

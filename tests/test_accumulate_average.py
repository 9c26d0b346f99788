"""Gradient accumulation (``gradxform.accumulate``) and parameter averages (EMA, SWA).

* ``accumulate(tx, k)``: ``k`` micro-batches make exactly the step ``tx`` makes on their
  mean gradient; the ``k - 1`` others leave the parameters bit for bit; it composes with
  ``skip_non_finite`` (both orders), ``param_groups`` and extra arguments.
* ``average_init`` / ``ema_update`` / ``swa_update``: the averages by hand (numpy float64)
  and, with torch installed, torch 2.13's ``AveragedModel`` (to the last bit or so) with each of
  ``get_ema_multi_avg_fn``, ``get_ema_avg_fn``, ``get_swa_multi_avg_fn`` and its CPU
  default (``get_swa_avg_fn``), integer buffers included.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform
import parity_harness as ph

RNG = np.random.default_rng(7)
PARAMS = {"w": jnp.asarray(RNG.standard_normal((3, 2))), "b": jnp.asarray([-0.0, 1.0, -2.0])}
K = 3


def micro_grads(n, scale=1.0):
    return [jax.tree.map(lambda p: jnp.asarray(scale * RNG.standard_normal(p.shape)), PARAMS) for _ in range(n)]


def accumulate_run(tx, grads_list, params=PARAMS, **extra):
    step = jax.jit(tx.update)
    state = tx.init(params)
    trajectory = []
    for g in grads_list:
        updates, state = step(g, state, params, **extra)
        params = gradxform.apply_updates(params, updates)
        trajectory.append(params)
    return trajectory, state


# --------------------------------------------------------------------------- accumulation


def test_k_micro_batches_make_one_step_on_the_mean_gradient():
    grads = micro_grads(4 * K)
    trajectory, state = accumulate_run(gradxform.accumulate(gradxform.adam(0.1, weight_decay=0.1), K), grads)
    reference = gradxform.adam(0.1, weight_decay=0.1)
    ref_state = reference.init(PARAMS)
    params = PARAMS
    for step in range(4):
        chunk = grads[step * K : (step + 1) * K]
        mean = jax.tree.map(lambda *gs: functools.reduce(lambda a, b: a + b, gs) / K, *chunk)
        previous = trajectory[step * K - 1] if step else PARAMS  # accumulate's own last step
        updates, ref_state = reference.update(mean, ref_state, params)
        params = gradxform.apply_updates(params, updates)
        for i in range(K - 1):  # the micro-batches before the last leave the params alone
            for key in PARAMS:
                got = np.asarray(trajectory[step * K + i][key])
                np.testing.assert_array_equal(got, np.asarray(previous[key]))
                assert np.array_equal(np.signbit(got), np.signbit(np.asarray(previous[key])))  # -0.0 kept
        for key in PARAMS:
            np.testing.assert_allclose(np.asarray(trajectory[step * K + K - 1][key]), np.asarray(params[key]), rtol=1e-14)
    assert int(state.micro_step) == 0
    assert int(jax.tree.leaves(state.inner_state.inner_state[1].step)[0]) == 4  # Adam stepped 4 times


def test_micro_step_counts_and_the_sum_is_kept_in_float32_for_bfloat16():
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    tx = gradxform.accumulate(gradxform.sgd(1.0), 4)
    state = tx.init(params)
    assert state.gradient_sum["w"].dtype == jnp.float32
    # 1 + 2**-9 rounds back to 1 in bfloat16: a bfloat16 sum would give the mean 0.25.
    micro = [jnp.full(3, 1.0, jnp.bfloat16)] + [jnp.full(3, 2.0**-9, jnp.bfloat16)] * 3
    for expected_micro_step, g in zip((1, 2, 3, 0), micro):
        updates, state = tx.update({"w": g}, state, params)
        assert int(state.micro_step) == expected_micro_step
    # The float32 mean (1 + 3 * 2**-9) / 4, rounded to bfloat16 (the gradients' dtype).
    assert float(updates["w"][0]) == -float(jnp.asarray((1 + 3 * 2.0**-9) / 4, jnp.bfloat16)) == -(0.25 + 2.0**-9)
    assert float(state.gradient_sum["w"][0]) == 0.0


def test_skip_non_finite_outside_drops_a_bad_micro_batch():
    grads = micro_grads(K)
    bad = jax.tree.map(lambda g: g.at[0].set(jnp.nan), grads[0])
    tx = gradxform.skip_non_finite(gradxform.accumulate(gradxform.sgd(0.5), K))
    trajectory, state = accumulate_run(tx, [grads[0], bad] + grads[1:])
    reference, _ = accumulate_run(gradxform.accumulate(gradxform.sgd(0.5), K), grads)
    for key in PARAMS:
        np.testing.assert_array_equal(np.asarray(trajectory[-1][key]), np.asarray(reference[-1][key]))
    assert int(state.total_skipped) == 1


def test_skip_non_finite_inside_skips_the_step_a_bad_micro_batch_spoils():
    grads = micro_grads(2 * K)
    grads[1] = jax.tree.map(lambda g: g.at[0].set(jnp.inf), grads[1])
    tx = gradxform.accumulate(gradxform.skip_non_finite(gradxform.sgd(0.5)), K)
    trajectory, state = accumulate_run(tx, grads)
    for key in PARAMS:  # the first step was skipped; the second went through
        np.testing.assert_array_equal(np.asarray(trajectory[K - 1][key]), np.asarray(PARAMS[key]))
    assert not np.array_equal(np.asarray(trajectory[-1]["w"]), np.asarray(PARAMS["w"]))
    assert int(state.inner_state.total_skipped) == 1
    assert bool(jnp.all(jnp.isfinite(state.gradient_sum["w"])))  # the sum was cleared


def test_accumulate_composes_with_param_groups():
    groups = [{"params": "b", "learning_rate": 0.5, "weight_decay": 0.0}]
    tx = gradxform.accumulate(gradxform.param_groups(gradxform.adamw, groups, learning_rate=0.1), K)
    state = tx.init(PARAMS)
    state = gradxform.set_hyperparams(state, group=1, learning_rate=0.2)
    assert float(gradxform.get_hyperparams(state, group=1)["learning_rate"]) == pytest.approx(0.2)
    grads = micro_grads(K)
    step = jax.jit(tx.update, donate_argnums=1)
    for g in grads:
        updates, state = step(g, state, PARAMS)
    mean = jax.tree.map(lambda *gs: functools.reduce(lambda a, b: a + b, gs) / K, *grads)
    for key, lr, wd in (("b", 0.5, 0.0), ("w", 0.2, 0.01)):
        alone = gradxform.adamw(lr, weight_decay=wd)
        expected, _ = alone.update({key: mean[key]}, alone.init({key: PARAMS[key]}), {key: PARAMS[key]})
        np.testing.assert_allclose(np.asarray(updates[key]), np.asarray(expected[key]), rtol=1e-14)


def test_extra_arguments_reach_the_inner_transformation_on_the_completing_call():
    tx = gradxform.accumulate(gradxform.chain(gradxform.sgd(1.0), gradxform.reduce_on_plateau(patience=0)), 2)
    state = tx.init(PARAMS)
    for metric in (1.0, 5.0, 5.0, 5.0):  # the plateau rule sees the 2nd and the 4th only
        _, state = tx.update(PARAMS, state, PARAMS, value=metric)
    plateau = state.inner_state[1]
    assert int(plateau.count) == 2 and float(plateau.best) == 5.0


@pytest.mark.parametrize("k", [0, -1, 2.0, True, None])
def test_num_micro_batches_must_be_a_positive_int(k):
    with pytest.raises(ValueError, match="num_micro_batches must be a positive int"):
        gradxform.accumulate(gradxform.sgd(0.1), k)


# ------------------------------------------------------------------------------- averages


def param_sequence(n, dtype=np.float64):
    return [{"w": RNG.standard_normal((2, 3)).astype(dtype), "b": RNG.standard_normal(3).astype(dtype)} for _ in range(n)]


def test_ema_and_swa_by_hand():
    seq = param_sequence(5)
    ema = {k: np.copy(v) for k, v in seq[0].items()}
    for p in seq[1:]:
        ema = {k: 0.75 * ema[k] + 0.25 * p[k] for k in ema}
    mean = {k: np.mean([p[k] for p in seq], axis=0) for k in seq[0]}
    init = jax.tree.map(jnp.zeros_like, seq[0])
    for lerp in (True, False):
        ema_state = swa_state = gradxform.average_init(init)
        ema_update = jax.jit(functools.partial(gradxform.ema_update, lerp=lerp))
        swa_update = jax.jit(functools.partial(gradxform.swa_update, lerp=lerp))
        for p in seq:
            ema_state = ema_update(ema_state, p, 0.75)
            swa_state = swa_update(swa_state, p)
        for k in ema:
            np.testing.assert_allclose(np.asarray(ema_state.average[k]), ema[k], rtol=1e-14)
            np.testing.assert_allclose(np.asarray(swa_state.average[k]), mean[k], rtol=1e-6 if lerp else 1e-14)
        assert int(ema_state.count) == int(swa_state.count) == 5


def test_average_state_under_jit_with_donation_and_a_traced_decay():
    update = jax.jit(gradxform.ema_update, donate_argnums=0)
    state = gradxform.average_init(PARAMS)
    for decay in (0.9, 0.5, 0.99):
        state = update(state, PARAMS, jnp.asarray(decay))
    assert update._cache_size() == 1 and int(state.count) == 3


def test_ema_decay_is_checked_and_swa_lerp_refuses_integers():
    with pytest.raises(ValueError, match=r"Invalid decay value 1.5 provided. Please provide a value in \[0,1\] range."):
        gradxform.ema_update(gradxform.average_init(PARAMS), PARAMS, 1.5)
    state = gradxform.average_init({"n": jnp.asarray(3, jnp.int32)})
    with pytest.raises(ValueError, match="leaf at 'n' has integer dtype int32"):
        gradxform.swa_update(state, {"n": jnp.asarray(4, jnp.int32)}, lerp=True)


TORCH_FORMS = {
    # name: (AveragedModel keyword arguments maker, gradxform update)
    "ema_multi": (lambda swa: {"multi_avg_fn": swa.get_ema_multi_avg_fn(0.9)}, lambda s, p: gradxform.ema_update(s, p, 0.9)),
    "ema_avg": (lambda swa: {"avg_fn": swa.get_ema_avg_fn(0.9)}, lambda s, p: gradxform.ema_update(s, p, 0.9, lerp=False)),
    "swa_default": (lambda swa: {}, lambda s, p: gradxform.swa_update(s, p)),
    "swa_multi": (lambda swa: {"multi_avg_fn": swa.get_swa_multi_avg_fn()}, lambda s, p: gradxform.swa_update(s, p, lerp=True)),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("form", list(TORCH_FORMS))
def test_averages_match_torch_averaged_model(form, dtype):
    """Bit for bit, except the lerp forms' floats: torch's CPU lerp fuses its
    multiply-add (one rounding), XLA rounds twice; those agree to the last bit or so."""
    torch = pytest.importorskip("torch")
    swa = torch.optim.swa_utils
    make_kwargs, ours = TORCH_FORMS[form]
    use_buffers = form in ("ema_multi", "swa_default")  # torch refuses integer buffers with the others
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).to(getattr(torch, dtype))
    averaged = swa.AveragedModel(model, use_buffers=use_buffers, **make_kwargs(swa))

    def snapshot():
        tensors = list(model.parameters()) + (list(model.buffers()) if use_buffers else [])
        return [t.detach().numpy().copy() for t in tensors]

    state = gradxform.average_init([jnp.asarray(x) for x in snapshot()])
    rng = np.random.default_rng(3)
    for _ in range(6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.from_numpy(rng.standard_normal(tuple(p.shape)).astype(dtype)))
            model(torch.from_numpy(rng.standard_normal((5, 3)).astype(dtype)))  # moves BN's buffers
        averaged.update_parameters(model)
        state = ours(state, [jnp.asarray(x) for x in snapshot()])
    theirs = list(averaged.module.parameters()) + (list(averaged.module.buffers()) if use_buffers else [])
    for mine, their in zip(state.average, theirs):
        if np.issubdtype(np.asarray(mine).dtype, np.integer) or form in ("ema_avg", "swa_default"):
            np.testing.assert_array_equal(np.asarray(mine), their.detach().numpy())
        else:
            assert ph.rel_err(mine, their.detach().numpy()) <= (1e-6 if dtype == "float32" else 1e-14)
    assert int(state.count) == int(averaged.n_averaged)

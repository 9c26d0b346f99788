"""Composition without silent failures: gradxform inside optax's combinators and back.

* Extra arguments (``value=``, ``value_fn=``) flow through ``optax.chain`` and optax's
  other combinators to gradxform's transformations, and through gradxform's wrappers;
  a transformation that needs one and does not get it raises.
* ``optax.inject_hyperparams(gradxform.<alias>)`` works under ``jax.jit`` (eager or
  jitted ``init`` and ``update`` in any mix), and its state's values and schedules drive
  the optimizer.
* ``get_hyperparams`` / ``set_hyperparams`` reach a gradxform state inside any wrapper
  (gradxform's and optax's, dict states included), choose by ``group=`` / ``path=``,
  and a jitted, donating step then uses the new values without recompiling.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform

PARAMS = {"a": jnp.asarray([1.0, -2.0]), "b": jnp.asarray([0.5, 0.25, 3.0])}
GRADS = {"a": jnp.asarray([0.5, -1.0]), "b": jnp.asarray([2.0, 1.0, -0.5])}


def quadratic(params):
    return sum(jnp.sum((p - 1.5) ** 2) for p in jax.tree.leaves(params))


# ------------------------------------------------------------------------ extra arguments


def test_gradxform_transformations_are_optax_extra_args_transformations():
    for tx in (
        gradxform.adam(1e-3),
        gradxform.reduce_on_plateau(),
        gradxform.lbfgs(),
        gradxform.chain(gradxform.scale(1.0)),
        gradxform.param_groups(gradxform.sgd, [{"params": "a"}]),
        gradxform.accumulate(gradxform.sgd(0.1), 2),
        gradxform.skip_non_finite(gradxform.sgd(0.1)),
        gradxform.as_matrices(gradxform.sgd(0.1)),
    ):
        assert isinstance(tx, optax.GradientTransformationExtraArgs)
        assert isinstance(tx, gradxform.GradientTransformation)


def test_optax_chain_gives_value_to_gradxform_reduce_on_plateau():
    """The learning rate is halved after each metric that does not improve (patience 0)."""
    tx = optax.chain(gradxform.sgd(0.1), gradxform.reduce_on_plateau(factor=0.5, patience=0))
    state = tx.init(PARAMS)
    step = jax.jit(tx.update)
    scales = []
    for metric in (3.0, 3.0, 3.0, 1.0):
        updates, state = step(GRADS, state, PARAMS, value=metric)
        scales.append(float(updates["a"][0]) / (-0.1 * float(GRADS["a"][0])))
    assert scales == pytest.approx([1.0, 0.5, 0.25, 0.25])


COMBINATORS = {
    "optax.chain": lambda tx: optax.chain(optax.clip_by_global_norm(1e6), tx),
    "optax.multi_transform": lambda tx: optax.multi_transform({"all": tx}, jax.tree.map(lambda _: "all", PARAMS)),
    "optax.masked": lambda tx: optax.masked(tx, jax.tree.map(lambda _: True, PARAMS)),
    "optax.MultiSteps": lambda tx: optax.MultiSteps(tx, every_k_schedule=1),
    "gradxform.chain": lambda tx: gradxform.chain(optax.clip_by_global_norm(1e6), tx),
    "gradxform.skip_non_finite": lambda tx: gradxform.skip_non_finite(tx),
}


def test_value_fn_reaches_lbfgs_through_optax_chain():
    tx = COMBINATORS["optax.chain"](gradxform.lbfgs())  # no line search: cheaper to compile
    value, grads = jax.value_and_grad(quadratic)(PARAMS)
    updates, _ = jax.jit(functools.partial(tx.update, value_fn=quadratic))(grads, tx.init(PARAMS), PARAMS, value=value)
    for leaf in jax.tree.leaves(gradxform.apply_updates(PARAMS, updates)):
        np.testing.assert_allclose(np.asarray(leaf), 1.5, rtol=1e-6)


@pytest.mark.parametrize("name", list(COMBINATORS))
def test_extra_arguments_pass_every_combinator_and_lbfgs_refuses_without_them(name):
    tx = COMBINATORS[name](gradxform.chain(gradxform.sgd(0.1), gradxform.reduce_on_plateau(factor=0.5, patience=0)))
    state = tx.init(PARAMS)
    step = jax.jit(tx.update)
    for metric in (2.0, 2.0):
        updates, state = step(GRADS, state, PARAMS, value=metric)
    np.testing.assert_allclose(np.asarray(updates["a"]), -0.1 * 0.5 * np.asarray(GRADS["a"]), rtol=1e-6)
    # Without the objective L-BFGS refuses, whatever wraps it.
    tx = COMBINATORS[name](gradxform.lbfgs())
    with pytest.raises(ValueError, match="lbfgs needs params and the objective"):
        tx.update(GRADS, tx.init(PARAMS), PARAMS)


def test_value_reaches_each_group_through_param_groups():
    def sgd_on_plateau(**kwargs):
        return gradxform.chain(gradxform.sgd(**kwargs), gradxform.reduce_on_plateau(factor=0.5, patience=0))

    tx = optax.chain(gradxform.param_groups(sgd_on_plateau, [{"params": "a", "learning_rate": 0.2}], learning_rate=0.1))
    state = tx.init(PARAMS)
    for metric in (2.0, 2.0):
        updates, state = jax.jit(tx.update)(GRADS, state, PARAMS, value=metric)
    np.testing.assert_allclose(np.asarray(updates["a"]), -0.2 * 0.5 * np.asarray(GRADS["a"]))
    np.testing.assert_allclose(np.asarray(updates["b"]), -0.1 * 0.5 * np.asarray(GRADS["b"]))


# ------------------------------------------------------------------ optax.inject_hyperparams


@pytest.mark.parametrize("name", ["adam", "sgd", "nadam", "rmsprop"])
@pytest.mark.parametrize("jit_init,jit_update", [(False, True), (True, False)])
def test_optax_inject_hyperparams_works_under_jit(name, jit_init, jit_update):
    tx = optax.inject_hyperparams(getattr(gradxform, name))(learning_rate=0.1)
    init = jax.jit(tx.init) if jit_init else tx.init
    update = jax.jit(tx.update) if jit_update else tx.update
    state = init(PARAMS)
    reference = getattr(gradxform, name)(0.1)
    ref_state = reference.init(PARAMS)
    for _ in range(2):
        updates, state = update(GRADS, state, PARAMS)
        expected, ref_state = reference.update(GRADS, ref_state, PARAMS)
        for key in PARAMS:
            np.testing.assert_allclose(np.asarray(updates[key]), np.asarray(expected[key]), rtol=1e-6)


def test_optax_inject_hyperparams_state_and_schedules_drive_the_optimizer():
    tx = optax.inject_hyperparams(gradxform.adam)(learning_rate=0.1)
    state = tx.init(PARAMS)
    state.hyperparams["learning_rate"] = jnp.asarray(0.05)  # optax's way
    state.hyperparams["weight_decay"] = jnp.asarray(0.5)  # a default 0, switched on
    updates, state = jax.jit(tx.update)(GRADS, state, PARAMS)
    reference = gradxform.adam(0.05, weight_decay=0.5)
    expected, _ = reference.update(GRADS, reference.init(PARAMS), PARAMS)
    for key in PARAMS:
        np.testing.assert_allclose(np.asarray(updates[key]), np.asarray(expected[key]), rtol=1e-6)
    # set_hyperparams changes optax's copy too (the one optax passes at each update).
    state = gradxform.set_hyperparams(state, learning_rate=0.01)
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(0.01)
    assert float(gradxform.get_hyperparams(state)["learning_rate"]) == pytest.approx(0.01)
    # An optax schedule takes effect.
    tx = optax.inject_hyperparams(gradxform.sgd)(learning_rate=optax.linear_schedule(1.0, 0.0, 4))
    state = tx.init(PARAMS)
    lrs = []
    for _ in range(3):
        updates, state = jax.jit(tx.update)(GRADS, state, PARAMS)
        lrs.append(-float(updates["a"][0]) / float(GRADS["a"][0]))
    assert lrs == pytest.approx([1.0, 0.75, 0.5])


def test_a_gradxform_state_changed_to_zero_weight_decay_keeps_its_structure():
    """set_hyperparams(weight_decay=0.0) then an eager update: the decay is a no-op,
    not a different chain (which used to fail: 'chain of 2 transformations got a state
    with 3 entries')."""
    tx = gradxform.adam(0.1, weight_decay=0.1)
    state = gradxform.set_hyperparams(tx.init(PARAMS), weight_decay=0.0)
    updates, _ = tx.update(GRADS, state, PARAMS)
    reference = gradxform.adam(0.1)
    expected, _ = reference.update(GRADS, reference.init(PARAMS), PARAMS)
    for key in PARAMS:
        np.testing.assert_array_equal(np.asarray(updates[key]), np.asarray(expected[key]))


# --------------------------------------------------------------- hyperparameters in wrappers

LABELS = {"a": "first", "b": "second"}



WRAPPERS = {
    "gradxform.chain": lambda: gradxform.chain(optax.clip_by_global_norm(1e6), gradxform.sgd(0.1)),
    "optax.chain": lambda: optax.chain(optax.clip_by_global_norm(1e6), gradxform.sgd(0.1)),
    "optax.multi_transform": lambda: optax.multi_transform(
        {"first": gradxform.sgd(0.1), "second": gradxform.sgd(0.1)}, LABELS
    ),
    "optax.partition": lambda: optax.partition({"first": gradxform.sgd(0.1), "second": gradxform.sgd(0.1)}, LABELS),
    "optax.MultiSteps": lambda: optax.MultiSteps(gradxform.sgd(0.1), every_k_schedule=1),
    "optax.masked": lambda: optax.masked(gradxform.sgd(0.1), {"a": True, "b": True}),
    "gradxform.skip_non_finite": lambda: gradxform.skip_non_finite(gradxform.sgd(0.1)),
    "gradxform.accumulate": lambda: gradxform.accumulate(gradxform.sgd(0.1), 1),
    "gradxform.as_matrices": lambda: gradxform.as_matrices(gradxform.sgd(0.1)),
    "gradxform.param_groups": lambda: gradxform.param_groups(gradxform.sgd, [{"params": "a"}], learning_rate=0.1),
    "param_groups in multi_transform": lambda: optax.multi_transform(
        {"first": gradxform.param_groups(gradxform.sgd, [{"params": "a"}], learning_rate=0.1), "second": gradxform.sgd(0.1)},
        LABELS,
    ),
}


def donating_step(tx):
    """A jitted step donating params and state, and the list it appends to at each trace."""
    traces = []

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state):
        traces.append(1)
        updates, state = tx.update(GRADS, state, params)
        return gradxform.apply_updates(params, updates), state

    return step, traces


@pytest.mark.parametrize("name", list(WRAPPERS))
def test_hyperparameters_are_reached_inside_wrappers_under_jit_and_donation(name):
    tx = WRAPPERS[name]()
    step, traces = donating_step(tx)

    params = jax.tree.map(jnp.array, PARAMS)
    state = tx.init(params)
    params, state = step(params, state)
    before = {k: np.asarray(v) for k, v in params.items()}
    state = gradxform.set_hyperparams(state, learning_rate=0.05)  # every set it holds
    params, state = step(params, state)
    for key in PARAMS:
        np.testing.assert_allclose(before[key] - np.asarray(params[key]), 0.05 * np.asarray(GRADS[key]), rtol=1e-6)
    assert len(traces) == 1 and step._cache_size() == 1
    found = [gradxform.get_hyperparams(state, path=p) for p in _locations(state)]
    assert all(float(h["learning_rate"]) == pytest.approx(0.05) for h in found)


def _locations(state):
    """The locations of the hyperparameter sets, read from the error message of a
    get_hyperparams with an impossible group (the message lists them)."""
    try:
        gradxform.get_hyperparams(state, group="no such group")
    except ValueError as error:
        listed = str(error).split("this state holds: ")[1]
    import re

    return re.findall(r"at '([^']*)'", listed) or [""]


def test_group_chooses_an_optax_multi_transform_label():
    tx = WRAPPERS["optax.multi_transform"]()
    state = tx.init(PARAMS)
    with pytest.raises(ValueError, match=r"2 sets of hyperparameters \(group 'first' at 'inner_states/first/inner_state'; group 'second'"):
        gradxform.get_hyperparams(state)
    state = gradxform.set_hyperparams(state, group="second", learning_rate=0.5)
    assert float(gradxform.get_hyperparams(state, group="first")["learning_rate"]) == pytest.approx(0.1)
    assert float(gradxform.get_hyperparams(state, group="second")["learning_rate"]) == pytest.approx(0.5)
    updates, _ = jax.jit(tx.update)(GRADS, state, PARAMS)
    np.testing.assert_allclose(np.asarray(updates["b"]), -0.5 * np.asarray(GRADS["b"]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(updates["a"]), -0.1 * np.asarray(GRADS["a"]), rtol=1e-6)


def test_path_chooses_among_nested_or_chained_sets():
    tx = gradxform.chain(gradxform.sgd(0.1), gradxform.adam(1e-3))
    state = tx.init(PARAMS)
    state = gradxform.set_hyperparams(state, path="1", learning_rate=0.5)
    assert float(gradxform.get_hyperparams(state, path="0")["learning_rate"]) == pytest.approx(0.1)
    assert float(gradxform.get_hyperparams(state, path="1")["learning_rate"]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"no hyperparameters match path='2'; this state holds: at '0'; at '1'"):
        gradxform.get_hyperparams(state, path="2")
    # A set without the name among those selected: refused, naming it, not skipped.
    with pytest.raises(KeyError, match=r"'betas' in 1 of the 2 sets.*at '0' has \['learning_rate'\]"):
        gradxform.set_hyperparams(state, betas=(0.8, 0.9))


@pytest.mark.parametrize(
    "make",
    [
        lambda: gradxform.skip_non_finite(gradxform.sgd(0.1)),
        lambda: gradxform.chain(gradxform.sgd(0.1), gradxform.reduce_on_plateau()),
        lambda: gradxform.accumulate(gradxform.adam(0.1), 2),
        lambda: gradxform.param_groups(gradxform.adam, [{"params": "a"}]),
    ],
    ids=["skip_non_finite", "reduce_on_plateau", "accumulate", "param_groups"],
)
def test_an_eagerly_built_state_can_be_donated(make):
    """No buffer appears twice in a state made by an eager init (donating one twice fails)."""
    tx = make()
    state = tx.init(PARAMS)
    pointers = [leaf.unsafe_buffer_pointer() for leaf in jax.tree.leaves(state)]
    assert len(pointers) == len(set(pointers))
    jax.jit(tx.update, donate_argnums=1)(GRADS, state, PARAMS)


def test_a_state_without_gradxform_hyperparameters_says_where_optax_keeps_them():
    state = optax.inject_hyperparams(optax.adam)(learning_rate=0.1).init(PARAMS)
    with pytest.raises(ValueError, match=r"holds no hyperparameters.*optax.inject_hyperparams keeps its own"):
        gradxform.get_hyperparams(state)


# ------------------------------------------------------- hyperparameters given as JAX arrays


def test_set_hyperparams_refuses_a_hyperparameter_built_from_a_jax_array():
    """The update uses the array given at build time, so a set value would be silently
    overwritten at the next update: refused, naming it. A number-given one still sets."""
    tx = gradxform.adam(jnp.asarray(0.1))
    state = tx.init(PARAMS)
    assert state.caller_owned == {"learning_rate": None}
    with pytest.raises(ValueError, match=r"cannot set 'learning_rate' at the root: the transformation was built "
                       r"with a JAX array.*Give learning_rate as a Python number.*or change the array you pass"):
        gradxform.set_hyperparams(state, learning_rate=0.01)
    # All or nothing: with a settable name beside it, nothing is changed either.
    with pytest.raises(ValueError, match=r"cannot set 'learning_rate'"):
        gradxform.set_hyperparams(state, eps=1e-3, learning_rate=0.01)
    state = gradxform.set_hyperparams(state, eps=1e-3)
    updates, state = tx.update(GRADS, state, PARAMS)
    reference = gradxform.adam(0.1, eps=1e-3)
    expected, _ = reference.update(GRADS, reference.init(PARAMS), PARAMS)
    for key in PARAMS:
        np.testing.assert_allclose(np.asarray(updates[key]), np.asarray(expected[key]), rtol=1e-6)
    assert float(gradxform.get_hyperparams(state)["learning_rate"]) == pytest.approx(0.1)  # recorded
    # Inside a wrapper, the message names where.
    state = gradxform.chain(gradxform.sgd(0.1), gradxform.sgd(jnp.asarray(0.2))).init(PARAMS)
    with pytest.raises(ValueError, match=r"cannot set 'learning_rate' at '1'"):
        gradxform.set_hyperparams(state, learning_rate=0.5)
    state = gradxform.set_hyperparams(state, path="0", learning_rate=0.5)
    assert float(gradxform.get_hyperparams(state, path="0")["learning_rate"]) == 0.5


def test_a_number_built_state_records_no_caller_owned_names():
    """None, as in a state built from three fields: the tree structure of before."""
    state = gradxform.adam(0.1).init(PARAMS)
    assert state.caller_owned is None
    assert jax.tree.structure(state) == jax.tree.structure(
        gradxform.InjectHyperparamsState(state.count, state.hyperparams, state.inner_state)
    )


@pytest.mark.parametrize("jitted", [False, True])
def test_set_hyperparams_still_changes_optax_inject_hyperparams_copy(jitted):
    tx = optax.inject_hyperparams(gradxform.sgd)(learning_rate=0.1)
    init, update = (jax.jit(tx.init), jax.jit(tx.update)) if jitted else (tx.init, tx.update)
    state = init(PARAMS)
    assert "learning_rate" in gradxform.get_hyperparams(state)
    state = gradxform.set_hyperparams(state, learning_rate=0.5)
    updates, state = update(GRADS, state, PARAMS)
    np.testing.assert_allclose(np.asarray(updates["a"]), -0.5 * np.asarray(GRADS["a"]), rtol=1e-6)


def test_a_state_with_caller_owned_names_jits_donates_and_round_trips(tmp_path):
    tx = gradxform.adam(jnp.asarray(0.1), weight_decay=0.01)
    step, traces = donating_step(tx)

    params = jax.tree.map(jnp.array, PARAMS)
    params, state = step(params, tx.init(params))
    assert state.caller_owned == {"learning_rate": None}
    state = gradxform.set_hyperparams(state, weight_decay=0.5)
    params, state = step(params, state)
    assert len(traces) == 1 and float(gradxform.get_hyperparams(state)["weight_decay"]) == 0.5

    back = gradxform.checkpoint.from_numpy_dict(gradxform.checkpoint.to_numpy_dict(state))
    assert jax.tree.structure(back) == jax.tree.structure(state) and back.caller_owned == {"learning_rate": None}
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match=r"cannot set 'learning_rate'"):
        gradxform.set_hyperparams(back, learning_rate=0.01)

    ocp = pytest.importorskip("orbax.checkpoint")
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "state", gradxform.checkpoint.to_orbax(state))
    target = jax.eval_shape(tx.init, params)
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "state", gradxform.checkpoint.to_orbax(target))
    typed = gradxform.checkpoint.from_orbax(restored, target)
    assert jax.tree.structure(typed) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(typed), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    params, _ = step(params, typed)
    assert len(traces) == 1

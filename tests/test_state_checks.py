"""The core refuses a state that does not fit its parameters (issue 14, "Safe by default").

A state buffer whose shape differs from its parameter's but broadcasts against it (an
``exp_avg`` of shape ``(1, 3)`` for a ``(3,)`` parameter, restored from another model)
used to reshape the update, and then the parameter, silently. ``update`` now raises a
``ValueError`` naming the path, while it is traced (``jax.eval_shape`` suffices: the
check costs nothing in the compiled step). The same holds for a hyperparameter, given,
stored or returned by a schedule, that is not a scalar.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest

import gradxform

ALIASES = (
    "sgd asgd rprop adagrad adadelta rmsprop adam adamw adamax sparse_adam nadam radam adafactor muon lbfgs".split()
)
VARIANTS = {  # options that add state fields
    "sgd": dict(momentum=0.9),
    "adam": dict(amsgrad=True),
    "rmsprop": dict(momentum=0.9, centered=True),
}


def loss(params):
    return sum(jnp.sum(x**2) for x in jax.tree.leaves(params))


def params_for(alias):
    if alias == "muon":
        return {"m": jnp.ones((2, 3)), "n": jnp.ones((3, 2))}
    return {"w": jnp.linspace(1.0, 2.0, 3), "s": jnp.asarray(2.0), "m": jnp.ones((2, 3))}


def make(alias):
    if alias == "lbfgs":
        return gradxform.lbfgs(max_iter=2)
    return getattr(gradxform, alias)(0.1, **VARIANTS.get(alias, {}))


def traced_update(alias, tx, state, params):
    """Traces one update (no compilation, no computation) and returns its output shapes."""
    extra = {"value_fn": loss} if alias == "lbfgs" else {}
    return jax.eval_shape(lambda s: tx.update(jax.grad(loss)(params), s, params, **extra), state)


def named_fields(path):
    """The last NamedTuple field and the dict keys of a state path (``exp_avg``, ``'w'``),
    as the message names them (``hyperparams['lr']`` is "hyperparameter 'lr'")."""
    field = [k.name for k in path if isinstance(k, jax.tree_util.GetAttrKey)][-1:]
    return [f.replace("hyperparams", "hyperparameter") for f in field] + [
        repr(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)
    ]


def broadcastable_mutations(state):
    """``(path, state)`` pairs: each array leaf given a leading axis of 1 in turn."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
    for i, (path, leaf) in enumerate(leaves):
        if not hasattr(leaf, "shape") or leaf.size == 0:
            continue
        mutated = [x for _, x in leaves]
        mutated[i] = jnp.reshape(leaf, (1,) + leaf.shape)
        yield path, treedef.unflatten(mutated)


@pytest.mark.parametrize("alias", ALIASES)
def test_every_state_leaf_of_another_shape_is_refused_with_its_path(alias):
    tx, params = make(alias), params_for(alias)
    state = tx.init(params)
    good = traced_update(alias, tx, state, params)[0]
    assert jax.tree.map(lambda u: u.shape, good) == jax.tree.map(jnp.shape, params)
    count = 0
    for path, bad_state in broadcastable_mutations(state):
        with pytest.raises(ValueError) as info:
            traced_update(alias, tx, bad_state, params)
        message = str(info.value)
        for name in named_fields(path):
            assert name in message, (jax.tree_util.keystr(path), message)
        count += 1
    assert count >= 4


def test_restored_exp_avg_of_shape_1_3_for_a_3_parameter():
    params = {"layer": {"b": jnp.zeros(3)}}
    tx = gradxform.adam(0.1)
    state = tx.init(params)
    adam_state = state.inner_state[0]
    restored = state._replace(
        inner_state=(adam_state._replace(exp_avg={"layer": {"b": jnp.zeros((1, 3))}}),) + state.inner_state[1:]
    )
    expected = (
        "the optimizer state does not match the updates: at ['layer']['b'] the update has shape (3,) "
        "and dtype float64, the state's exp_avg has shape (1, 3) and dtype float64 where shape (3,) "
        "is expected (a state built or restored for other parameters?)"
    )
    for update in (tx.update, jax.jit(tx.update)):
        with pytest.raises(ValueError, match=re.escape(expected)):
            update({"layer": {"b": jnp.ones(3)}}, restored, params)
    # Without params the state's buffers stand for the parameters: refused too.
    with pytest.raises(ValueError, match=re.escape("at ['layer']['b'] the parameter has shape (1, 3)")):
        jax.jit(tx.update)({"layer": {"b": jnp.ones(3)}}, restored)


def test_a_complex_parameter_needs_complex_buffers():
    tx = gradxform.scale_by_adam()
    state = tx.init(jnp.zeros(3, jnp.complex128))
    state = state._replace(exp_avg=jnp.zeros(3))
    with pytest.raises(ValueError, match="a complex parameter needs complex buffers"):
        tx.update(jnp.ones(3, jnp.complex128), state)


def test_state_of_another_tree_is_refused():
    tx = gradxform.scale_by_sgd(momentum=0.9)
    state = tx.init({"a": jnp.zeros(2), "b": jnp.zeros(2)})
    with pytest.raises(ValueError, match=re.escape("the state's momentum_buffer has a leaf at ['b'], which the updates do not")):
        tx.update({"a": jnp.ones(2)}, state)


@pytest.mark.parametrize("alias", ["sgd", "adam", "asgd", "lbfgs"])
def test_a_schedule_returning_a_non_scalar_is_refused(alias):
    schedule = lambda count: jnp.full((1,), 0.1)  # noqa: E731
    if alias == "lbfgs":
        # L-BFGS's options are not schedules; a non-scalar lr array is refused like torch's.
        with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
            gradxform.lbfgs(jnp.ones(2))
        return
    tx = getattr(gradxform, alias)(schedule)
    params = {"s": jnp.asarray(1.0)}  # a 0-d parameter: a (1,) rate would make it (1,)
    message = (
        "the value returned by the schedule of hyperparameter 'learning_rate' has shape (1,): "
        "a hyperparameter must be a scalar (shape ()); another shape would broadcast the updates, "
        "and so the parameters"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        tx.init(params)


def test_a_stored_hyperparameter_of_another_shape_is_refused_when_update_is_traced():
    tx = gradxform.inject_hyperparams(gradxform.scale, step_size=0.5)
    state = tx.init(jnp.zeros(()))
    restored = state._replace(hyperparams={"step_size": jnp.ones(1)})
    with pytest.raises(ValueError, match=re.escape("the state's hyperparameter 'step_size' has shape (1,)")):
        jax.eval_shape(tx.update, jnp.ones(()), restored)
    restored = state._replace(count=jnp.zeros(1, jnp.int32))
    with pytest.raises(ValueError, match=re.escape("the state's count has shape (1,)")):
        jax.eval_shape(tx.update, jnp.ones(()), restored)


def test_a_non_scalar_constant_hyperparameter_is_refused_at_once():
    with pytest.raises(ValueError, match=re.escape("hyperparameter 'step_size' has shape (3,)")):
        gradxform.inject_hyperparams(gradxform.scale, step_size=jnp.ones(3))
    # The aliases take torch's 1-element arrays (made scalars), and refuse others as torch.
    params = jnp.asarray(1.0)
    tx = gradxform.sgd(jnp.asarray([0.5]))
    updates, _ = tx.update(jnp.asarray(2.0), tx.init(params), params)
    assert updates.shape == () and float(updates) == -1.0


def test_lbfgs_state_of_another_size_is_refused():
    tx = gradxform.lbfgs(max_iter=2)
    state = tx.init(jnp.zeros(3))
    bad = gradxform.ScaleByLbfgsState(state.lbfgs._replace(d=jnp.zeros(1)))
    with pytest.raises(ValueError, match=re.escape("the L-BFGS state does not match the parameters: its d has shape (1,) where (3,) is expected")):
        tx.update(jnp.ones(3), bad, jnp.zeros(3), value_fn=loss)
    other = gradxform.lbfgs().init(jnp.ones(2)).lbfgs
    with pytest.raises(ValueError, match="its d has shape \\(2,\\) where \\(3,\\) is expected"):
        gradxform.minimize(loss, jnp.ones(3), state=other)

"""Trees without leaves (issue 14, "Safe by default").

``{}``, ``[]``, ``None`` and trees of ``None`` (``{"a": None}``) hold no parameter. For
them every transformation's ``init`` works and ``update`` returns an update of the same
structure (as optax does), eagerly and under ``jax.jit``, with or without ``params``.
"""

from __future__ import annotations

import jax
import optax
import pytest

import gradxform
from transform_cases import FACTORIES

EMPTY_TREES = {
    "dict": {},
    "list": [],
    "None": None,
    "dict-of-None": {"a": None},
    "nested-None": ({"a": None, "b": [None]}, []),
}
ALIASES = (
    "sgd asgd rprop adagrad adadelta rmsprop adam adamw adamax sparse_adam nadam radam adafactor muon lbfgs".split()
)


def structure(tree):
    return jax.tree.structure(tree, is_leaf=lambda x: x is None)


def extra(name):
    if name == "lbfgs":
        return {"value_fn": lambda params: 0.0}
    if name == "reduce_on_plateau":
        return {"value": 1.0}
    return {}


def check_empty_update(tx, name, tree):
    state = tx.init(tree)
    for params in (tree, None):
        updates, new_state = tx.update(tree, state, params, **extra(name))
        assert structure(updates) == structure(tree), (name, params, updates)
        assert structure(new_state) == structure(state)
        jitted, _ = jax.jit(lambda u, s, p: tx.update(u, s, p, **extra(name)))(tree, state, params)
        assert structure(jitted) == structure(tree)
    assert structure(gradxform.apply_updates(tree, updates)) == structure(tree)
    # A second update from the updated state (e.g. inside a training loop).
    updates, _ = tx.update(tree, new_state, tree, **extra(name))
    assert structure(updates) == structure(tree)


def test_the_aliases_are_in_the_table():
    assert set(ALIASES) <= set(FACTORIES)


@pytest.mark.parametrize("tree_name", list(EMPTY_TREES))
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_every_transformation_returns_an_empty_update_of_the_same_structure(name, tree_name):
    for build in FACTORIES[name]:
        check_empty_update(build(), name, EMPTY_TREES[tree_name])


@pytest.mark.parametrize("tree_name", list(EMPTY_TREES))
def test_options_needing_params_accept_empty_trees_without_them(tree_name):
    """Weight decay, ASGD, Adafactor: nothing to decay or scale, so no params needed."""
    tree = EMPTY_TREES[tree_name]
    for tx in (gradxform.sgd(0.1, weight_decay=0.1), gradxform.scale_by_asgd(), gradxform.scale_by_adafactor()):
        updates, _ = tx.update(tree, tx.init(tree))
        assert structure(updates) == structure(tree)


@pytest.mark.parametrize("tree_name", ["dict", "list", "dict-of-None", "nested-None"])
@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "adagrad", "rmsprop", "adamax", "nadam", "radam", "adadelta", "rprop", "adafactor"])
def test_same_structure_as_optax(name, tree_name):
    tree = EMPTY_TREES[tree_name]
    reference = getattr(optax, name)(0.1)
    expected, _ = reference.update(tree, reference.init(tree), tree)
    tx = getattr(gradxform, name)(0.1)
    updates, _ = tx.update(tree, tx.init(tree), tree)
    assert structure(updates) == structure(expected)


def test_lbfgs_does_not_call_the_objective_for_an_empty_tree():
    def value_fn(params):
        raise AssertionError("called")

    tx = gradxform.lbfgs()
    state = tx.init({})
    updates, new_state = tx.update({}, state, {}, value_fn=value_fn)
    assert updates == {} and int(new_state.lbfgs.func_evals) == 0


def test_flatten_still_refuses_missing_gradients():
    """``None`` is an empty subtree, so a ``None`` update for an array parameter is a mismatch."""
    params = {"a": jax.numpy.ones(3), "b": jax.numpy.ones(3)}
    tx = gradxform.flatten(gradxform.adam(0.1))
    state = tx.init(params)
    with pytest.raises(ValueError, match="the updates give"):
        tx.update({"a": None, "b": jax.numpy.ones(3)}, state)
    params = {"a": jax.numpy.ones(3), "b": None}
    state = tx.init(params)
    with pytest.raises(ValueError, match="tree structure"):
        tx.update({"a": None, "b": jax.numpy.ones(3)}, state, params)

"""One step counter per transformation in the core, and the per-leaf form it also takes.

``init`` makes one ``step`` (and NAdam's ``mu_product``, ASGD's ``eta`` and ``mu``) for
all the leaves, as optax's ``count``; ``update`` also takes a tree of per-leaf scalars
(torch's per-parameter ``state["step"]``, which torch_compat fills) and keeps the form it
is given. These tests need no torch: the per-leaf numbers are checked against each leaf
run on its own, whose numbers the parity tests check against torch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform
from gradxform import _numerics, checkpoint

# Every optimizer with a scalar state, with options that make the step matter.
OPTIMIZERS = {
    "sgd": lambda: gradxform.sgd(0.1, momentum=0.9, dampening=0.1, nesterov=False),
    "asgd": lambda: gradxform.asgd(0.05, lambd=0.1, t0=2.0),
    "rprop": lambda: gradxform.rprop(0.1),
    "adagrad": lambda: gradxform.adagrad(0.1, lr_decay=0.1),
    "adadelta": lambda: gradxform.adadelta(),
    "rmsprop": lambda: gradxform.rmsprop(0.01, momentum=0.5, centered=True),
    "adam": lambda: gradxform.adam(0.1, amsgrad=True),
    "adamw": lambda: gradxform.adamw(0.1),
    "adamax": lambda: gradxform.adamax(0.1),
    "sparse_adam": lambda: gradxform.sparse_adam(0.1),
    "nadam": lambda: gradxform.nadam(0.1),
    "radam": lambda: gradxform.radam(0.1),  # rectified from step 6 on: the runs go past it
    "adafactor": lambda: gradxform.adafactor(0.1, weight_decay=0.1),
    "muon": lambda: gradxform.muon(0.1),
}
SCALAR_FIELDS = ("step", "mu_product", "eta", "mu")


def params_and_grads(seed: int, steps: int):
    """Two 2-D leaves (Muon takes matrices only) and ``steps`` gradients for them."""
    rng = np.random.default_rng(seed)
    params = {"a": jnp.asarray(rng.normal(size=(3, 4))), "b": jnp.asarray(rng.normal(size=(4, 2)))}
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params) for _ in range(steps)]
    return params, grads


def scalar_fields(state):
    """``(name, value)`` of the scalar-state fields in a nested optimizer state."""
    out = []

    def walk(node):
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            for name in node._fields:
                value = getattr(node, name)
                if name in SCALAR_FIELDS:
                    out.append((name, value))
                else:
                    walk(value)
        elif isinstance(node, (tuple, list)):
            for child in node:
                walk(child)

    walk(state)
    return out


def map_scalar_fields(state, fn):
    """``state`` with ``fn(value)`` in place of each scalar-state field."""
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(
            *(fn(v) if n in SCALAR_FIELDS else map_scalar_fields(v, fn) for n, v in zip(state._fields, state))
        )
    if isinstance(state, (tuple, list)):
        return type(state)(map_scalar_fields(s, fn) for s in state)
    return state


def per_leaf(state, keys=("a", "b")):
    """The per-leaf form of a shared-form state: each scalar repeated for each leaf."""
    return map_scalar_fields(state, lambda v: {k: jnp.array(v, copy=True) for k in keys})


def merge(first, second):
    """Two states of one-leaf trees ``{"a": ...}`` and ``{"b": ...}`` (shared form) as one
    state of ``{"a", "b"}`` in the per-leaf form: each keeps its own scalars and buffers."""

    def walk(x, y, scalar):
        if scalar:
            return {"a": x, "b": y}
        if isinstance(x, tuple) and hasattr(x, "_fields"):
            return type(x)(*(walk(a, b, n in SCALAR_FIELDS) for n, a, b in zip(x._fields, x, y)))
        if isinstance(x, (tuple, list)):
            return type(x)(walk(a, b, False) for a, b in zip(x, y))
        if isinstance(x, dict) and set(x) == {"a"} and set(y) == {"b"}:
            return {**x, **y}
        if isinstance(x, dict):
            return {k: walk(x[k], y[k], False) for k in x}
        return x  # hyperparameters (equal in both) and the schedule count

    return walk(first, second, False)


def run(tx, params, grads, state=None):
    state = tx.init(params) if state is None else state
    for g in grads:
        updates, state = tx.update(g, state, params)
        params = gradxform.apply_updates(params, updates)
    return params, state


# The cases that take seconds (Newton-Schulz, factored moments) run with the slow set,
# which CI runs too, to keep the default run under README's 10 minutes.
SLOW_PER_LEAF = ("muon", "adafactor")
SLOW_BOTH_FORMS = ("muon",)


def _slow_for(slow):
    return [pytest.param(n, marks=pytest.mark.slow) if n in slow else n for n in sorted(OPTIMIZERS)]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_init_makes_one_scalar_per_transformation(name):
    """One step (and mu_product, eta, mu) for all the leaves: a scalar, not a tree."""
    params, _ = params_and_grads(0, 0)
    fields = scalar_fields(OPTIMIZERS[name]().init(params))
    assert [n for n, _ in fields].count("step") == 1, fields
    for field, value in fields:
        assert isinstance(value, jax.Array) and value.shape == (), (field, value)
    steps = [v for n, v in fields if n == "step"]
    assert steps[0].dtype == jnp.int32 and int(steps[0]) == 0


@pytest.mark.parametrize("name", _slow_for(SLOW_PER_LEAF))
def test_per_leaf_steps_give_each_leaf_its_own_numbers(name):
    """A leaf whose first gradient came 7 steps later than the other's (torch_compat's
    lazy state): each leaf gets, bit for bit, what it gets when run on its own."""
    tx = OPTIMIZERS[name]()
    params, grads = params_and_grads(1, 10)
    pa, pb = {"a": params["a"]}, {"b": params["b"]}
    state_a = tx.init(pa)  # "a" has no state yet
    pb, state_b = run(tx, pb, [{"b": g["b"]} for g in grads[:7]])
    state = merge(state_a, state_b)
    together = {"a": pa["a"], "b": pb["b"]}
    for g in grads[7:]:
        updates, state = tx.update(g, state, together)
        together = gradxform.apply_updates(together, updates)
        ua, state_a = tx.update({"a": g["a"]}, state_a, pa)
        ub, state_b = tx.update({"b": g["b"]}, state_b, pb)
        pa, pb = gradxform.apply_updates(pa, ua), gradxform.apply_updates(pb, ub)
        np.testing.assert_array_equal(np.asarray(updates["a"]), np.asarray(ua["a"]))
        np.testing.assert_array_equal(np.asarray(updates["b"]), np.asarray(ub["b"]))
    steps = dict(scalar_fields(state))["step"]
    assert {k: int(v) for k, v in steps.items()} == {"a": 3, "b": 10}  # the form is kept


@pytest.mark.parametrize("name", _slow_for(SLOW_BOTH_FORMS))
def test_both_forms_give_the_same_numbers(name):
    """Equal steps in the shared and the per-leaf form: the same numbers, bit for bit,
    op by op. Under ``jax.jit`` XLA fuses the two forms' loops differently (the shared
    coefficients are computed once, outside the leaves' loops), which may round an
    element differently in its last bit, as jitting already does against op by op (the
    per-leaf form jitted is bit for bit what the core gave before the shared step)."""
    tx = OPTIMIZERS[name]()
    params, grads = params_and_grads(2, 8)

    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return gradxform.apply_updates(params, updates), state

    for run_step, exact in ((step, True), (jax.jit(step), False)):
        shared, shared_state = params, tx.init(params)
        leafwise, leafwise_state = params, per_leaf(tx.init(params))
        for g in grads:
            shared, shared_state = run_step(shared, shared_state, g)
            leafwise, leafwise_state = run_step(leafwise, leafwise_state, g)
            for k in params:
                if exact:
                    np.testing.assert_array_equal(np.asarray(shared[k]), np.asarray(leafwise[k]))
                else:
                    np.testing.assert_allclose(np.asarray(shared[k]), np.asarray(leafwise[k]), rtol=1e-14, atol=0)
        for (name_s, s), (name_l, l) in zip(scalar_fields(shared_state), scalar_fields(leafwise_state)):
            assert name_s == name_l and s.shape == () and set(l) == {"a", "b"}
            for k in params:
                np.testing.assert_array_equal(np.asarray(s), np.asarray(l[k]))


def test_mixed_forms_are_refused():
    tx = gradxform.scale_by_nadam()
    params = {"a": jnp.zeros(2), "b": jnp.zeros(3)}
    state = tx.init(params)
    mixed = state._replace(mu_product={"a": jnp.ones([], jnp.float32), "b": jnp.ones([], jnp.float32)})
    with pytest.raises(ValueError, match="mix the shared form"):
        tx.update(params, mixed)


def test_a_shared_step_of_another_shape_is_refused():
    """A step of shape (1,) would broadcast the updates: refused, naming the field."""
    tx = gradxform.scale_by_adam()
    params = {"a": jnp.zeros(2), "b": jnp.zeros(3)}
    state = tx.init(params)._replace(step=jnp.zeros(1, jnp.int32))
    with pytest.raises(ValueError, match=r"the state's step is shape \(1,\) and dtype int32 where one scalar"):
        tx.update(params, state)


def test_scalar_rule_runs_once_when_shared_and_per_leaf_otherwise():
    calls = []

    def rule(step):
        calls.append(step)
        return (step + 1,), None

    updates = {"a": jnp.zeros(2), "b": jnp.zeros(3), "c": jnp.zeros(1)}
    _numerics.scalar_rule(rule, updates, jnp.asarray(0))
    assert len(calls) == 1
    _numerics.scalar_rule(rule, updates, {k: jnp.asarray(0) for k in updates})
    assert len(calls) == 4


def test_the_shared_coefficients_are_traced_once():
    """The shared form traces the bias corrections once, not once per leaf: the jaxpr of
    Adam's update grows by the same number of equations per leaf whatever the step."""
    tx = gradxform.adam(0.1)

    def equations(n, form):
        params = {str(i): jnp.zeros(4, jnp.float32) for i in range(n)}
        state = tx.init(params)
        if form == "per_leaf":
            state = per_leaf(state, keys=tuple(params))
        return len(jax.make_jaxpr(tx.update)(params, state, params).jaxpr.eqns)

    shared = equations(20, "shared") - equations(10, "shared")
    leafwise = equations(20, "per_leaf") - equations(10, "per_leaf")
    assert shared < leafwise  # per leaf: step + 1, two powers, a square root, ... per leaf


def test_a_checkpoint_of_the_per_leaf_layout(tmp_path):
    """A core checkpoint written with per-leaf steps (the layout before the shared step):
    with the new state as target it is refused, naming the path; loaded without a target
    it is a per-leaf state, which ``update`` takes and continues bit for bit."""
    tx = gradxform.adam(0.1)
    params, grads = params_and_grads(3, 4)
    params, state = run(tx, params, grads[:2])
    old_layout = per_leaf(state)
    checkpoint.save(tmp_path / "old.npz", old_layout)
    with pytest.raises(ValueError, match=r"at path 'inner_state/0/step'"):
        checkpoint.load(tmp_path / "old.npz", target=jax.eval_shape(tx.init, params))
    back = checkpoint.load(tmp_path / "old.npz")
    resumed, _ = run(tx, params, grads[2:], state=back)
    expected, _ = run(tx, params, grads[2:], state=state)
    for k in params:
        np.testing.assert_array_equal(np.asarray(resumed[k]), np.asarray(expected[k]))


def test_torch_compat_keeps_a_step_per_parameter():
    """torch_compat turns the core's one step into one per parameter: a parameter whose
    first gradient came later has a smaller ``step`` in ``state`` and ``state_dict()``,
    and gets the numbers of a parameter stepped that many times on its own."""
    import torch_compat as tc

    rng = np.random.default_rng(4)
    a0, b0 = rng.normal(size=3), rng.normal(size=2)
    grads = [(rng.normal(size=3), rng.normal(size=2)) for _ in range(3)]
    a, b = tc.Parameter(jnp.asarray(a0)), tc.Parameter(jnp.asarray(b0))
    opt = tc.optim.Adam([a, b], lr=0.1)
    alone = tc.Parameter(jnp.asarray(b0))
    opt_alone = tc.optim.Adam([alone], lr=0.1)
    for k, (ga, gb) in enumerate(grads):
        a.grad = jnp.asarray(ga)
        b.grad = None if k == 0 else jnp.asarray(gb)  # b's first gradient comes at step 2
        opt.step()
        if k > 0:
            alone.grad = jnp.asarray(gb)
            opt_alone.step()
    assert float(opt.state[a]["step"]) == 3.0 and float(opt.state[b]["step"]) == 2.0
    steps = {i: float(s["step"]) for i, s in opt.state_dict()["state"].items()}
    assert steps == {0: 3.0, 1: 2.0}
    np.testing.assert_allclose(np.asarray(b.data), np.asarray(alone.data), rtol=1e-15, atol=0)

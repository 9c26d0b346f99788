"""``gradxform.param_groups``: torch's param groups as one transformation.

* Numbers: for every optimizer, three groups chosen by a predicate, a path regex and
  "the rest" (``param_groups_cases``) give torch 2.13's trajectory with the same three
  torch param groups, against the golden file (no torch needed) and live (with torch).
* Matching: the first group that matches a leaf takes it, the rest form the last group;
  predicates, regexes, path lists, masks and optax-style labels choose the same leaves.
* Hyperparameters per group: ``set_hyperparams(state, group=i, ...)`` changes group
  ``i`` only, without recompiling; one compiled update whatever the number of groups.
* Another optimizer per group ("Muon on matrices, AdamW on the rest"), and
  ``as_matrices`` for Muon on >2-D parameters.
* Errors: a group matching nothing, a leaf without a label, a missing ``params``, an
  unknown option, LBFGS.
"""

from __future__ import annotations

import functools
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform
import param_groups_cases as gc
import parity_harness as ph

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "param_groups.npz")


def nest(flat: dict) -> dict:
    """``{"a/b": x}`` -> ``{"a": {"b": x}}``."""
    out: dict = {}
    for path, value in flat.items():
        node = out
        *parents, last = path.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return out


def flatten(tree) -> dict:
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def group0_predicate(name):
    if name == "muon":
        return lambda path, leaf: path.endswith(("v", "u"))
    return lambda path, leaf: leaf.ndim < 2


def make_tx(name, group0_params=None, group1_params=r"head/.*"):
    fn = getattr(gradxform, name)
    torch_groups = gc.torch_groups(name)
    groups = [
        {"params": group0_params or group0_predicate(name), **gc.gradxform_options(torch_groups[0])},
        {"params": group1_params, **gc.gradxform_options(torch_groups[1])},
    ]
    return gradxform.param_groups(fn, groups, **gc.gradxform_options(gc.DEFAULTS[name]))


def run(tx, params0: dict, noise: dict, steps: int = gc.STEPS) -> dict:
    """gradxform's trajectory ``{path: [steps, *shape]}``, one jitted call per step."""

    @jax.jit
    def step(params, state, noise_t):
        grads = jax.tree.map(gc.gradient, params, noise_t)
        updates, state = tx.update(grads, state, params)
        return gradxform.apply_updates(params, updates), state

    params = nest({k: jnp.asarray(v) for k, v in params0.items()})
    state = tx.init(params)
    out = {path: np.empty((steps,) + np.shape(p)) for path, p in params0.items()}
    for t in range(steps):
        params, state = step(params, state, nest({k: v[t] for k, v in noise.items()}))
        for path, p in flatten(params).items():
            out[path][t] = np.asarray(p)
    return out


@functools.lru_cache(maxsize=None)
def golden(name):
    with np.load(GOLDEN, allow_pickle=False) as data:
        meta = json.loads(str(data["__meta__"]))
        assert meta["steps"] == gc.STEPS and name in meta["optimizers"]
        return (
            gc.unpack(data[f"{name}/p0"], name),
            gc.unpack(data[f"{name}/noise"], name, lead=1),
            gc.unpack(data[f"{name}/traj"], name, lead=1),
        )


@functools.lru_cache(maxsize=None)
def gradxform_trajectory(name):
    params0, noise, _ = golden(name)
    return run(make_tx(name), params0, noise)


def check_against(name, ours: dict, theirs: dict):
    for path in sorted(theirs):
        ph.check_trajectory(name, "float64", [ours[path]], [theirs[path]])


@pytest.mark.parametrize("name", gc.OPTIMIZERS)
def test_param_groups_match_torch_golden(name):
    _, _, expected = golden(name)
    check_against(name, gradxform_trajectory(name), expected)


@pytest.mark.parametrize("name", gc.OPTIMIZERS)
def test_param_groups_match_torch_live(name):
    pytest.importorskip("torch")
    params0, noise, _ = golden(name)
    check_against(name, gradxform_trajectory(name), gc.run_torch(name, params0, noise))


def test_the_golden_cases_need_their_groups():
    """With one group (the defaults everywhere) the trajectory is another: the groups
    of the golden cases matter."""
    params0, noise, expected = golden("adamw")
    one_group = run(gradxform.adamw(**gc.gradxform_options(gc.DEFAULTS["adamw"])), params0, noise)
    assert not np.allclose(one_group["body/b"], expected["body/b"], rtol=1e-6)
    assert not np.allclose(one_group["head/w"], expected["head/w"], rtol=1e-6)


# ------------------------------------------------------------------------------- matching


def members_of(state) -> list[tuple[str, ...]]:
    """Each group's leaves, read from the paths its state is keyed by."""
    out = []
    for inner in state.inner_states:
        # The moments are keyed by path (the step is one scalar per group's transformation).
        buffers = ph.find_state_field(inner, "exp_avg", None) or ph.find_state_field(inner, "momentum_buffer")
        out.append(tuple(sorted(buffers)))
    return out


@pytest.mark.parametrize("name", ["adam", "muon"])
def test_first_match_wins_and_the_rest_form_the_last_group(name):
    params = nest({k: jnp.zeros(s) for k, s in gc.shapes(name).items()})
    state = make_tx(name).init(params)
    assert members_of(state) == [tuple(sorted(m)) for m in gc.members(name)]


@pytest.mark.parametrize(
    "group0",
    [
        ["body/b", "head/b", "scale"],  # a list of paths
        r"body/b|head/b|scale",  # a regex
        {"body": {"b": True, "w": False}, "head": {"b": True, "w": False}, "scale": True},  # a mask
    ],
    ids=["paths", "regex", "mask"],
)
def test_every_way_of_choosing_leaves_gives_the_same_groups(group0):
    params = nest({k: jnp.zeros(s) for k, s in gc.SHAPES.items()})
    state = make_tx("adam", group0_params=group0).init(params)
    assert members_of(state) == [tuple(sorted(m)) for m in gc.members("adam")]


def test_a_mask_may_be_a_prefix_of_the_tree():
    params = nest({k: jnp.zeros(s) for k, s in gc.SHAPES.items()})
    tx = gradxform.param_groups(gradxform.adam, [{"params": {"body": False, "head": True, "scale": False}}])
    assert members_of(tx.init(params)) == [("head/b", "head/w"), ("body/b", "body/w", "scale")]


def test_adagrad_honours_a_group_initial_accumulator_value():
    """A deliberate difference: torch 2.13's Adagrad fills every group's ``sum`` with the
    constructor's ``initial_accumulator_value`` and ignores a group's own."""
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    tx = gradxform.param_groups(gradxform.adagrad, [{"params": "a", "initial_accumulator_value": 0.5}])
    state = tx.init(params)
    assert ph.find_state_field(state.inner_states[0], "sum")["a"].tolist() == [0.5, 0.5]
    assert ph.find_state_field(state.inner_states[1], "sum")["b"].tolist() == [0.0, 0.0]


def test_labels_tree_and_function_are_optax_style():
    params0, noise, expected = golden("adamw")
    torch_groups = [gc.gradxform_options(g) for g in gc.torch_groups("adamw")]
    labels = {"body": {"b": "no_decay", "w": "rest"}, "head": {"b": "no_decay", "w": "head"}, "scale": "no_decay"}
    groups = {"no_decay": torch_groups[0], "head": torch_groups[1], "rest": {}}
    defaults = gc.gradxform_options(gc.DEFAULTS["adamw"])
    for given in (labels, lambda params: labels):
        tx = gradxform.param_groups(gradxform.adamw, groups, labels=given, **defaults)
        check_against("adamw", run(tx, params0, noise), expected)
    state = tx.init(nest({k: jnp.zeros(s) for k, s in gc.SHAPES.items()}))
    assert set(state.inner_states) == {"no_decay", "head", "rest"}
    assert float(gradxform.get_hyperparams(state, group="head")["learning_rate"]) == pytest.approx(0.02)


def test_update_without_params_matches_leaves_by_the_updates():
    tx = gradxform.param_groups(gradxform.sgd, [{"params": lambda path, leaf: leaf.ndim == 1, "learning_rate": 0.5}], learning_rate=0.1)
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    updates, _ = jax.jit(tx.update)(params, tx.init(params))  # no params: sgd without decay
    assert updates["b"].tolist() == [-0.5, -0.5] and updates["w"].tolist() == [[-0.1, -0.1]] * 2


def test_an_empty_default_group_is_kept_and_skipped():
    params = {"w": jnp.ones(2)}
    tx = gradxform.param_groups(gradxform.sgd, [{"params": ".*", "learning_rate": 0.5}], learning_rate=0.1)
    state = tx.init(params)
    assert len(state.inner_states) == 2
    updates, new_state = jax.jit(tx.update)(params, state, params)
    assert updates["w"].tolist() == [-0.5, -0.5]
    assert int(new_state.inner_states[1].count) == 0  # the empty group did not step
    assert float(gradxform.get_hyperparams(new_state, group=1)["learning_rate"]) == pytest.approx(0.1)


# ------------------------------------------------------------------ hyperparameters per group


def test_set_hyperparams_by_group_changes_that_group_only_without_recompiling():
    params = nest({k: jnp.ones(s) for k, s in gc.SHAPES.items()})
    tx = make_tx("adamw")
    traces = []

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state):
        traces.append(1)
        updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
        return gradxform.apply_updates(params, updates), state

    state = tx.init(params)
    params, state = step(params, state)
    state = gradxform.set_hyperparams(state, group=1, learning_rate=5e-3)
    assert float(gradxform.get_hyperparams(state, group=1)["learning_rate"]) == 5e-3
    assert float(gradxform.get_hyperparams(state, group=0)["learning_rate"]) == pytest.approx(0.005)  # 0.5 * 0.01
    assert float(gradxform.get_hyperparams(state, group=2)["learning_rate"]) == pytest.approx(0.01)
    before = {k: np.asarray(v) for k, v in flatten(params).items()}  # params are donated
    params, state = step(params, state)
    after = flatten(params)
    # head/w (group 1) moved by about lr * 1 (Adam's first steps move by ~lr), the others by theirs.
    moved = {k: float(np.max(np.abs(np.asarray(after[k]) - np.asarray(before[k])))) for k in after}
    assert moved["head/w"] == pytest.approx(5e-3 * (1 + 0.1), rel=0.05)  # lr * (1 + decay)
    assert moved["body/w"] == pytest.approx(1e-2 * (1 + 0.1), rel=0.05)
    assert len(traces) == 1 and step._cache_size() == 1


def test_set_hyperparams_sets_every_group_by_default_and_refuses_a_left_out_feature():
    tx = make_tx("adamw")  # group 0 has weight_decay=0.0: no decay there
    state = tx.init(nest({k: jnp.ones(s) for k, s in gc.SHAPES.items()}))
    state = gradxform.set_hyperparams(state, learning_rate=0.25)
    for group in range(3):
        assert float(gradxform.get_hyperparams(state, group=group)["learning_rate"]) == 0.25
    with pytest.raises(KeyError, match=r"weight_decay.*group 0 at 'inner_states/0'"):
        gradxform.set_hyperparams(state, weight_decay=0.5)
    state = gradxform.set_hyperparams(state, group=2, weight_decay=0.5)
    assert float(gradxform.get_hyperparams(state, group=2)["weight_decay"]) == 0.5
    assert float(gradxform.get_hyperparams(state, path="inner_states/1")["weight_decay"]) == pytest.approx(0.1)


def test_get_hyperparams_with_several_groups_names_them():
    state = make_tx("adam").init(nest({k: jnp.ones(s) for k, s in gc.SHAPES.items()}))
    message = "3 sets of hyperparameters (group 0 at 'inner_states/0'; group 1 at 'inner_states/1'; group 2 at"
    with pytest.raises(ValueError, match=re.escape(message)):
        gradxform.get_hyperparams(state)
    with pytest.raises(ValueError, match=r"no hyperparameters match group=7; this state holds: group 0"):
        gradxform.get_hyperparams(state, group=7)


@pytest.mark.parametrize("num_groups", [1, 6])
def test_one_compiled_update_whatever_the_number_of_groups(num_groups):
    params = {f"p{i}": jnp.ones(3) for i in range(6)}
    groups = [{"params": f"p{i}", "learning_rate": 0.1 * (i + 1)} for i in range(num_groups - 1)]
    tx = gradxform.param_groups(gradxform.adam, groups, learning_rate=1e-3)
    update = jax.jit(tx.update)
    state = tx.init(params)
    for i in range(3):
        _, state = update(params, state, params)
        state = gradxform.set_hyperparams(state, group=i % num_groups, learning_rate=0.5)
    assert update._cache_size() == 1


# ----------------------------------------------------------------- another optimizer per group


def test_muon_on_matrices_adamw_on_the_rest_in_one_line():
    params = {"w1": jnp.asarray(np.random.default_rng(0).standard_normal((4, 3))), "b": jnp.ones(3), "w2": jnp.eye(3)}
    grads = jax.tree.map(lambda p: 0.5 * p + 0.25, params)
    tx = gradxform.param_groups(
        gradxform.adamw,
        [{"params": lambda path, leaf: leaf.ndim == 2, "optimizer": gradxform.muon, "learning_rate": 0.02, "ns_steps": 1}],
        learning_rate=3e-4, weight_decay=0.1, betas=(0.9, 0.95),
    )
    updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
    # Muon got the matrices and the defaults it takes (weight_decay), not the others (betas).
    muon_hyper = gradxform.get_hyperparams(state, group=0)
    assert "betas" not in muon_hyper and "ns_coefficients" in muon_hyper
    assert float(muon_hyper["weight_decay"]) == pytest.approx(0.1)
    assert sorted(ph.find_state_field(state.inner_states[0], "momentum_buffer")) == ["w1", "w2"]
    assert gradxform.get_hyperparams(state, group=1)["betas"][1] == pytest.approx(0.95)
    # AdamW's leaf moves as AdamW alone would (Muon's numbers: the torch test below).
    adamw = gradxform.adamw(3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    expected, _ = jax.jit(adamw.update)({"b": grads["b"]}, adamw.init({"b": params["b"]}), {"b": params["b"]})
    np.testing.assert_array_equal(np.asarray(updates["b"]), np.asarray(expected["b"]))


def test_muon_and_adamw_groups_match_two_torch_optimizers():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    p0 = {"w1": rng.standard_normal((4, 3)), "b": rng.standard_normal(3), "w2": rng.standard_normal((3, 5))}
    noise = {k: 0.5 * rng.standard_normal((4,) + v.shape) for k, v in p0.items()}
    tx = gradxform.param_groups(
        gradxform.adamw,
        [{"params": lambda path, leaf: leaf.ndim == 2, "optimizer": gradxform.muon, "learning_rate": 0.02}],
        learning_rate=3e-3, weight_decay=0.1,
    )
    ours = run(tx, p0, noise, steps=4)
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in p0.items()}
    optimizers = [
        torch.optim.Muon([tensors["w1"], tensors["w2"]], lr=0.02, weight_decay=0.1),
        torch.optim.AdamW([tensors["b"]], lr=3e-3, weight_decay=0.1, foreach=False),
    ]
    for t in range(4):
        for k, p in tensors.items():
            p.grad = gc.gradient(p.detach(), torch.from_numpy(noise[k][t]))
        for optimizer in optimizers:
            optimizer.step()
        for k, p in tensors.items():
            tol = ph.tolerance("muon" if k != "b" else "adamw", "float64")
            assert ph.rel_err(ours[k][t], p.detach().numpy()) <= tol, (k, t)


def test_as_matrices_runs_muon_on_the_flattened_trailing_dimensions():
    rng = np.random.default_rng(2)
    kernel = jnp.asarray(rng.standard_normal((4, 2, 3, 3)), jnp.float32)
    grad = jnp.asarray(rng.standard_normal((4, 2, 3, 3)), jnp.float32)
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        gradxform.muon(0.02).init(kernel)  # the torch-exact default refuses
    tx = gradxform.as_matrices(gradxform.muon(0.02, ns_steps=2))
    updates, _ = jax.jit(tx.update)(grad, tx.init(kernel), kernel)
    plain = gradxform.muon(0.02, ns_steps=2)
    matrix = kernel.reshape(4, 18)
    expected, _ = jax.jit(plain.update)(grad.reshape(4, 18), plain.init(matrix), matrix)
    assert updates.shape == (4, 2, 3, 3)
    np.testing.assert_array_equal(np.asarray(updates).reshape(4, 18), np.asarray(expected))


def test_as_matrices_in_a_group_beside_adamw():
    params = {"conv": jnp.ones((4, 2, 3, 3)), "dense": jnp.ones((3, 3)), "bias": jnp.ones(4)}
    tx = gradxform.param_groups(
        gradxform.adamw,
        [{"params": lambda path, leaf: leaf.ndim >= 2, "optimizer": gradxform.as_matrices(gradxform.muon(0.02, ns_steps=1))}],
    )
    updates, state = jax.jit(tx.update)(params, tx.init(params), params)
    assert jax.tree.map(jnp.shape, updates) == jax.tree.map(jnp.shape, params)
    assert float(gradxform.get_hyperparams(state, group=0)["learning_rate"]) == pytest.approx(0.02)


# ------------------------------------------------------------------------------------ errors


def test_a_group_that_matches_nothing_raises_with_example_paths():
    tx = gradxform.param_groups(gradxform.sgd, [{"params": r"bias", "learning_rate": 0.5}])
    with pytest.raises(ValueError, match=r"group 0 matches no parameter \(paths are like 'layer/bias'"):
        tx.init({"layer": {"bias": jnp.ones(2)}})  # the regex must match the whole path


def test_labels_must_cover_every_leaf_and_be_used():
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    tx = gradxform.param_groups(gradxform.sgd, {"x": {}}, labels={"a": "x", "b": "y"})
    with pytest.raises(ValueError, match=r"parameter at 'b' has the label 'y'"):
        tx.init(params)
    tx = gradxform.param_groups(gradxform.sgd, {"x": {}, "z": {}}, labels={"a": "x", "b": "x"})
    with pytest.raises(ValueError, match=r"no parameter has the label\(s\) \['z'\]"):
        tx.init(params)


def test_bad_groups_are_refused_when_built():
    with pytest.raises(ValueError, match="group 0 has no 'params'"):
        gradxform.param_groups(gradxform.sgd, [{"learning_rate": 0.1}])
    with pytest.raises(TypeError, match="group 0: .*lr"):
        gradxform.param_groups(gradxform.sgd, [{"params": ".*", "lr": 0.1}])
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        gradxform.param_groups(gradxform.sgd, [{"params": ".*", "learning_rate": -1}])
    with pytest.raises(ValueError, match=r"LBFGS doesn't support per-parameter options \(parameter groups\)"):
        gradxform.param_groups(gradxform.lbfgs, [{"params": ".*"}])
    with pytest.raises(ValueError, match="built transformation as its optimizer and also options"):
        gradxform.param_groups(gradxform.sgd, [{"params": ".*", "optimizer": gradxform.sgd(0.1), "momentum": 0.9}])
    with pytest.raises(ValueError, match="groups must be a list of dicts"):
        gradxform.param_groups(gradxform.sgd, {"x": {}})


def test_a_param_groups_state_round_trips_through_checkpoints_and_continues():
    """Group buffers are keyed by paths holding '/': numpy and orbax checkpoints keep them."""
    params = nest({k: jnp.ones(s) for k, s in gc.SHAPES.items()})
    tx = make_tx("adamw")
    update = jax.jit(tx.update)
    _, state = update(params, tx.init(params), params)
    state = gradxform.set_hyperparams(state, group=1, learning_rate=0.05)
    expected, _ = update(params, state, params)
    restored = [gradxform.checkpoint.from_numpy_dict(gradxform.checkpoint.to_numpy_dict(state))]
    ocp = pytest.importorskip("orbax.checkpoint")
    import tempfile

    path = os.path.join(tempfile.mkdtemp(), "state")
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, state)
    with ocp.StandardCheckpointer() as checkpointer:
        restored.append(checkpointer.restore(path, jax.eval_shape(lambda: state)))
    for back in restored:
        assert jax.tree.structure(back) == jax.tree.structure(state)
        assert float(gradxform.get_hyperparams(back, group=1)["learning_rate"]) == pytest.approx(0.05)
        got, _ = update(params, back, params)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_updates_of_another_tree_are_refused_naming_the_path():
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    tx = gradxform.param_groups(gradxform.sgd, [{"params": "a"}], learning_rate=0.1)
    with pytest.raises(ValueError, match=r"no leaf at \['b'\]"):
        tx.update({"a": jnp.ones(2)}, tx.init(params), params)

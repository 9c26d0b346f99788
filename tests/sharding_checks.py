"""Sharding checks on 8 simulated CPU devices, run by tests/test_sharding.py.

``XLA_FLAGS=--xla_force_host_platform_device_count=8`` has to be set before jax is
imported, and the test session has imported jax already: so these checks run here, in a
fresh process, and print one JSON object (``{"check name": {"ok": bool, ...}}``) as the
last line of stdout. Run it by hand with ``python tests/sharding_checks.py``.

``--rebuilt-tie`` places the state with the tie that gradxform rebuilds for jax 0.11 and
later (which removed ``jax.experimental.shard_alike``), also where this jax still has
``shard_alike``; further arguments select checks by name (substrings).

float32 throughout (x64 off), the precision sharded training uses.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]
).strip()

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

import gradxform  # noqa: E402

STEPS = 20
DEVICES = jax.devices()
MESH = Mesh(np.array(DEVICES).reshape(4, 2), ("data", "model"))
ONE = DEVICES[0]

# Parameters and their shardings: a matrix split on both axes, one split on its last
# axis only, a vector split over "model".
SPECS = {"w": P("data", "model"), "e": P(None, "data"), "b": P("model")}
SHAPES = {"w": (16, 8), "e": (8, 16), "b": (8,)}
MATRICES = ("w", "e")  # Muon takes matrices only


def make_params(names):
    rng = np.random.default_rng(0)
    return {k: jnp.asarray(rng.normal(size=SHAPES[k]), jnp.float32) for k in names}


def targets(names):
    rng = np.random.default_rng(1)
    return {k: jnp.asarray(rng.normal(size=SHAPES[k]), jnp.float32) for k in names}


def loss_fn(params, target):
    return sum(
        jnp.sum((params[k] - target[k]) ** 2) + 0.1 * jnp.sum(jnp.cos(params[k])) for k in params
    )


def sharded(tree, specs=SPECS):
    return {k: jax.device_put(v, NamedSharding(MESH, specs[k])) for k, v in tree.items()}


def single(tree):
    return {k: jax.device_put(v, ONE) for k, v in tree.items()}


ALIASES = {
    "sgd": lambda: gradxform.sgd(0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "asgd": lambda: gradxform.asgd(0.05, t0=5.0),
    "rprop": lambda: gradxform.rprop(0.01),
    "adagrad": lambda: gradxform.adagrad(0.1, lr_decay=0.01, initial_accumulator_value=0.1),
    "adadelta": lambda: gradxform.adadelta(1.0, weight_decay=0.01),
    "rmsprop": lambda: gradxform.rmsprop(0.01, momentum=0.5, centered=True),
    "adam": lambda: gradxform.adam(0.05, amsgrad=True),
    "adamw": lambda: gradxform.adamw(0.05),
    "adamax": lambda: gradxform.adamax(0.05),
    "sparse_adam": lambda: gradxform.sparse_adam(0.05),
    "nadam": lambda: gradxform.nadam(0.05, decoupled_weight_decay=True, weight_decay=0.01),
    "radam": lambda: gradxform.radam(0.05),
    "adafactor": lambda: gradxform.adafactor(0.05),
    "muon": lambda: gradxform.muon(0.05),
    # One iteration per step, far from the tolerances: a run that stops on a tolerance
    # test decided by the last bit of a dot product would compare stopping rules, not
    # sharding.
    "lbfgs": lambda: gradxform.lbfgs(0.5, max_iter=1, history_size=4),
    "flatten(adam)": lambda: gradxform.flatten(gradxform.adam(0.05)),
}


def run_steps(tx, params, target, needs_value_fn):
    """jit(init), then 20 jitted steps; returns (state0, final params, final state)."""
    state0 = jax.jit(tx.init)(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(loss_fn)(params, target)
        extra = {"value_fn": lambda p: loss_fn(p, target)} if needs_value_fn else {}
        updates, state = tx.update(grads, state, params, **extra)
        return gradxform.apply_updates(params, updates), state

    params_t, state = params, state0
    for _ in range(STEPS):
        params_t, state = step(params_t, state)
    return state0, params_t, state


def max_rel_diff(a, b):
    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.size == 0:
            continue
        scale = max(np.max(np.abs(y)), 1e-30)
        worst = max(worst, float(np.max(np.abs(x - y)) / scale))
    return worst


def param_key(path):
    """The parameter name a state leaf belongs to (its last dict key), if any."""
    keys = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]
    return keys[-1] if keys else None


def field_name(path):
    names = [p.name for p in path if isinstance(p, jax.tree_util.GetAttrKey)]
    return names[-1] if names else None


def expected_spec(path, leaf):
    """The sharding rule of issue #7, for one state leaf of the per-parameter optimizers."""
    key = param_key(path)
    if leaf.ndim == 0 or key is None:
        return P()
    spec = list(SPECS[key]) + [None] * (len(SHAPES[key]) - len(SPECS[key]))
    if field_name(path) == "row_var":  # Adafactor: the last dimension is reduced
        spec[-1] = None
    elif field_name(path) == "col_var":  # ... and the one before it
        spec[-2] = None
    assert leaf.shape[-len(spec):] != () and leaf.ndim == len(spec), (path, leaf.shape)
    return P(*spec)


def check_placement(state, alias):
    """Every state leaf on all 8 devices, with the rule's sharding; returns problems."""
    problems = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        name = jax.tree_util.keystr(path)
        sharding = leaf.sharding
        if sharding.device_set != set(DEVICES):
            problems.append(f"{name}: on {len(sharding.device_set)} device(s)")
            continue
        if alias in ("lbfgs", "flatten(adam)") and leaf.ndim > 0:
            # Flat buffers over several sharded leaves: replicated (documented).
            expected = P()
        else:
            expected = expected_spec(path, leaf)
        if not sharding.is_equivalent_to(NamedSharding(MESH, expected), leaf.ndim):
            problems.append(f"{name}: {getattr(sharding, 'spec', sharding)}, expected {expected}")
    return problems


def leaf_count(state):
    return len(jax.tree.leaves(state))


def check_alias(alias):
    names = MATRICES if alias == "muon" else tuple(SHAPES)
    params, target = make_params(names), targets(names)
    needs_value_fn = alias == "lbfgs"
    tx = ALIASES[alias]()
    s_state0, s_params, s_state = run_steps(tx, sharded(params), sharded(target), needs_value_fn)
    u_state0, u_params, u_state = run_steps(tx, single(params), single(target), needs_value_fn)
    init_problems = check_placement(s_state0, alias)
    update_problems = check_placement(s_state, alias)
    param_problems = [
        k for k in names if not s_params[k].sharding.is_equivalent_to(NamedSharding(MESH, SPECS[k]), len(SHAPES[k]))
    ]
    # A state leaf of a sharded parameter must never be whole on one device.
    whole = []
    if alias not in ("lbfgs", "flatten(adam)"):
        for path, leaf in jax.tree_util.tree_flatten_with_path(s_state)[0]:
            if leaf.ndim and any(expected_spec(path, leaf)) and max(
                    s.data.size for s in leaf.addressable_shards) == leaf.size:
                whole.append(jax.tree_util.keystr(path))
    param_diff = max_rel_diff(s_params, u_params)
    state_diff = max_rel_diff(s_state, u_state)
    moved = max_rel_diff(s_params, params)  # the run did something
    return {
        "ok": not (init_problems or update_problems or param_problems or whole),
        "leaves": leaf_count(s_state),
        "init_problems": init_problems,
        "update_problems": update_problems,
        "param_sharding_problems": param_problems,
        "whole_on_one_device": whole,
        "param_rel_diff": param_diff,
        "state_rel_diff": state_diff,
        "moved": moved,
    }


def check_minimize():
    """minimize on a sharded pytree, and on one leaf, whose flat buffers stay sharded."""
    out = {}
    params, target = make_params(tuple(SHAPES)), targets(tuple(SHAPES))
    # Four iterations, no tolerance test: the runs stop on the same budget (a float32
    # tolerance test near convergence would be decided by the last bit of a reduction).
    solve = jax.jit(lambda x0, t: gradxform.minimize(
        loss_fn, x0, t, max_iter=4, history_size=5, tolerance_grad=0.0, tolerance_change=0.0))
    s = solve(sharded(params), sharded(target))
    u = solve(single(params), single(target))
    out["tree_param_problems"] = [
        k for k in SHAPES if not s.params[k].sharding.is_equivalent_to(NamedSharding(MESH, SPECS[k]), len(SHAPES[k]))
    ]
    out["tree_state_devices"] = sorted({len(l.sharding.device_set) for l in jax.tree.leaves(s.state)})
    out["tree_param_rel_diff"] = max_rel_diff(s.params, u.params)
    out["tree_n_iter"] = [int(s.n_iter), int(u.n_iter)]
    # One matrix split over "data" along its leading axis: its flat vector is split too
    # (jitted lbfgs init: the same init_state as minimize's).
    state = jax.jit(gradxform.lbfgs(history_size=5).init)(sharded({"w": params["w"]}, {"w": P("data", None)})).lbfgs
    out["one_leaf_state_specs"] = {k: str(getattr(state, k).sharding.spec) for k in state._fields}
    expected = {"d": P("data"), "prev_flat_grad": P("data"), "old_dirs": P(None, "data"),
                "old_stps": P(None, "data"), "ro": P(), "al": P(), "n_iter": P(), "t": P()}
    out["one_leaf_problems"] = [
        k for k, spec in expected.items()
        if not getattr(state, k).sharding.is_equivalent_to(NamedSharding(MESH, spec), getattr(state, k).ndim)
    ]
    out["ok"] = not (out["tree_param_problems"] or out["one_leaf_problems"]) and out["tree_state_devices"] == [8]
    return out


def bytes_per_device(tree):
    """Bytes of ``tree``'s arrays held by each device, from ``addressable_shards``."""
    totals = {d: 0 for d in DEVICES}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            totals[shard.device] += shard.data.nbytes
    return [totals[d] for d in DEVICES]


def check_zero():
    """shard_state over 8 devices with replicated parameters: memory / 8, same results."""
    mesh = Mesh(np.array(DEVICES), ("data",))
    replicated = NamedSharding(mesh, P())
    shapes = {"w1": (64, 32), "b1": (32,), "w2": (32, 8), "b2": (8,), "odd": (3, 5)}
    rng = np.random.default_rng(2)
    params = {k: jax.device_put(jnp.asarray(rng.normal(size=s), jnp.float32), replicated) for k, s in shapes.items()}
    target = {k: jax.device_put(jnp.asarray(rng.normal(size=s), jnp.float32), replicated) for k, s in shapes.items()}
    out = {}
    for alias, make, variants in (("adamw", lambda: gradxform.adamw(0.05), (True, False)),
                                  ("adafactor", lambda: gradxform.adafactor(0.05), (True,))):
        plain = make()
        p_state0, p_params, p_state = run_steps(plain, params, target, False)
        entry = {}
        for shard_update in variants:
            tx = gradxform.shard_state(make(), mesh, "data", shard_update=shard_update)
            z_state0, z_params, z_state = run_steps(tx, params, target, False)
            plain_bytes = bytes_per_device(p_state)
            zero_bytes = bytes_per_device(z_state)
            dense = [l for l in jax.tree.leaves(z_state) if l.ndim and any(d % 8 == 0 for d in l.shape)]
            dense_plain = [l for l in jax.tree.leaves(p_state) if l.ndim and any(d % 8 == 0 for d in l.shape)]
            entry[f"shard_update={shard_update}"] = {
                "state_bytes_total": int(sum(l.nbytes for l in jax.tree.leaves(z_state))),
                "plain_bytes_per_device": plain_bytes,
                "zero_bytes_per_device": zero_bytes,
                "ratio": plain_bytes[0] / zero_bytes[0],
                "divisible_leaves_ratio": bytes_per_device(dense_plain)[0] / bytes_per_device(dense)[0],
                "init_bytes_per_device": bytes_per_device(z_state0),
                "param_rel_diff": max_rel_diff(z_params, p_params),
                "state_rel_diff": max_rel_diff(z_state, p_state),
                "params_replicated": all(v.sharding.is_fully_replicated for v in z_params.values()),
                "state_specs": sorted({str(l.sharding.spec) for l in jax.tree.leaves(z_state)}),
            }
        out[alias] = entry
    # Model-parallel parameters, state split over both axes (all 8 devices).
    tx = gradxform.shard_state(gradxform.adam(0.05), MESH, ("data", "model"))
    names = tuple(SHAPES)
    mp = make_params(names)
    s_state0, s_params, s_state = run_steps(tx, sharded(mp), sharded(targets(names)), False)
    u_state0, u_params, u_state = run_steps(gradxform.adam(0.05), single(mp), single(targets(names)), False)
    out["model_parallel"] = {
        "state_specs": {jax.tree_util.keystr(p): str(l.sharding.spec)
                        for p, l in jax.tree_util.tree_flatten_with_path(s_state)[0] if l.ndim},
        "param_rel_diff": max_rel_diff(s_params, u_params),
        "param_problems": [k for k in names if not s_params[k].sharding.is_equivalent_to(
            NamedSharding(MESH, SPECS[k]), len(SHAPES[k]))],
    }
    out["ok"] = True
    return out


def check_torch_compat():
    """Sharded Parameters through step(), state_dict() and load_state_dict()."""
    from torch_compat import Parameter, optim

    names = tuple(SHAPES)
    values, target = make_params(names), targets(names)
    out = {}

    def build(cls, kwargs, placed):
        params = {k: Parameter(v) for k, v in placed(values).items()}
        return params, cls(list(params.values()), **kwargs)

    def train(params, opt, steps, t):
        for _ in range(steps):
            grads = jax.grad(loss_fn)({k: p.data for k, p in params.items()}, t)
            for k, p in params.items():
                p.grad = grads[k]
            opt.step()

    for cls, kwargs in ((optim.Adam, {"lr": 0.05, "amsgrad": True}), (optim.Adafactor, {"lr": 0.05})):
        name = cls.__name__
        s_params, s_opt = build(cls, kwargs, sharded)
        u_params, u_opt = build(cls, kwargs, single)
        entry = {"constructor_keeps_sharding": all(
            s_params[k].data.sharding.is_equivalent_to(NamedSharding(MESH, SPECS[k]), len(SHAPES[k])) for k in names)}
        train(s_params, s_opt, 5, sharded(target))
        train(u_params, u_opt, 5, single(target))

        def placement(params, opt):
            problems = []
            for k, p in params.items():
                if not p.data.sharding.is_equivalent_to(NamedSharding(MESH, SPECS[k]), p.ndim):
                    problems.append(f"{k}.data: {p.data.sharding}")
                for key, value in opt.state[p].items():
                    if not isinstance(value, jax.Array):
                        continue
                    if value.sharding.device_set != set(DEVICES):
                        problems.append(f"{k}.{key}: {len(value.sharding.device_set)} device(s)")
                    elif value.shape == p.shape and not value.sharding.is_equivalent_to(
                            NamedSharding(MESH, SPECS[k]), p.ndim):
                        problems.append(f"{k}.{key}: {value.sharding.spec}")
            return problems

        entry["step_problems"] = placement(s_params, s_opt)
        # state_dict as numpy (as a torch checkpoint turned into numpy) into a fresh optimizer.
        saved = s_opt.state_dict()
        saved = {"state": {i: {k: np.asarray(v) for k, v in st.items()} for i, st in saved["state"].items()},
                 "param_groups": saved["param_groups"]}
        r_params = {k: Parameter(jax.device_put(np.asarray(p.data), NamedSharding(MESH, SPECS[k])))
                    for k, p in s_params.items()}
        r_opt = cls(list(r_params.values()), **kwargs)
        r_opt.load_state_dict(saved)
        entry["load_problems"] = placement(r_params, r_opt)
        # Parameters sharded differently, with equal steps: one step array after loading
        # (one step group), as after the steps that made the state dict.
        entry["step_arrays"] = [len({id(opt.state[p]["step"]) for p in params.values()})
                                for params, opt in ((s_params, s_opt), (r_params, r_opt))]
        train(r_params, r_opt, 5, sharded(target))
        train(u_params, u_opt, 5, single(target))
        entry["after_load_problems"] = placement(r_params, r_opt)
        entry["param_rel_diff"] = max_rel_diff({k: p.data for k, p in r_params.items()},
                                               {k: p.data for k, p in u_params.items()})
        entry["ok"] = entry["constructor_keeps_sharding"] and not (
            entry["step_problems"] or entry["load_problems"] or entry["after_load_problems"])
        out[name] = entry
    out["ok"] = all(e["ok"] for e in out.values() if isinstance(e, dict))
    return out


def check_torch_compat_lbfgs():
    """LBFGS.step(closure) on sharded Parameters: they keep their shardings. (Its numbers
    are the core's, compared sharded and unsharded in ``alias:lbfgs``; one compile of
    this driver's heavy step is enough here.)"""
    from torch_compat import Parameter, optim

    names = tuple(SHAPES)
    values, target = make_params(names), targets(names)

    def run(placed):
        params = {k: Parameter(v) for k, v in placed(values).items()}
        opt = optim.LBFGS(list(params.values()), lr=0.5, max_iter=4, history_size=3,
                          tolerance_grad=0.0, tolerance_change=0.0)
        t = placed(target)

        def closure():
            loss, grads = jax.value_and_grad(loss_fn)({k: p.data for k, p in params.items()}, t)
            for k, p in params.items():
                p.grad = grads[k]
            return loss

        opt.step(closure)
        opt.step(closure)
        return {k: p.data for k, p in params.items()}

    s = run(sharded)
    problems = [k for k in names if not s[k].sharding.is_equivalent_to(NamedSharding(MESH, SPECS[k]), len(SHAPES[k]))]
    return {"ok": not problems, "param_problems": problems, "moved": max_rel_diff(s, values)}


def main(argv):
    selected = [a for a in argv if a != "--rebuilt-tie"]
    if "--rebuilt-tie" in argv:
        from gradxform import _numerics

        _numerics._tie = _numerics._sharding_group_tie()
        assert _numerics._tie is not None, "this jax lacks the Shardy sharding group"
    results = {}
    checks = {f"alias:{a}": (lambda a=a: check_alias(a)) for a in ALIASES}
    checks.update({"minimize": check_minimize, "zero": check_zero, "torch_compat": check_torch_compat,
                   "torch_compat_lbfgs": check_torch_compat_lbfgs})
    for name, check in checks.items():
        if selected and not any(s in name for s in selected):
            continue
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            results[name] = check()
        except Exception:  # reported, not raised: the test shows every failure at once
            results[name] = {"ok": False, "error": traceback.format_exc()}
        results[name]["seconds"] = round(time.perf_counter() - start, 2)
        results[name]["cpu_seconds"] = round(time.process_time() - start_cpu, 2)
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])

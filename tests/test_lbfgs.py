"""L-BFGS: gradxform.minimize, gradxform.lbfgs and torch_compat.optim.LBFGS against torch 2.13.

Golden trajectories (tests/golden/lbfgs.npz, made by make_golden_lbfgs.py) hold torch's
parameters, iteration and evaluation counts after each of three consecutive
``step(closure)`` calls; float64 iterates must agree to 1e-10 relative and the counts
exactly. Live comparisons on other seeds run when torch is importable.
"""

import copy
import functools
import json
import logging
import pathlib
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform
import lbfgs_problems as problems
import torch_compat
from torch_compat import optim

GOLDEN = np.load(pathlib.Path(__file__).parent / "golden" / "lbfgs.npz")
CASES = json.loads(str(GOLDEN["index"]))
RTOL = 1e-10


def rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


@functools.lru_cache(maxsize=None)
def _solver(name, history_size, line_search_fn):
    """A jitted minimize per problem and structure; the other options are traced arguments."""
    f = problems.jax_objective(name)

    def solve(params, state, data, dynamic):
        return gradxform.minimize(
            lambda q: f(q, **data), params, state=state, history_size=history_size,
            line_search_fn=line_search_fn, **dynamic,
        )

    return jax.jit(solve)


def run_minimize(name, seed, options, steps=problems.STEPS):
    """Consecutive gradxform.minimize calls, threading the state (as consecutive torch steps)."""
    data, x0 = problems.make(name, seed)
    f = problems.jax_objective(name)
    params = jax.tree.map(jnp.asarray, x0)
    data = {k: jnp.asarray(v) for k, v in data.items()}
    history_size = options.get("history_size", 100)
    solve = _solver(name, history_size, options.get("line_search_fn"))
    max_iter = options.get("max_iter", 20)
    dynamic = dict(
        lr=jnp.asarray(options.get("lr", 1.0)),
        max_iter=jnp.asarray(max_iter),
        max_eval=jnp.asarray(options.get("max_eval", max_iter * 5 // 4)),
        tolerance_grad=jnp.asarray(options.get("tolerance_grad", 1e-7)),
        tolerance_change=jnp.asarray(options.get("tolerance_change", 1e-9)),
    )
    state = gradxform.lbfgs(history_size=history_size).init(params).lbfgs
    out = {"params": [], "loss": [], "n_iter": [], "func_evals": []}
    for _ in range(steps):
        start_loss = f(params, **data)
        result = solve(params, state, data, dynamic)
        params, state = result.params, result.state
        out["params"].append(jax.tree.map(np.asarray, params))
        out["loss"].append(float(start_loss))
        out["n_iter"].append(int(state.n_iter))
        out["func_evals"].append(int(state.func_evals))
    return out


def _as_transform_options(options):
    options = dict(options)
    if "lr" in options:
        options["learning_rate"] = options.pop("lr")
    return options


def run_compat(name, seed, options, steps=problems.STEPS):
    data, x0 = problems.make(name, seed)
    f = problems.jax_objective(name)
    model = torch_compat.as_parameters(x0)
    data = {k: jnp.asarray(v) for k, v in data.items()}
    opt = optim.LBFGS(torch_compat.parameters(model), **options)

    def closure():
        opt.zero_grad()
        return torch_compat.backward(f, model, **data)

    out = {"params": [], "loss": [], "n_iter": [], "func_evals": []}
    for _ in range(steps):
        loss = opt.step(closure)
        state = opt.state[torch_compat.parameters(model)[0]]
        out["params"].append(jax.tree.map(np.asarray, torch_compat.values(model)))
        out["loss"].append(float(loss))
        out["n_iter"].append(state["n_iter"])
        out["func_evals"].append(state["func_evals"])
    return out


def assert_same_run(ours, reference):
    assert ours["n_iter"] == reference["n_iter"]
    assert ours["func_evals"] == reference["func_evals"]
    np.testing.assert_allclose(ours["loss"], reference["loss"], rtol=RTOL)
    for got, want in zip(ours["params"], reference["params"]):
        for key in want:
            assert rel_err(got[key], want[key]) <= RTOL, key


def golden_run(case):
    return {
        "params": [
            {k: GOLDEN[f"{case['case']}/{step}/{k}"] for k in problems.make(case["name"], case["seed"])[1]}
            for step in range(problems.STEPS)
        ],
        "loss": case["loss"],
        "n_iter": case["n_iter"],
        "func_evals": case["func_evals"],
    }


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_minimize_matches_torch_golden(case):
    assert_same_run(run_minimize(case["name"], case["seed"], case["options"]), golden_run(case))


@pytest.mark.parametrize("case", CASES[::3], ids=[c["case"] for c in CASES[::3]])
def test_compat_lbfgs_matches_torch_golden(case):
    assert_same_run(run_compat(case["name"], case["seed"], case["options"]), golden_run(case))


def test_golden_cases_exercise_both_line_search_modes_and_history_wraparound():
    modes = {c["options"].get("line_search_fn") for c in CASES}
    assert modes == {None, "strong_wolfe"}
    # Some runs take more iterations than their history holds, so the ring buffer wraps.
    assert any(c["n_iter"][-1] > c["options"].get("history_size", 100) for c in CASES)


@pytest.mark.parametrize("name", problems.NAMES)
@pytest.mark.parametrize("options", problems.OPTIONS[:4], ids=str)
def test_live_against_torch(name, options):
    pytest.importorskip("torch")
    seed = 17
    reference = problems.run_torch(name, seed, options)
    assert_same_run(run_minimize(name, seed, options), reference)
    assert_same_run(run_compat(name, seed, options), reference)


def test_live_complex_parameters_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    target = rng.standard_normal(4) + 1j * rng.standard_normal(4)
    z0 = np.zeros(4, np.complex128)

    tz = torch.tensor(z0, requires_grad=True)
    topt = torch.optim.LBFGS([tz], line_search_fn="strong_wolfe", max_iter=6)
    tt = torch.tensor(target)

    def tclosure():
        topt.zero_grad()
        loss = torch.sum(torch.abs(tz - tt) ** 2 * torch.arange(1, 5)) + torch.sum(tz.real**4)
        loss.backward()
        return loss

    def f(z):
        return jnp.sum(jnp.abs(z - target) ** 2 * jnp.arange(1, 5)) + jnp.sum(z.real**4)

    result = gradxform.minimize(f, jnp.asarray(z0), line_search_fn="strong_wolfe", max_iter=6)
    topt.step(tclosure)
    assert rel_err(result.params, tz.detach().numpy()) <= RTOL
    assert int(result.n_evals) == topt.state[tz]["func_evals"]


@pytest.mark.slow
def test_minimize_is_vmappable_and_works_on_pytrees_with_aux():
    data, x0 = problems.make("logistic", 0)
    f = problems.jax_objective("logistic")
    data = {k: jnp.asarray(v) for k, v in data.items()}

    def fun(p):
        value = f(p, **data)
        return value, {"norm": jnp.sqrt(jnp.sum(p["w"] ** 2))}

    starts = {"b": jnp.array([0.0, 0.3]), "w": jnp.stack([jnp.asarray(x0["w"]), -jnp.asarray(x0["w"])])}
    batched = jax.vmap(lambda p: gradxform.minimize(fun, p, has_aux=True, line_search_fn="strong_wolfe"))(starts)
    for i in range(2):
        single = gradxform.minimize(fun, jax.tree.map(lambda x: x[i], starts), has_aux=True,
                                    line_search_fn="strong_wolfe")
        assert rel_err(batched.params["w"][i], single.params["w"]) < 1e-12
        assert int(batched.n_evals[i]) == int(single.n_evals)
        np.testing.assert_allclose(batched.aux["norm"][i], jnp.sqrt(jnp.sum(single.params["w"] ** 2)))
    # The result's value and gradient are those at the returned parameters.
    value, grad = jax.value_and_grad(lambda p: fun(p)[0])(single.params)
    np.testing.assert_allclose(single.value, value, rtol=1e-12)
    assert rel_err(single.grad["w"], grad["w"]) < 1e-10


def test_minimize_value_and_grad_are_fresh_without_line_search():
    # Without a line search torch does not evaluate the last iterate; minimize does.
    data, x0 = problems.make("quadratic", 0)
    f = problems.jax_objective("quadratic")
    fun = lambda p: f(p, **{k: jnp.asarray(v) for k, v in data.items()})  # noqa: E731
    result = gradxform.minimize(fun, jax.tree.map(jnp.asarray, x0), max_iter=3, max_eval=10)
    assert int(result.n_iter) == 3 and not bool(result.converged)
    np.testing.assert_allclose(result.value, fun(result.params), rtol=1e-13)


def test_minimize_converges_on_rosenbrock():
    def rosenbrock(x):
        return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    result = jax.jit(lambda x: gradxform.minimize(rosenbrock, x, max_iter=500, line_search_fn="strong_wolfe"))(
        jnp.array([-1.2, 1.0, -0.5, 0.8])
    )
    assert bool(result.converged)
    np.testing.assert_allclose(result.params, np.ones(4), atol=1e-6)


@pytest.mark.slow
def test_lbfgs_transform_equals_minimize():
    data, x0 = problems.make("curve_fit", 1)
    f = problems.jax_objective("curve_fit")
    fun = lambda p: f(p, **{k: jnp.asarray(v) for k, v in data.items()})  # noqa: E731
    params = jax.tree.map(jnp.asarray, x0)
    tx = gradxform.lbfgs(line_search_fn="strong_wolfe", max_iter=8)
    state = tx.init(params)
    value, grads = jax.value_and_grad(fun)(params)
    updates, state = jax.jit(lambda g, s, p, v: tx.update(g, s, p, value_fn=fun, value=v))(grads, state, params, value)
    result = gradxform.minimize(fun, params, line_search_fn="strong_wolfe", max_iter=8)
    new = gradxform.apply_updates(params, updates)
    for key in params:
        assert rel_err(new[key], result.params[key]) < 1e-12
    assert int(state.lbfgs.func_evals) == int(result.n_evals)
    # Without value=, the objective is evaluated at params (one more evaluation than given).
    updates2, state2 = tx.update(grads, tx.init(params), params, value_fn=fun)
    assert int(state2.lbfgs.func_evals) == int(result.n_evals)


def _torch_and_compat(torch, name, seed, options):
    """torch's LBFGS and torch_compat's on the same problem: ``(tparams, topt, tclosure,
    model, jopt, jclosure)``."""
    data, x0 = problems.make(name, seed)
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in x0.items()}
    tdata = {k: torch.tensor(v) for k, v in data.items()}
    topt = torch.optim.LBFGS(list(tparams.values()), **options)
    tf = problems.torch_objective(name)

    def tclosure():
        topt.zero_grad()
        loss = tf(tparams, **tdata)
        loss.backward()
        return loss

    model = torch_compat.as_parameters(x0)
    jopt = optim.LBFGS(torch_compat.parameters(model), **options)
    jf, jdata = problems.jax_objective(name), {k: jnp.asarray(v) for k, v in data.items()}

    def jclosure():
        jopt.zero_grad()
        return torch_compat.backward(jf, model, **jdata)

    return tparams, topt, tclosure, model, jopt, jclosure


def test_compat_state_dict_crosses_to_torch_and_back():
    torch = pytest.importorskip("torch")
    options = dict(history_size=4, max_iter=6, line_search_fn="strong_wolfe")
    tparams, topt, tclosure, model, jopt, jclosure = _torch_and_compat(torch, "logistic", 5, options)
    topt.step(tclosure)
    jopt.step(jclosure)
    to_numpy = lambda v: v.detach().numpy() if torch.is_tensor(v) else v  # noqa: E731
    sd = topt.state_dict()
    torch_state = {
        k: {kk: ([to_numpy(x) for x in vv] if isinstance(vv, list) else to_numpy(vv)) for kk, vv in v.items()}
        for k, v in sd["state"].items()
    }
    mine = jopt.state_dict()
    assert list(mine["state"][0]) == list(torch_state[0])  # same keys, same order
    jopt.load_state_dict(pickle.loads(pickle.dumps({"state": torch_state, "param_groups": sd["param_groups"]})))
    # ... and ours into torch: both continue identically.
    ours = jopt.state_dict()
    to_tensor = lambda v: torch.as_tensor(np.asarray(v)) if v is not None and not isinstance(v, (int, float)) else v  # noqa: E731
    topt.load_state_dict({
        "state": {k: {kk: ([to_tensor(x) for x in vv] if isinstance(vv, list) else to_tensor(vv))
                      for kk, vv in v.items()} for k, v in ours["state"].items()},
        "param_groups": ours["param_groups"],
    })
    for _ in range(2):
        topt.step(tclosure)
        jopt.step(jclosure)
    for key, value in tparams.items():
        assert rel_err(np.asarray(model[key].data), value.detach().numpy()) <= RTOL
    assert jopt.state[torch_compat.parameters(model)[0]]["func_evals"] == topt.state[tparams["b"]]["func_evals"]


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_compat_state_lists_follow_torch_step_by_step(line_search_fn):
    """torch's history lists drop their oldest entries and append new ones as the steps go
    on; torch_compat hands back the entries it kept as they were and adds the new ones.
    After every step (a small history, so it wraps within and across steps) each list
    entry matches torch's, in the same order."""
    torch = pytest.importorskip("torch")
    options = dict(history_size=3, max_iter=2, line_search_fn=line_search_fn, tolerance_grad=0.0,
                   tolerance_change=0.0)
    tparams, topt, tclosure, model, jopt, jclosure = _torch_and_compat(torch, "logistic", 7, options)
    lengths = []
    for _ in range(6):
        topt.step(tclosure)
        jopt.step(jclosure)
        theirs = topt.state[tparams[next(iter(tparams))]]
        mine = jopt.state[torch_compat.parameters(model)[0]]
        assert list(mine) == list(theirs)
        assert (mine["n_iter"], mine["func_evals"]) == (theirs["n_iter"], theirs["func_evals"])
        for key in ("old_dirs", "old_stps", "ro", "al")[: 4 if "al" in theirs else 3]:  # al: from torch's 2nd iteration
            assert len(mine[key]) == len(theirs[key]), key
            for got, want in zip(mine[key], theirs[key]):
                assert (got is None) == (want is None), key
                if want is not None:
                    assert rel_err(np.asarray(got), want.detach().numpy()) <= RTOL, key
        for key in ("d", "prev_flat_grad", "H_diag"):
            assert rel_err(np.asarray(mine[key]), np.asarray(torch.as_tensor(theirs[key]).detach())) <= RTOL, key
        for key in ("t", "prev_loss"):  # Python floats in both (ours read from the last evaluation's report)
            assert type(mine[key]) is float, key
            assert rel_err(np.asarray(mine[key]), np.asarray(float(theirs[key]))) <= RTOL, key
        lengths.append(len(mine["old_dirs"]))
    assert lengths[-1] == 3 and lengths[0] < 3  # the history filled, then wrapped


def _cosh_quartic(p):
    """A small smooth problem in ``{"w": (2, 3), "b": (2,)}``."""
    target = jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)
    return jnp.sum(jnp.cosh(p["w"] - target)) + jnp.sum((p["b"] - 0.5) ** 4)


def _compat_closure(model, opt):
    def closure():
        opt.zero_grad()
        return torch_compat.backward(_cosh_quartic, model)

    return closure


def _compat_lbfgs(**options):
    """A torch_compat LBFGS on :func:`_cosh_quartic`: ``(model, opt, closure)``."""
    model = torch_compat.as_parameters({"w": jnp.zeros((2, 3)), "b": jnp.zeros(2)})
    opt = optim.LBFGS(torch_compat.parameters(model), **options)
    return model, opt, _compat_closure(model, opt)


def _lbfgs_snapshot(model, opt):
    """The parameters and the state's values, as numpy (lists entry by entry)."""
    state = opt.state[opt.param_groups[0]["params"][0]]
    out = {f"param {k}": np.asarray(p.data) for k, p in model.items()}
    for key, value in state.items():
        if isinstance(value, list):
            out[key] = [None if v is None else np.asarray(v) for v in value]
        else:
            out[key] = value if value is None or isinstance(value, (int, float)) else np.asarray(value)
    return out


def _assert_same_snapshots(a, b):
    assert list(a) == list(b)
    for key in a:
        if isinstance(a[key], list):
            assert len(a[key]) == len(b[key]), key
            for x, y in zip(a[key], b[key]):
                assert (x is None) == (y is None), key
                if x is not None:
                    np.testing.assert_array_equal(x, y, err_msg=key)
        elif isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_compat_kept_history_gives_the_steps_of_torchs_lists(line_search_fn):
    """A step keeps its history's ring buffers for the next one, which then skips reading
    torch's lists in again. The steps are the same bit for bit as those of an optimizer
    whose lists hold copies of the entries (not the ones the last step stored), which
    must read them in; the history fills and wraps over the steps."""
    options = dict(max_iter=3, history_size=4, tolerance_grad=0.0, tolerance_change=0.0,
                   line_search_fn=line_search_fn)
    kept_model, kept, kept_closure = _compat_lbfgs(**options)
    read_model, read, read_closure = _compat_lbfgs(**options)
    from torch_compat.optim import lbfgs as compat_lbfgs

    lengths, ring = [], compat_lbfgs._ring
    for _ in range(7):
        kept.step(kept_closure)
        read.step(read_closure)
        state = read.state[read.param_groups[0]["params"][0]]
        for key in ("old_dirs", "old_stps", "ro"):
            state[key] = [jnp.array(entry, copy=True) for entry in state[key]]
        _assert_same_snapshots(_lbfgs_snapshot(kept_model, kept), _lbfgs_snapshot(read_model, read))
        lengths.append(len(state["old_dirs"]))
        assert kept._kept is not None  # (a small history: always kept)
    assert lengths[-1] == 4 and lengths[0] < 4
    calls = []
    compat_lbfgs._ring = lambda *args: calls.append(1) or ring(*args)
    try:
        kept.step(kept_closure)
        read.step(read_closure)
    finally:
        compat_lbfgs._ring = ring
    assert len(calls) == 1  # only the optimizer whose lists changed read them in


def test_compat_changed_history_entry_is_read():
    """An entry of torch's lists replaced between steps is what the next step uses (the
    kept ring buffers are not), as an optimizer loaded with the same state uses it."""
    options = dict(max_iter=3, history_size=5, tolerance_grad=0.0, tolerance_change=0.0)
    model, opt, closure = _compat_lbfgs(**options)
    plain_model, plain, plain_closure = _compat_lbfgs(**options)
    for _ in range(3):
        opt.step(closure)
        plain.step(plain_closure)
    state = opt.state[opt.param_groups[0]["params"][0]]
    state["old_stps"][-1] = state["old_stps"][-1] * 0.5
    loaded_model, loaded, loaded_closure = _compat_lbfgs(**options)
    loaded.load_state_dict(opt.state_dict())
    for name, p in loaded_model.items():
        p.data = model[name].data
    for o, c in ((opt, closure), (plain, plain_closure), (loaded, loaded_closure)):
        o.step(c)
    _assert_same_snapshots(_lbfgs_snapshot(model, opt), _lbfgs_snapshot(loaded_model, loaded))
    assert not np.array_equal(np.asarray(model["w"].data), np.asarray(plain_model["w"].data))


def test_compat_history_entries_put_in_by_hand():
    """torch's lists may be given entries of any kind that converts (here Python floats
    for ``ro``, numpy rows): the next steps read them in and go on as an optimizer loaded
    with the same values."""
    options = dict(max_iter=3, history_size=5, tolerance_grad=0.0, tolerance_change=0.0)
    model, opt, closure = _compat_lbfgs(**options)
    for _ in range(2):
        opt.step(closure)
    loaded_model, loaded, loaded_closure = _compat_lbfgs(**options)
    loaded.load_state_dict(opt.state_dict())
    for name, p in loaded_model.items():
        p.data = model[name].data
    state = opt.state[opt.param_groups[0]["params"][0]]
    state["ro"] = [float(r) for r in state["ro"]]
    state["old_dirs"] = [np.asarray(row) for row in state["old_dirs"]]
    for _ in range(2):
        for o, c in ((opt, closure), (loaded, loaded_closure)):
            o.step(c)
        np.testing.assert_array_equal(np.asarray(model["w"].data), np.asarray(loaded_model["w"].data))
        np.testing.assert_array_equal(np.asarray(model["b"].data), np.asarray(loaded_model["b"].data))


def test_compat_lbfgs_pickle_and_deepcopy_continue():
    """A pickled or deep-copied LBFGS steps on as the original, bit for bit. (torch's own
    LBFGS cannot: it loses its parameter list in the round trip.)"""
    model, opt, closure = _compat_lbfgs(max_iter=3, history_size=4, line_search_fn="strong_wolfe")
    opt.step(closure)
    opt.step(closure)
    copies = []
    for clone in (pickle.loads(pickle.dumps((model, opt))), copy.deepcopy((model, opt))):
        clone_model, clone_opt = clone
        assert clone_opt.param_groups[0]["params"][0] is not opt.param_groups[0]["params"][0]
        copies.append((clone_model, clone_opt, _compat_closure(clone_model, clone_opt)))
    for _ in range(2):
        opt.step(closure)
        for clone_model, clone_opt, clone_closure in copies:
            clone_opt.step(clone_closure)
            _assert_same_snapshots(_lbfgs_snapshot(model, opt), _lbfgs_snapshot(clone_model, clone_opt))


def test_compat_options_changed_between_steps_take_effect():
    """The options passed to the compiled calls as arrays are made again when one of
    them changes (a scheduler's lr, a new max_iter): a step after the change is the step
    of an optimizer built with the new options and loaded with the same state."""
    loss = lambda p: jnp.sum((p["x"] - 1.0) ** 4) + jnp.sum(p["x"] ** 2)  # noqa: E731

    def make(x, **options):
        model = torch_compat.as_parameters({"x": x})
        opt = optim.LBFGS(torch_compat.parameters(model), **options)
        return model, opt, lambda: (opt.zero_grad(), torch_compat.backward(loss, model))[1]

    model, opt, closure = make(jnp.array([3.0, -2.0, 0.5]), lr=1.0, max_iter=3)
    opt.step(closure)
    saved, x1 = opt.state_dict(), model["x"].data
    fresh_model, fresh, fresh_closure = make(x1, lr=0.1, max_iter=5)
    fresh.load_state_dict(saved)  # loads the saved group's options too: set the new ones again
    fresh.param_groups[0].update(lr=0.1, max_iter=5)
    same_model, same, same_closure = make(x1, lr=1.0, max_iter=3)
    same.load_state_dict(saved)
    opt.param_groups[0].update(lr=0.1, max_iter=5)
    for o, c in ((opt, closure), (fresh, fresh_closure), (same, same_closure)):
        o.step(c)
    np.testing.assert_array_equal(np.asarray(model["x"].data), np.asarray(fresh_model["x"].data))
    assert opt.state[model["x"]]["n_iter"] == fresh.state[fresh_model["x"]]["n_iter"]
    assert not np.array_equal(np.asarray(model["x"].data), np.asarray(same_model["x"].data))


def test_compat_lbfgs_errors_match_torch():
    p = torch_compat.Parameter(jnp.zeros(2))
    q = torch_compat.Parameter(jnp.zeros(2))
    with pytest.raises(ValueError, match=r"^LBFGS doesn't support per-parameter options \(parameter groups\)$"):
        optim.LBFGS([{"params": [p]}, {"params": [q]}])
    with pytest.raises(ValueError, match=r"^Invalid learning rate: -1$"):
        optim.LBFGS([p], lr=-1)
    opt = optim.LBFGS([p], line_search_fn="backtracking")
    before = p.data
    with pytest.raises(RuntimeError, match=r"^only 'strong_wolfe' is supported$"):
        opt.step(lambda: 0.0)
    assert p.data is before and len(opt.state) == 0
    with pytest.raises(RuntimeError, match=r"^only 'strong_wolfe' is supported$"):
        gradxform.minimize(lambda x: jnp.sum(x**2), jnp.ones(2), line_search_fn="backtracking")
    with pytest.raises(ValueError, match=r"^Invalid learning rate: -1$"):
        gradxform.minimize(lambda x: jnp.sum(x**2), jnp.ones(2), lr=-1)


def test_compat_closure_may_return_a_python_float():
    model = torch_compat.as_parameters({"x": jnp.array([3.0, -1.0])})
    opt = optim.LBFGS(torch_compat.parameters(model), line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        return float(torch_compat.backward(lambda p: jnp.sum((p["x"] - 1.0) ** 2), model))

    first = opt.step(closure)
    assert first == 8.0
    np.testing.assert_allclose(model["x"].data, [1.0, 1.0], atol=1e-6)


def test_compat_run_packs_into_few_arrays_bit_for_bit():
    """Between evaluations the LBFGS run travels packed (a vector per dtype and the two
    history buffers): unpacking gives every field back with its shape, dtype and bits,
    for float32 parameters too (whose scalars are float64 under x64)."""
    from torch_compat.optim import lbfgs as compat_lbfgs

    core = gradxform._internal.lbfgs_core
    for dtype in (jnp.float64, jnp.float32):
        x = jnp.linspace(-1.0, 2.0, 5, dtype=dtype)
        run = core.lbfgs_begin(core.init_state(5, dtype, 3), x)
        for k in range(4):  # a few evaluations of a quadratic: every field moves
            run = core.lbfgs_tell(run, jnp.sum(x**2), 2.0 * core.lbfgs_trial(run) + k, core.LbfgsOptions(
                history_size=3, line_search_fn="strong_wolfe"))
        small, history = jax.jit(compat_lbfgs._pack)(run)
        assert len(small) + len(history) <= 6  # float32, float64, int32, bool; the two buffers
        back = jax.jit(compat_lbfgs._unpack)(small, history)
        assert jax.tree.structure(back) == jax.tree.structure(run)
        for got, want in zip(jax.tree.leaves(back), jax.tree.leaves(run)):
            assert got.shape == want.shape and got.dtype == want.dtype
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_compat_evaluation_call_returns_few_arrays():
    """The compiled call made after each closure evaluation returns the packed run, the
    next point and the report: a jitted call pays per returned array, so this stays small
    however many fields the run has."""
    from torch_compat.optim import lbfgs as compat_lbfgs

    start, advance = compat_lbfgs._compiled_calls(4, "strong_wolfe")
    model = torch_compat.as_parameters({"a": jnp.zeros(3), "b": jnp.zeros((2, 2))})
    opt = optim.LBFGS(torch_compat.parameters(model), history_size=4)
    params = [p.data for p in torch_compat.parameters(model)]
    saved, history, ring, _ = opt._saved({}, params, 4)  # a fresh state's
    dynamic = dict(lr=1.0, max_iter=20, max_eval=25, tolerance_grad=1e-7, tolerance_change=1e-9)
    first = start((0, 0), saved, history, ring, jnp.ones([]), [jnp.ones(3), jnp.ones((2, 2))], params, dynamic)
    small, history, _, _ = first
    out = jax.eval_shape(advance, small, history, jnp.zeros([]), params, params, dynamic)
    for returned in (first, out):
        assert len(jax.tree.leaves(returned)) <= len(params) + 6


def test_compat_list_entries_are_the_arrays_rows():
    """The entries handed back as torch's list items (a whole unstack, blocks, or one
    call each, by how many of the array's rows are wanted) are its last or first rows."""
    from torch_compat.optim import lbfgs as compat_lbfgs

    for shape in ((7,), (20, 3), (100,)):
        array = jnp.arange(float(np.prod(shape))).reshape(shape)
        for count in range(shape[0] + 1):
            for last in (True, False):
                got = compat_lbfgs._entries(array, count, last=last)
                want = np.asarray(array)[shape[0] - count :] if last else np.asarray(array)[:count]
                assert len(got) == count
                for entry, row in zip(got, want):
                    assert isinstance(entry, jax.Array) and entry.shape == shape[1:]
                    np.testing.assert_array_equal(np.asarray(entry), row)


def test_compat_steps_compile_once_as_the_history_grows():
    """torch's state keeps the history as lists whose length grows step by step; the calls
    that read it in and write it out at each step compile once, not once per length
    (each would cost about as much as the step's own compile), and a fresh state's step
    starts with the same compiled call as the others."""
    _, opt, closure = _compat_lbfgs(max_iter=2, history_size=7, tolerance_grad=0.0, tolerance_change=0.0)
    compiled = []

    class Compiles(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if message.startswith("Finished XLA compilation of jit("):
                compiled[-1].append(message[len("Finished XLA compilation of jit(") :].split(")")[0])

    handler, lengths = Compiles(), []
    logging.getLogger("jax").addHandler(handler)
    try:
        with jax.log_compiles(True):
            for _ in range(9):
                compiled.append([])
                opt.step(closure)
                lengths.append(len(opt.state[opt.param_groups[0]["params"][0]]["old_dirs"]))
    finally:
        logging.getLogger("jax").removeHandler(handler)
    assert lengths == [0, 1, 2, 3, 4, 5, 6, 7, 7]  # a pair per step (the first step's two iterations make none)
    programs = [name for step in compiled for name in step]
    assert programs.count("start") == 1 and programs.count("advance") == 1
    # _finish: one program for a step that stored no pair (the first here), one for the others.
    assert programs.count("_finish") == 2
    # The lists' entries: an unstack per shape, and a program that takes one entry (a few
    # entries of a long list), each compiled once. None more as the history grows.
    assert compiled[4:] == [[]] * 5, compiled


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_non_finite_gradient_never_reaches_the_parameters(line_search_fn):
    # The objective and its gradient are NaN beyond x[0] > 2, and its minimum (at 5) lies
    # there. (A NaN value with a finite gradient is another matter: torch follows the
    # gradient, and so does minimize; see test_lbfgs_status.py.)
    def f(x):
        return jnp.sum((x - 5.0) ** 2) + jnp.where(x[0] > 2.0, jnp.sqrt(2.0 - x[0]), 0.0)

    result = gradxform.minimize(f, jnp.zeros(2), line_search_fn=line_search_fn, max_iter=30)
    assert np.all(np.isfinite(result.params)) and np.isfinite(float(result.value))
    assert float(result.params[0]) <= 2.0
    assert not bool(result.converged)
    np.testing.assert_allclose(result.value, f(result.params))
    if line_search_fn is None:
        assert bool(result.failed)  # the unsearched step landed on NaN: stop at the last finite point
        assert int(result.status) == 6  # NON_FINITE


def test_non_finite_start_stops_at_once():
    # sqrt(-1): NaN value and gradient (a NaN value alone does not stop torch, nor minimize).
    result = gradxform.minimize(lambda x: jnp.sum(jnp.sqrt(x)), jnp.array([-1.0, 2.0]))
    assert bool(result.failed) and int(result.n_iter) == 0 and int(result.status) == 6
    np.testing.assert_array_equal(result.params, [-1.0, 2.0])


def test_compat_lbfgs_survives_a_closure_with_a_non_finite_gradient():
    model = torch_compat.as_parameters({"x": jnp.array([0.0])})
    opt = optim.LBFGS(torch_compat.parameters(model), max_iter=10)

    def loss_fn(p):
        x = p["x"][0]
        return (x - 3.0) ** 2 + jnp.where(x > 1.5, jnp.sqrt(1.5 - x), 0.0)

    def closure():
        opt.zero_grad()
        return torch_compat.backward(loss_fn, model)

    opt.step(closure)
    value = float(model["x"].data[0])
    assert np.isfinite(value) and value <= 1.5

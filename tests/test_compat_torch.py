"""torch_compat.optim against torch.optim (torch 2.13), step by step, live.

Every ``torch_compat.optim`` class is driven beside its ``torch.optim`` twin: the same
initial parameters, the same options, and gradients that each side computes from its OWN
current parameters (``g = c * p + noise_t``, masked for SparseAdam), so that any
divergence shows and grows. After every step the parameters and every per-parameter state
entry are compared: presence, key names and order, value types (torch keeps ``step`` as a
float32 0-d tensor, SparseAdam as a Python int), dtypes, shapes and values (norm-wise
relative error per array: 1e-10 for float64/complex128, 1e-5 for float32/complex64). The
samplers, the two sides and the comparisons are in ``compat_harness.py``; this file holds
the scenarios.

Options are drawn at random from a seed, in valid ranges. A class's standard layout has two
groups: a float64 group on the constructor's options and a float32 group overriding all of
them, with every flag the other way round (and zero where the constructor's value is
nonzero, and the reverse). The complex test adds a third draw (a group overriding some
options). All scenarios of a class share that layout and its first steps, so their
compiled steps are reused: the file compiles each class's step about eight times (a
compilation costs ~0.3 s on CPU, most of this file's run time).

Scenarios: groups and lazily created state; options changed by hand between steps (float
options, a 0-d array lr, weight_decay 0 <-> nonzero, maximize and other flags) and
add_param_group mid-run; state_dict round trips (ours -> ours, torch -> numpy -> ours,
ours -> numpy -> torch, then everyone continues); step(closure); zero_grad; complex
parameters; and special cases (SparseAdam with BCOO gradients, sparse gradients for SGD
and Adagrad, duplicate parameters, float32 tensor lr, SGD without momentum, Muon on a
larger matrix).

The implementation flags (``foreach``, ``fused``, ``capturable``, ``differentiable``)
have no effect in torch_compat. Both sides get values that select torch's reference
single-tensor implementation on CPU; the "flags flipped" scenario then sets them to True on
our side only (torch keeps its reference), and the numbers must not move.
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import sparse

import torch_compat as tc

torch = pytest.importorskip("torch")

jax.config.update("jax_enable_x64", True)

from compat_harness import (  # noqa: E402
    COMPLEX_NAMES,
    MUON_LARGE_TOL,
    NAMES,
    SPECS,
    OurSide,
    TorchSide,
    _float_change,
    _mask,
    _n,
    _noise,
    _static_flip,
    _to_np,
    _torch_options,
    check,
    check_groups,
    check_state_dicts,
    draw_config,
    lazy,
    make_pair,
    our_class,
    rel_err,
    run,
    torch_class,
)


@pytest.fixture(autouse=True)
def _torch_single_thread():
    """torch's intra-op thread pool makes its sparse ops on these tiny tensors ~100x slower
    on a busy 2-core machine; the comparisons run torch on one thread (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_torch_version():
    assert torch.__version__.startswith("2.13.0"), torch.__version__


# ---------------------------------------------------------------------------------------
# Scenarios.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_groups_and_lazy_state(name):
    """Groups with per-group options (every flag both ways); params without a gradient at some steps.

    State appears on the first step a parameter has a gradient (Adagrad: at construction,
    as in torch), and step counts are per parameter.
    """
    ts, os_ = make_pair(name, seed=1)
    check(ts, os_, name, "initial")
    check_groups(ts, os_, "constructed")
    before = {i for i in range(_n(name)) if os_.state_of(i)}
    assert before == ({*range(_n(name))} if name == "Adagrad" else set())
    run([ts, os_], name, 1)
    if name != "Adagrad":
        assert os_.state_of(1) is None and os_.state_of(0)  # no gradient yet: no state
    run([ts, os_], name, 14)
    check_state_dicts(ts, os_, name, "after 15 steps")
    check_groups(ts, os_, "after 15 steps")
    if "step" in (os_.state_of(0) or {}):
        steps = [int(np.asarray(os_.state_of(i)["step"])) for i in range(_n(name))]
        assert steps == [14, 14, 15][: len(steps)], steps


@pytest.mark.parametrize("name", NAMES)
def test_options_changed_by_hand_and_add_param_group(name):
    """group options changed between steps (float options, weight_decay 0 <-> nonzero,
    maximize and other flags), then a group added mid-run, whose lr is changed before its
    first step."""
    ts, os_ = make_pair(name, seed=1)
    rng = np.random.default_rng(5)
    run([ts, os_], name, 5)
    change, flip = _float_change(name), _static_flip(name)
    n_groups = len(os_.opt.param_groups)
    for g in range(n_groups):
        new = change(os_.opt.param_groups[g], rng)
        ts.opt.param_groups[g].update(new)
        os_.opt.param_groups[g].update(new)
    run([ts, os_], name, 3, label="(float options changed)")
    # lr as a 0-d float64 array (a tensor on torch's side). (A float32 one: see
    # test_float32_tensor_lr.)
    for g in range(n_groups):
        lr = np.float64(os_.opt.param_groups[g]["lr"] * 1.1)
        ts.opt.param_groups[g]["lr"] = torch.tensor(lr)
        os_.opt.param_groups[g]["lr"] = jnp.asarray(lr)
    run([ts, os_], name, 2, label="(lr a 0-d array)")
    check_groups(ts, os_, "lr a 0-d array")
    saved = [{k: os_.opt.param_groups[g][k] for k in flip(os_.opt.param_groups[g])} for g in range(n_groups)]
    for g in range(n_groups):
        new = flip(os_.opt.param_groups[g])
        ts.opt.param_groups[g].update(_torch_options(new))
        os_.opt.param_groups[g].update(new)
    run([ts, os_], name, 3, label="(flags flipped)")
    for g in range(n_groups):
        ts.opt.param_groups[g].update(_torch_options(saved[g]))
        os_.opt.param_groups[g].update(saved[g])
    run([ts, os_], name, 3, label="(flags back)")

    # add_param_group: a new float64 parameter, given alone (not in a list), one option overridden.
    array = np.random.default_rng(11).standard_normal((2, 3))
    tp, op = torch.nn.Parameter(torch.from_numpy(array.copy())), tc.Parameter(jnp.asarray(array))
    override = {"lr": os_.opt.defaults["lr"] * 0.5}
    ts.opt.add_param_group({"params": tp, **override})
    os_.opt.add_param_group({"params": op, **override})
    ts.params.append(tp)
    os_.params.append(op)
    check_groups(ts, os_, "after add_param_group")
    assert os_.opt.param_groups[-1]["params"] == [op]
    # The new group's lr changed before its first step (Rprop and ASGD read it into state).
    ts.opt.param_groups[-1]["lr"] = os_.opt.param_groups[-1]["lr"] = override["lr"] * 1.5
    run([ts, os_], name, 6, start_lazy=False, label="(group added)")
    check_state_dicts(ts, os_, name, "after add_param_group")


def _numpy_state_dict(tsd):
    """torch's state_dict with its tensors as numpy arrays (``.numpy()``: they share torch's
    live buffers, which torch's later steps update in place)."""
    return {
        "state": {i: {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in s.items()}
                  for i, s in tsd["state"].items()},
        "param_groups": tsd["param_groups"],
    }


def _torch_state_dict(osd):
    """Our state_dict with its arrays as tensors (numpy, then ``torch.as_tensor``)."""
    return {
        "state": {i: {k: (torch.as_tensor(np.array(v)) if isinstance(v, jax.Array) else v) for k, v in s.items()}
                  for i, s in osd["state"].items()},
        "param_groups": [_torch_options(g) for g in copy.deepcopy(osd["param_groups"])],
    }


def _fresh(side, name, overrides, defaults, values):
    """A new side like ``side`` (same group sizes), built with ``defaults``, from ``values``."""
    if side.is_torch:
        params = [torch.nn.Parameter(torch.from_numpy(np.array(v))) for v in values]
        overrides = [_torch_options(o) for o in overrides]
        defaults = _torch_options(defaults)
        cls, side_cls = torch_class(name), TorchSide
    else:
        params = [tc.Parameter(jnp.asarray(v)) for v in values]
        cls, side_cls = our_class(name), OurSide
    groups, k = [], 0
    for g, group in enumerate(side.opt.param_groups):
        n = len(group["params"])
        groups.append({"params": params[k:k + n], **overrides[g]})
        k += n
    return side_cls(cls(groups, **defaults), params, side.seed, side.c, side.sparse_grads, t=side.t)


def _assert_identical(a: OurSide, b: OurSide, where):
    for i, (x, y) in enumerate(zip(a.values(), b.values())):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y, err_msg=f"{where}: param {i}")
    for i in range(len(a.params)):
        sa, sb = a.state_of(i), b.state_of(i)
        assert (sa is None) == (sb is None), where
        if sa is None:
            continue
        assert list(sa) == list(sb), where
        for k in sa:
            if sb[k] is None or isinstance(sb[k], int):
                assert sa[k] == sb[k] and type(sa[k]) is type(sb[k]), (where, i, k)
            else:
                assert sa[k].dtype == sb[k].dtype, (where, i, k)
                np.testing.assert_array_equal(np.asarray(sa[k]), np.asarray(sb[k]), err_msg=f"{where} {i} {k}")


def round_trips(name, ts, os_, overrides, defaults, steps, stepper):
    """Saves both sides, loads each state dict into fresh optimizers (built with another lr,
    which the load restores) and continues all of them side by side:

    * torch -> numpy -> ours (O2), against torch loading its own state dict (T3): a load
      casts the saved floating-point state to the parameter's dtype in torch (ASGD's
      ``eta``, NAdam's ``mu_product`` become float64 for a float64 parameter), so the
      reference for a loaded optimizer is a loaded torch optimizer;
    * ours -> numpy -> torch (T2, via ``torch.as_tensor``), against ours loading our own
      state dict (O3);
    * ours -> ours: O3 continues bit for bit as the uninterrupted O where the load keeps
      every state dtype (it does unless torch's load policy casts one, as above).
    """
    tsd, osd = ts.opt.state_dict(), os_.opt.state_dict()
    check_state_dicts(ts, os_, name, "saved")
    other = {**defaults, "lr": defaults["lr"] * 3}
    t3 = _fresh(ts, name, overrides, other, ts.values())
    t3.opt.load_state_dict(copy.deepcopy(tsd))
    o2 = _fresh(os_, name, overrides, other, ts.values())
    o2.opt.load_state_dict(_numpy_state_dict(tsd))
    t2 = _fresh(ts, name, overrides, other, os_.values())
    t2.opt.load_state_dict(_torch_state_dict(osd))
    o3 = _fresh(os_, name, overrides, other, os_.values())
    o3.opt.load_state_dict(osd)
    for torch_side, our_side, label in [(t3, o2, "torch -> ours"), (t2, o3, "ours -> torch")]:
        check(torch_side, our_side, name, f"({label}, loaded)")
        check_groups(torch_side, our_side, label)
        check_state_dicts(torch_side, our_side, name, label)
    same_dtypes = all(
        getattr(v, "dtype", None) == getattr(o3.state_of(i)[k], "dtype", None)
        for i in range(len(os_.params)) if os_.state_of(i) for k, v in os_.state_of(i).items())
    if same_dtypes:
        _assert_identical(o3, os_, "ours -> ours, loaded")
    sides = [ts, os_, t3, o2, t2, o3]
    for _ in range(steps):
        stepper(sides)
        check(ts, os_, name, "(uninterrupted)")
        check(t3, o2, name, "(torch -> ours)")
        check(t2, o3, name, "(ours -> torch)")
        if same_dtypes:
            _assert_identical(o3, os_, "ours -> ours")
    return same_dtypes


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trips(name):
    """ours -> ours, torch -> numpy -> ours and ours -> numpy -> torch, then all continue."""
    ts, os_ = make_pair(name, seed=1)
    run([ts, os_], name, 6)
    defaults, overrides = draw_config(name, 1)

    def stepper(sides):
        t = sides[0].t
        for side in sides:
            side.step(lazy(t))

    same_dtypes = round_trips(name, ts, os_, overrides, defaults, 5, stepper)
    # torch's load policy casts float32 scalar state to a float64 parameter's dtype.
    assert same_dtypes == (name not in ("ASGD", "NAdam"))


@pytest.mark.parametrize("name", NAMES)
def test_step_with_closure(name):
    """step(closure) calls the closure first and returns exactly what it returned
    (a Python float, a JAX scalar, a torch tensor on torch's side)."""
    ts, os_ = make_pair(name, seed=1)
    for k in range(6):
        t = ts.t
        value = float(k) * 0.5 if k % 2 else jnp.asarray(k, jnp.float32)
        ts.step(lazy(t), closure_value=torch.tensor(float(k)))
        os_.step(lazy(t), closure_value=value)
        check(ts, os_, name, "(closure)")


@pytest.mark.parametrize("name", NAMES)
def test_zero_grad(name):
    """zero_grad(): set_to_none=True leaves params and state alone at the next step;
    set_to_none=False gives zero gradients that still count as a step."""
    ts, os_ = make_pair(name, seed=1)
    run([ts, os_], name, 4)
    for side in (ts, os_):
        side.set_grads(lambda i: True)
        side.opt.zero_grad()  # default: set_to_none=True
        assert all(p.grad is None for p in side.params)
        assert side.opt.step() is None
    check(ts, os_, name, "(step after zero_grad())")
    for side in (ts, os_):
        side.set_grads(lambda i: True)
        side.opt.zero_grad(set_to_none=False)
    for tp, op in zip(ts.params, os_.params):
        assert op.grad is not None and tp.grad is not None
        dense = op.grad.todense() if isinstance(op.grad, sparse.BCOO) else op.grad
        assert dense.shape == op.shape and dense.dtype == op.dtype
        assert not np.any(np.asarray(dense))
    for side in (ts, os_):
        side.opt.step()
    check(ts, os_, name, "(step on zero gradients)")
    if name not in ("SGD", "Muon"):  # param 0 had gradients at steps 0, 2, 3, then zeros
        assert int(np.asarray(os_.state_of(0)["step"])) == 4
    run([ts, os_], name, 3, start_lazy=False, label="(after zero gradients)")


@pytest.mark.parametrize("name", COMPLEX_NAMES)
def test_complex_params(name):
    """complex64 and complex128 parameters (torch views them as real pairs)."""
    spec = SPECS[name]
    defaults, overrides = draw_config(name, 3)
    overrides = [overrides[0], overrides[2]]
    if name == "Adagrad":  # torch fills a complex sum with complex(v, v)
        defaults["initial_accumulator_value"] = 0.3
    shapes = (((3, 2),), ((),))  # and a 0-d parameter
    ts, os_ = make_pair(name, seed=3, dtypes=("complex128", "complex64"), config=(defaults, overrides),
                        shapes=shapes)
    assert spec.complex_ok
    run([ts, os_], name, 8, start_lazy=False)
    check_state_dicts(ts, os_, name, "complex")

    def stepper(sides):
        for side in sides:
            side.step()

    # torch's load casts state only for floating-point (not complex) parameters.
    assert round_trips(name, ts, os_, overrides, defaults, 3, stepper)


# ---------------------------------------------------------------------------------------
# Special cases.
# ---------------------------------------------------------------------------------------


def _single(name, arrays, **options):
    tps = [torch.nn.Parameter(torch.from_numpy(np.array(a))) for a in arrays]
    ops = [tc.Parameter(jnp.asarray(a)) for a in arrays]
    return torch_class(name)(tps, **options), tps, our_class(name)(ops, **options), ops


def test_sgd_without_momentum_keeps_no_state():
    """torch 2.13's SGD touches no state when momentum == 0: ``optimizer.state`` stays
    empty and ``state_dict()["state"] == {}``."""
    x = np.random.default_rng(0).standard_normal(4)
    topt, tps, oopt, ops = _single("SGD", [x], lr=0.1)
    for k in range(3):
        tps[0].grad = torch.ones(4, dtype=torch.float64) * (k + 1)
        ops[0].grad = jnp.ones(4) * (k + 1)
        topt.step()
        oopt.step()
    np.testing.assert_allclose(np.asarray(ops[0].data), _to_np(tps[0]), rtol=1e-14)
    assert dict(topt.state) == {} and topt.state_dict()["state"] == {}
    assert dict(oopt.state) == {}, dict(oopt.state)
    assert oopt.state_dict()["state"] == {}


def test_sgd_momentum_to_zero_and_back_keeps_buffer():
    """With momentum set to 0 by hand, torch leaves ``momentum_buffer`` as it was; set back
    to nonzero, torch continues from that buffer."""
    x = np.random.default_rng(1).standard_normal(4)
    topt, tps, oopt, ops = _single("SGD", [x], lr=0.1, momentum=0.9)
    ts = TorchSide(topt, tps, 4, 0.3, False)
    os_ = OurSide(oopt, ops, 4, 0.3, False)
    for momentum in (0.9, 0.9, 0.0, 0.0, 0.8, 0.8):
        topt.param_groups[0]["momentum"] = oopt.param_groups[0]["momentum"] = momentum
        ts.step()
        os_.step()
        check(ts, os_, "SGD", f"(momentum {momentum})")


def _bcoo_from_dense(dense):
    """A BCOO array holding the nonzero entries of a numpy array (built in numpy: no compile)."""
    indices = np.argwhere(dense != 0)
    return sparse.BCOO((jnp.asarray(dense[tuple(indices.T)]), jnp.asarray(indices)), shape=dense.shape)


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_duplicate_parameter_in_a_group(name):
    """A parameter listed twice in a group: torch warns (the same warning on both sides)
    and its step updates the parameter once per occurrence, sharing one state."""
    x = np.random.default_rng(5).standard_normal(3)
    options = dict(lr=0.1, momentum=0.9) if name == "SGD" else dict(lr=0.1)
    with pytest.warns(UserWarning, match="duplicate parameters") as torch_warnings:
        tp = torch.nn.Parameter(torch.from_numpy(x.copy()))
        topt = torch_class(name)([tp, tp], **options)
    with pytest.warns(UserWarning, match="duplicate parameters") as our_warnings:
        op = tc.Parameter(jnp.asarray(x))
        oopt = our_class(name)([op, op], **options)
    assert [str(w.message) for w in our_warnings] == [str(w.message) for w in torch_warnings
                                                       if "duplicate" in str(w.message)]
    ts, os_ = TorchSide(topt, [tp], 8, 0.3, False), OurSide(oopt, [op], 8, 0.3, False)
    for _ in range(3):
        ts.step()
        os_.step()
        check(ts, os_, name, "(duplicate parameter)")


@pytest.mark.parametrize("name", ["Adam", "ASGD", "SGD"])
def test_float32_tensor_lr(name):
    """``lr`` given as a float32 0-d tensor (``torch.tensor(0.01)``'s default dtype): torch
    keeps it a tensor, so its scalar arithmetic (Adam's ``lr / bias_correction1``, ASGD's
    ``eta``) runs in float32; here it is a float32 JAX scalar. The parameters are float64.

    Documented difference: torch_compat reads the array's value and computes the
    lr-derived coefficients in float64, as for a Python float, so the two agree to
    float32 rounding of those coefficients (1e-6 relative), not to 1e-10."""
    x = np.random.default_rng(6).standard_normal((3, 2))
    options = dict(lr=0.01) if name != "SGD" else dict(lr=0.01, momentum=0.9)
    topt, tps, oopt, ops = _single(name, [x], **options)
    topt.param_groups[0]["lr"] = torch.tensor(0.0123)
    oopt.param_groups[0]["lr"] = jnp.asarray(0.0123, jnp.float32)
    ts, os_ = TorchSide(topt, tps, 9, 0.3, False), OurSide(oopt, ops, 9, 0.3, False)
    for _ in range(5):
        ts.step()
        os_.step()
        for tv, ov in zip(ts.values(), os_.values()):
            assert rel_err(ov, tv) <= 1e-6, f"{name} (float32 tensor lr) step {ts.t}"


def test_sgd_and_adagrad_sparse_gradients():
    """torch's SGD and Adagrad accept sparse gradients; ours take BCOO gradients (and give
    the numbers torch gives; torch's SGD keeps a sparse momentum buffer, ours a dense one)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 3))
    for name, options in [("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1)),
                          ("Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1))]:
        topt, tps, oopt, ops = _single(name, [x], **options)
        for t in range(5):
            mask = _mask(9, t, 0, x.shape)
            noise = _noise(9, t, 0, x.shape, np.float64)
            tps[0].grad = ((0.3 * tps[0].detach() + torch.from_numpy(noise)) * torch.from_numpy(mask)).to_sparse()
            ops[0].grad = _bcoo_from_dense((0.3 * np.asarray(ops[0].data) + noise) * mask)
            topt.step()
            oopt.step()
            err = rel_err(np.asarray(ops[0].data), _to_np(tps[0]))
            assert err <= 1e-12, (name, options, t, err)
            assert list(oopt.state[ops[0]]) == list(topt.state[tps[0]])
            for key, ref in topt.state[tps[0]].items():
                ours = oopt.state[ops[0]][key]
                if key == "step":
                    assert float(ours) == float(ref)
                else:
                    assert rel_err(np.asarray(ours), _to_np(ref)) <= 1e-12, (name, key)


def _coo(indices, values, shape, dtype):
    return torch.sparse_coo_tensor(torch.as_tensor(indices), torch.as_tensor(values, dtype=dtype), shape)


def test_sparse_adam_bcoo_gradients():
    """SparseAdam with BCOO gradients against torch COO gradients: element-sparse with an
    explicit zero value (an entry still "touched"), duplicate indices (summed, as torch's
    coalesce does), row-sparse (a dense trailing axis, as an embedding's gradient); a
    float64 and a float32 parameter in one optimizer."""
    x = np.random.default_rng(3).standard_normal((6, 3))
    topt, tps, oopt, ops = _single("SparseAdam", [x, x.astype(np.float32)], lr=0.05, betas=(0.8, 0.99), eps=1e-7)
    for t in range(7):
        r = np.random.default_rng([t, 1])
        kind = t % 3
        if kind == 0:  # element-sparse, unique indices, one explicit zero value
            idx = np.array([[0, 2, 5, 3], [1, 0, 2, 2]])
            val = r.standard_normal(4)
            val[1] = 0.0
        elif kind == 1:  # duplicate indices
            idx = np.array([[1, 1, 4, 0], [2, 2, 0, 1]])
            val = r.standard_normal(4)
        else:  # row-sparse
            idx = np.array([[5, 2]])
            val = r.standard_normal((2, 3))
        for i, tdtype in [(0, torch.float64), (1, torch.float32)]:
            tps[i].grad = _coo(idx, val, (6, 3), tdtype)
            ops[i].grad = sparse.BCOO((jnp.asarray(val, dtype=ops[i].dtype), jnp.asarray(idx.T)), shape=(6, 3))
            assert ops[i].grad.n_dense == (1 if kind == 2 else 0)
        topt.step()
        oopt.step()
        for i in range(2):
            tol = 1e-5 if i == 1 else 1e-10
            err = rel_err(np.asarray(ops[i].data), _to_np(tps[i]))
            assert err <= tol, (t, i, err)
            tstate, ostate = topt.state[tps[i]], oopt.state[ops[i]]
            assert list(ostate) == list(tstate) == ["step", "exp_avg", "exp_avg_sq"]
            assert type(ostate["step"]) is int and ostate["step"] == tstate["step"] == t + 1
            for key in ("exp_avg", "exp_avg_sq"):
                assert rel_err(np.asarray(ostate[key]), _to_np(tstate[key])) <= tol, (t, i, key)


def test_sparse_adam_zero_grad_set_to_none_false():
    """zero_grad(set_to_none=False) with sparse gradients: torch's empty sparse gradient
    still counts a step; the parameter and moments stay as they are."""
    x = np.random.default_rng(4).standard_normal((4, 2))
    topt, tps, oopt, ops = _single("SparseAdam", [x], lr=0.1)
    tps[0].grad = _coo([[1], [0]], [2.0], (4, 2), torch.float64)
    ops[0].grad = sparse.BCOO((jnp.asarray([2.0]), jnp.asarray([[1, 0]])), shape=(4, 2))
    topt.step()
    oopt.step()
    topt.zero_grad(set_to_none=False)
    oopt.zero_grad(set_to_none=False)
    topt.step()
    oopt.step()
    assert oopt.state[ops[0]]["step"] == topt.state[tps[0]]["step"] == 2
    np.testing.assert_allclose(np.asarray(ops[0].data), _to_np(tps[0]), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(oopt.state[ops[0]]["exp_avg"]), _to_np(topt.state[tps[0]]["exp_avg"]),
                               rtol=1e-14)


def test_muon_bf16_agreement_larger_matrix():
    """A 64x32 matrix, default options: the bfloat16 Newton-Schulz results differ from
    torch's by one bfloat16 ulp in a few percent of the entries (float32 accumulation in
    another order); measured relative error after 15 steps ~1e-4 (float64 parameter).

    (Both sides start from a loaded zero momentum buffer, the same as a fresh one for Muon:
    that spares a compilation.)"""
    rng = np.random.default_rng(6)
    topt, tps, oopt, ops = _single("Muon", [rng.standard_normal((64, 32))], lr=0.02)
    zero = np.zeros((64, 32))
    topt.load_state_dict({"state": {0: {"momentum_buffer": torch.from_numpy(zero.copy())}},
                          "param_groups": topt.state_dict()["param_groups"]})
    oopt.load_state_dict({"state": {0: {"momentum_buffer": zero}}, "param_groups": oopt.state_dict()["param_groups"]})
    ts, os_ = TorchSide(topt, tps, 6, 0.3, False), OurSide(oopt, ops, 6, 0.3, False)
    worst = 0.0
    for _ in range(15):
        ts.step()
        os_.step()
        worst = max(worst, rel_err(os_.values()[0], ts.values()[0]))
    assert worst <= MUON_LARGE_TOL, worst

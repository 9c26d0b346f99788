"""Broken per-parameter state, and torch habits that fail here: torch_compat refuses them
with torch's exception type and text (plus, for the habits, one sentence saying what to
do), and a refusal changes nothing.

The written cases of bad input (options, params, ``load_state_dict``, ...) are the one
table of ``bad_input_cases``, run by ``test_bad_input.py``; this file holds the tests
that walk every class's per-parameter state, and the messages about Parameters.
"""

from __future__ import annotations

import copy
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bad_input_cases
import torch_compat as tc
from bad_input_cases import ARRAYS_HINT, DTYPE_HINT, OurLib, TorchLib
from torch_compat import optim as tco

try:
    import torch
except ImportError:  # our side still runs
    torch = None


def _libs():
    libs = [pytest.param(OurLib(), id="ours")]
    if torch is not None:
        libs.append(pytest.param(TorchLib(), id="torch"))
    return libs


def _snapshot(opt, params):
    """Everything a refused call must leave alone, as plain numpy/Python values."""
    def plain(v):
        if isinstance(v, jax.Array):
            return ("array", str(v.dtype), v.shape, np.array(v))
        return ("value", type(v).__name__, v)

    state = [
        (params.index(p) if p in params else repr(p), [(k, plain(v)) for k, v in s.items()])
        for p, s in opt.state.items()
    ]
    groups = [
        ([id(p) for p in g["params"]], {k: copy.deepcopy(v) for k, v in g.items() if k != "params"})
        for g in opt.param_groups
    ]
    return [np.array(p.data) for p in params], [str(p.dtype) for p in params], state, groups


def _assert_same_snapshot(before, after):
    (data0, dtypes0, state0, groups0), (data1, dtypes1, state1, groups1) = before, after
    assert dtypes0 == dtypes1
    for a, b in zip(data0, data1):
        np.testing.assert_array_equal(a, b)
    assert [s[0] for s in state0] == [s[0] for s in state1], "state keys changed"
    for (_, entries0), (_, entries1) in zip(state0, state1):
        assert [k for k, _ in entries0] == [k for k, _ in entries1]
        for (_, v0), (_, v1) in zip(entries0, entries1):
            assert v0[:-1] == v1[:-1]
            if v0[0] == "array":
                np.testing.assert_array_equal(v0[-1], v1[-1])
            else:
                assert v0[-1] == v1[-1] or (v0[-1] != v0[-1] and v1[-1] != v1[-1])  # NaN stays NaN
    assert groups0 == groups1, "param_groups changed"


# -- broken per-parameter state: torch's refusal, and nothing changed ----------------------
#
# Each class keeps per-parameter state (bad_input_cases.CORE lists the 14). Trained two
# steps on a matrix and a vector (two matrices for Muon), with options that make it keep
# every state key it has; then one key is removed or one buffer reshaped, in a loaded
# state dict or in ``optimizer.state[p]``. The expected outcome is torch 2.13's, written
# here and checked on torch's side when torch is importable. On our side, a refusal must
# leave every parameter and the whole state as they were.

STATE_CLASSES = list(bad_input_cases.CORE)
FULL_STATE_OPTIONS = {
    "SGD": {"momentum": 0.9},
    "RMSprop": {"momentum": 0.9, "centered": True},
    "Adam": {"amsgrad": True},
    "AdamW": {"amsgrad": True},
    "Muon": {"ns_steps": 1},
}


def _state_shapes(cls):
    return ((2, 3), (3, 2)) if cls == "Muon" else ((2, 3), (3,))


def _set_grads(lib, cls, params, value=0.5):
    for p in params:
        grad = np.full(p.shape, value)
        p.grad = lib.sparse(grad) if cls == "SparseAdam" else lib.dense(grad)


def _state_trained(lib, cls):
    params = [lib.P(np.linspace(-1.0, 1.0, int(np.prod(s))).reshape(s) + k) for k, s in enumerate(_state_shapes(cls))]
    opt = getattr(lib.optim, cls)(params, **FULL_STATE_OPTIONS.get(cls, {}))
    for t in range(2):
        _set_grads(lib, cls, params, 0.5 + t)
        opt.step()
    return opt, params


def _outcome(call):
    """``"ok"`` or ``(type, message)`` of what ``call()`` raised."""
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the type is what is compared
        return type(error), str(error)
    return "ok"


def _refused_unchanged(lib, opt, params, call):
    """``_outcome(call)``; on our side a refusal must have changed nothing."""
    before = _snapshot(opt, params) if lib.name == "ours" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = _outcome(call)
    if before is not None and result != "ok":
        _assert_same_snapshot(before, _snapshot(opt, params))
    return result


# What torch 2.13 reads from a loaded state in ``__setstate__`` (KeyError at load).
READ_ON_LOAD = {"ASGD": ("step", "eta", "mu"), "NAdam": ("step", "mu_product"), "SGD": (), "Muon": (),
                "SparseAdam": ()}


def _expected_missing(cls, key, via):
    """torch's outcome when a trained state lacks ``key``: ``(when, result)``."""
    if cls in ("SGD", "Muon"):
        return "step", "ok"  # torch creates momentum_buffer afresh
    if cls == "Adafactor" and key in ("row_var", "col_var"):
        return "step", (AssertionError, "row_var and col_var should be defined when grad is multidimensional")
    if cls == "Adafactor" and key == "variance":
        return "step", (AssertionError, "variance should be defined when grad is a vector")
    when = "load" if via == "load" and key in READ_ON_LOAD.get(cls, ("step",)) else "step"
    return when, (KeyError, repr(key))  # str(KeyError("step")) == "'step'"


@pytest.mark.parametrize("via", ["load", "edit"])
@pytest.mark.parametrize("lib", _libs())
@pytest.mark.parametrize("cls", STATE_CLASSES)
def test_state_missing_a_key(cls, lib, via):
    """A key missing from one parameter's state, in a loaded state dict or deleted from
    ``optimizer.state[p]``: torch's KeyError (its AssertionError for Adafactor's
    factors) at ``load_state_dict`` or at ``step()``, as in torch; SGD and Muon create
    ``momentum_buffer`` afresh."""
    opt, params = _state_trained(lib, cls)
    cases = [(index, key) for index, p in enumerate(params) for key in opt.state[p]]
    assert cases
    for index, key in cases:
        opt, params = _state_trained(lib, cls)
        expected_when, expected = _expected_missing(cls, key, via)
        if via == "load":
            saved = opt.state_dict()
            saved["state"][index] = {k: v for k, v in saved["state"][index].items() if k != key}
            got = _refused_unchanged(lib, opt, params, lambda: opt.load_state_dict(saved))
            when = "load"
            if got == "ok":
                _set_grads(lib, cls, params)
                got, when = _refused_unchanged(lib, opt, params, opt.step), "step"
        else:
            del opt.state[params[index]][key]
            _set_grads(lib, cls, params)
            got, when = _refused_unchanged(lib, opt, params, opt.step), "step"
        assert (when, got) == (expected_when, expected), f"{lib.name} {cls} {key} of param {index}"
        if lib.name == "ours" and via == "load" and when == "load":
            _set_grads(lib, cls, params)
            opt.step()  # still usable: the loaded state was not taken


def _bad_shapes(cls):
    """``(param index, buffer shape, torch's outcome)`` for a buffer of its parameter's
    shape replaced by another (the parameters are (2, 3) and (3,), or (2, 3) and (3, 2))."""
    broadcast_param = (RuntimeError, "output with shape [3] doesn't match the broadcast shape [1, 3]")
    broadcast_buffer = (RuntimeError, "output with shape [3] doesn't match the broadcast shape [2, 3]")
    mismatch = (RuntimeError, "The size of tensor a (4) must match the size of tensor b (3) at non-singleton dimension 0")
    if cls == "SparseAdam":
        return [
            (1, (1, 3), (RuntimeError, "sparse_mask(): operands have incompatible sizes; self has size [1, 3] but mask has size [3]")),
            (0, (3,), (RuntimeError, "sparse_mask(): operands have incompatible sizes; self has size [3] but mask has size [2, 3]")),
            (1, (4,), (RuntimeError, "sparse_mask(): operands have incompatible sizes; self has size [4] but mask has size [3]")),
        ]
    if cls == "Muon":
        return [
            (0, (1, 2, 3), (ValueError, "Input tensor gradient must be a 2D matrix")),
            (0, (3,), broadcast_buffer),
            (0, (2, 4), (RuntimeError, "The size of tensor a (4) must match the size of tensor b (3) at non-singleton dimension 1")),
        ]
    return [(1, (1, 3), broadcast_param), (0, (3,), broadcast_buffer), (1, (4,), mismatch)]


# Where torch accepts a broadcastable buffer (its step never writes it into the
# parameter, or not yet) and torch_compat refuses it all the same.
TORCH_ACCEPTS = {("ASGD", "ax", (1, 3)), ("RAdam", "exp_avg_sq", (1, 3))}


@pytest.mark.parametrize("lib", _libs())
@pytest.mark.parametrize("cls", STATE_CLASSES)
def test_state_buffer_of_another_shape(cls, lib):
    """A loaded buffer whose shape is not its parameter's, broadcastable or not:
    torch's error at ``step()``, and the parameter keeps its shape and value."""
    opt, params = _state_trained(lib, cls)
    count = 0
    for index, shape, expected in _bad_shapes(cls):
        keys = [k for k, v in opt.state[params[index]].items() if tuple(getattr(v, "shape", ())) == params[index].shape]
        for key in keys:
            count += 1
            opt, params = _state_trained(lib, cls)
            saved = opt.state_dict()
            saved["state"][index] = dict(saved["state"][index], **{key: lib.dense(np.ones(shape))})
            opt.load_state_dict(saved)
            _set_grads(lib, cls, params)
            got = _refused_unchanged(lib, opt, params, opt.step)
            want = expected
            if lib.name == "torch" and (cls, key, shape) in TORCH_ACCEPTS:
                want = "ok"
            if cls == "Rprop" and key == "prev" and shape == (4,):  # torch computes grad.mul(prev)
                want = (RuntimeError, "The size of tensor a (3) must match the size of tensor b (4) at non-singleton dimension 0")
            assert got == want, f"{lib.name} {cls} {key} {shape}"
            assert tuple(params[index].shape) == tuple(_state_shapes(cls)[index])
    assert count


SCALAR_KEYS = ("step", "eta", "mu", "mu_product")
# These torch classes never read their step's value: torch keeps a (3,) step and steps on.
TORCH_ACCEPTS_STEPS = {"Rprop", "Adadelta", "RMSprop"}


@pytest.mark.parametrize("lib", _libs())
@pytest.mark.parametrize("cls", [c for c in STATE_CLASSES if c not in ("SGD", "Muon", "SparseAdam")])
def test_state_scalar_of_several_elements(cls, lib):
    """A scalar state (``step``, ASGD's ``eta``/``mu``, NAdam's ``mu_product``) holding
    three numbers: torch's RuntimeError at ``step()``; one number in a (1,) array is
    taken, as torch takes it. (torch's Rprop, Adadelta and RMSprop accept three numbers
    too, never reading the step's value; torch_compat cannot keep them in its int32
    step and refuses them.)"""
    opt, params = _state_trained(lib, cls)
    for key in [k for k in opt.state[params[0]] if k in SCALAR_KEYS]:
        for shape, expected in [((3,), (RuntimeError, "a Tensor with 3 elements cannot be converted to Scalar")),
                                ((1,), "ok")]:
            opt, params = _state_trained(lib, cls)
            saved = opt.state_dict()
            value = np.asarray(saved["state"][0][key]).reshape(()) if lib.name == "ours" else saved["state"][0][key].item()
            saved["state"][0] = dict(saved["state"][0], **{key: lib.dense(np.full(shape, value))})
            opt.load_state_dict(saved)
            _set_grads(lib, cls, params)
            if lib.name == "torch" and key == "step" and cls in TORCH_ACCEPTS_STEPS:
                expected = "ok"
            assert _refused_unchanged(lib, opt, params, opt.step) == expected, f"{lib.name} {cls} {key} {shape}"


STEP_MESSAGE = (r"the {where} of parameter 1 has step {value}, which torch_compat cannot count: it counts steps "
                r"in int32, so a step must be a whole number from 0 to 2\*\*30 \(1073741824\)")


@pytest.mark.parametrize("cls", [c for c in STATE_CLASSES if c not in ("SGD", "Muon")])  # the classes with a step
def test_state_step_the_int32_counter_cannot_hold(cls):
    """A step that wraps int32 (3e9), is negative, fractional or NaN: refused with a
    ValueError before anything changes, at ``load_state_dict`` (or at ``step()`` when put
    in ``optimizer.state[p]`` as a number). torch, whose step is a float32 tensor,
    accepts them all and computes with them (NaN parameters for a negative step or
    NaN); the core counts in int32, where 3e9 would become a negative step. 2**30 is
    the largest step taken."""
    lib = OurLib()
    for value in (3e9, -5.0, 2.5, float("nan"), 2**30 + 1):
        opt, params = _state_trained(lib, cls)
        saved = opt.state_dict()
        saved["state"][1] = dict(saved["state"][1], step=np.float64(value))
        got = _refused_unchanged(lib, opt, params, lambda: opt.load_state_dict(saved))
        assert got[0] is ValueError, (value, got)
        assert re.fullmatch(STEP_MESSAGE.format(where="loaded state", value=re.escape(repr(float(value)))), got[1])

        opt.state[params[1]]["step"] = value
        _set_grads(lib, cls, params)
        got = _refused_unchanged(lib, opt, params, opt.step)
        assert got[0] is ValueError, (value, got)
        assert re.fullmatch(STEP_MESSAGE.format(where="state", value=re.escape(repr(value))), got[1])
    opt, params = _state_trained(lib, cls)
    saved = opt.state_dict()
    saved["state"][1] = dict(saved["state"][1], step=np.float64(2**30))
    opt.load_state_dict(saved)
    _set_grads(lib, cls, params)
    opt.step()
    # Counted on (as torch's float32 step holds 2**30 + 1), and the parameter moved to finite values.
    assert float(opt.state[params[1]]["step"]) == float(np.float32(2**30 + 1))
    assert np.all(np.isfinite(np.asarray(params[1].data)))


# -- habits from torch that fail here: what to do, after torch's text ---------------------


@pytest.mark.parametrize("make", [
    lambda: tco.SGD(jnp.ones(3), lr=0.1),
    lambda: tco.SGD([jnp.ones(3), jnp.zeros(2)], lr=0.1),
    lambda: tco.Adam([{"params": [jnp.ones(3)]}]),
], ids=["array-itself", "list-of-arrays", "group-of-arrays"])
def test_jax_arrays_given_to_an_optimizer(make):
    """A JAX array is no Parameter: torch's TypeError (its text for a Tensor given as
    ``params``, or for a non-Tensor in them), then the way to wrap arrays."""
    with pytest.raises(TypeError) as info:
        make()
    assert re.fullmatch(
        r"(params argument given to the optimizer should be an iterable of Tensors or dicts, but got"
        r"|optimizer can only optimize Tensors, but one of the params is) jaxlib\._jax\.ArrayImpl\. "
        + re.escape(ARRAYS_HINT), str(info.value))


MATH_HINT = (r"A Parameter holds an array but is not one: use p\.data for its value in JAX code, or compute "
             r"gradients with torch_compat\.backward\(loss_fn, model\), which calls loss_fn on arrays\.")


@pytest.mark.parametrize("expression, text", [
    (lambda p, x: p + 1, r"unsupported operand type\(s\) for \+: 'Parameter' and 'int'"),
    (lambda p, x: 2.0 * p, r"unsupported operand type\(s\) for \*: 'float' and 'Parameter'"),
    (lambda p, x: x @ p, r"unsupported operand type\(s\) for @: 'ArrayImpl' and 'Parameter'"),
    (lambda p, x: p @ x, r"unsupported operand type\(s\) for @: 'Parameter' and 'ArrayImpl'"),
    (lambda p, x: x - p, r"unsupported operand type\(s\) for -: 'ArrayImpl' and 'Parameter'"),
    (lambda p, x: np.ones(3) + p, r"unsupported operand type\(s\) for \+: 'ndarray' and 'Parameter'"),
    (lambda p, x: p ** 2, r"unsupported operand type\(s\) for \*\*: 'Parameter' and 'int'"),
    (lambda p, x: -p, r"bad operand type for unary -: 'Parameter'"),
    (lambda p, x: abs(p), r"bad operand type for abs\(\): 'Parameter'"),
    (lambda p, x: p < 0, r"'<' not supported between instances of 'Parameter' and 'int'"),
], ids=["p+1", "2*p", "x@p", "p@x", "x-p", "numpy+p", "p**2", "-p", "abs", "p<0"])
def test_parameter_in_maths(expression, text):
    """A Parameter in maths (JAX's or NumPy's operators): a TypeError with Python's text
    and the pointer to ``.data`` and ``torch_compat.backward``; ``.data`` works."""
    p, x = tc.Parameter(jnp.ones(3)), jnp.arange(3.0)
    with pytest.raises(TypeError) as info:
        expression(p, x)
    assert re.fullmatch(text + r"\. " + MATH_HINT, str(info.value))
    result = expression(p.data, x)  # what the message says to write
    assert np.all(np.isfinite(np.asarray(result)))


def test_parameter_in_jnp_functions_is_a_type_error():
    """jnp functions give JAX's own TypeError, naming the Parameter type (JAX has no
    public way to add a sentence; see docs/migration-torch.md); np.asarray reads the value."""
    p = tc.Parameter(jnp.ones(3))
    for call in (lambda: jnp.sin(p), lambda: jax.jit(lambda a: a * 2)(p), lambda: jnp.add(p, 1)):
        with pytest.raises(TypeError, match="Parameter"):
            call()
    np.testing.assert_array_equal(np.asarray(p), [1.0, 1.0, 1.0])


@pytest.mark.parametrize("lib", _libs())
def test_integer_parameter_requires_grad_later(lib):
    """An integer parameter may exist with ``requires_grad=False``, as in torch; turning
    it on, or giving a float parameter integer data, is torch's RuntimeError."""
    suffix = "" if lib.name == "torch" else ". " + DTYPE_HINT
    if lib.name == "ours":
        p = tc.Parameter(jnp.asarray([1, 2]), requires_grad=False)
    else:
        p = torch.nn.Parameter(torch.tensor([1, 2]), requires_grad=False)
    with pytest.raises(RuntimeError) as info:
        p.requires_grad = True
    assert str(info.value) == "only Tensors of floating point and complex dtype can require gradients" + suffix
    assert p.requires_grad is False
    q = lib.P(np.ones(2))
    with pytest.raises(RuntimeError) as info:
        q.data = lib.array([1, 2])
    assert str(info.value) == "data set to a tensor that requires gradients must be floating point or complex dtype" + suffix
    assert str(q.dtype) in ("float64", "torch.float64")

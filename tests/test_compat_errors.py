"""Bad input to torch_compat.optim: torch's exception types and messages, word for word.

One table of cases, each a function of a "library" (torch's, or ours), run on our side
always and on torch's side where torch is importable. The expected type and message are
written in the table; on torch's side only a message that names a tensor type may differ
(torch says ``torch.DoubleTensor``, we say ``torch_compat.Parameter``), written ``{T}``.

Every refused call made after construction (``step``, ``load_state_dict``,
``add_param_group``) must leave the parameters' ``.data`` and the optimizer's state and
groups exactly as they were, still usable: the test snapshots them, checks them after the
refusal, and then steps on, comparing with a twin optimizer that never saw the bad call.
"""

from __future__ import annotations

import copy
import re
import dataclasses
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import sparse

import bad_input_cases
import torch_compat as tc
from torch_compat import optim as tco
from torch_compat.optim import optimizer as tco_optimizer

jax.config.update("jax_enable_x64", True)

try:
    import torch
except ImportError:  # the table still runs on our side
    torch = None

OUR_TYPE = "torch_compat.Parameter"
TORCH_TYPE = "torch.DoubleTensor"  # the parameters of the table are float64


class OurLib:
    """The library under test: builds Parameters, gradients and optimizers."""

    name = "ours"
    optim = tco
    required = tco_optimizer.required
    Optimizer = tco.Optimizer

    @staticmethod
    def P(x, dtype=np.float64):
        return tc.Parameter(jnp.asarray(np.asarray(x, dtype)))

    @staticmethod
    def array(x):
        return jnp.asarray(x)

    @staticmethod
    def dense(x, dtype=np.float64):
        return jnp.asarray(np.asarray(x, dtype))

    @staticmethod
    def sparse(x, dtype=np.float64):
        x = np.asarray(x, dtype)
        indices = np.argwhere(x != 0)
        return sparse.BCOO((jnp.asarray(x[tuple(indices.T)]), jnp.asarray(indices)), shape=x.shape)


class TorchLib:
    name = "torch"

    def __init__(self):
        from torch.optim.optimizer import required

        self.optim = torch.optim
        self.required = required
        self.Optimizer = torch.optim.Optimizer

    @staticmethod
    def P(x, dtype=np.float64):
        return torch.nn.Parameter(torch.from_numpy(np.array(x, dtype)))

    @staticmethod
    def array(x):
        return torch.tensor(x)

    @staticmethod
    def dense(x, dtype=np.float64):
        return torch.from_numpy(np.array(x, dtype))

    @staticmethod
    def sparse(x, dtype=np.float64):
        return torch.from_numpy(np.array(x, dtype)).to_sparse()


def _libs():
    libs = [pytest.param(OurLib(), id="ours")]
    if torch is not None:
        libs.append(pytest.param(TorchLib(), id="torch"))
    return libs


@dataclasses.dataclass
class Case:
    id: str
    exc: type
    message: str
    make: Callable  # make(lib): raises (construction cases), or returns (opt, params, bad_call, fix)
    after_construction: bool = False


def _ctor(cls, params_fn=None, **options):
    """A case that builds ``cls(params, **options)``."""

    def make(lib):
        params = params_fn(lib) if params_fn else [lib.P(np.ones((2, 3)))]
        opts = {k: (v(lib) if callable(v) else v) for k, v in options.items()}
        return getattr(lib.optim, cls)(params, **opts)

    return make


def _tensor(value):
    return lambda lib: lib.array(value)


CASES: list[Case] = []


def case(id, exc, message, make, after=False):
    CASES.append(Case(id, exc, message, make, after))


# -- invalid hyperparameters, class by class ----------------------------------------------

V = ValueError
for cls in ["SGD", "ASGD", "Rprop", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam", "RAdam"]:
    case(f"{cls}-lr", V, "Invalid learning rate: -0.1", _ctor(cls, lr=-0.1))
for cls in ["SGD", "ASGD", "Rprop", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam", "RAdam",
            "SparseAdam", "Adafactor", "Muon"]:
    case(f"{cls}-tensor-lr", V, "Tensor lr must be 1-element", _ctor(cls, lr=_tensor([0.1, 0.2])))
for cls in ["SGD", "ASGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam", "RAdam"]:
    case(f"{cls}-weight_decay", V, "Invalid weight_decay value: -0.001", _ctor(cls, weight_decay=-1e-3))
for cls in ["Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam", "RAdam"]:
    case(f"{cls}-eps", V, "Invalid epsilon value: -1e-08", _ctor(cls, eps=-1e-8))
for cls in ["Adam", "AdamW", "Adamax", "NAdam", "RAdam", "SparseAdam"]:
    case(f"{cls}-beta0", V, "Invalid beta parameter at index 0: 1.0", _ctor(cls, betas=(1.0, 0.999)))
    case(f"{cls}-beta1", V, "Invalid beta parameter at index 1: -0.5", _ctor(cls, betas=(0.9, -0.5)))

case("SGD-momentum", V, "Invalid momentum value: -0.5", _ctor("SGD", momentum=-0.5))
case("SGD-nesterov-no-momentum", V, "Nesterov momentum requires a momentum and zero dampening",
     _ctor("SGD", nesterov=True))
case("SGD-nesterov-dampening", V, "Nesterov momentum requires a momentum and zero dampening",
     _ctor("SGD", momentum=0.9, dampening=0.1, nesterov=True))
for cls in ["SGD", "Adagrad", "Adam", "AdamW"]:
    case(f"{cls}-fused-differentiable", RuntimeError, "`fused` does not support `differentiable`",
         _ctor(cls, fused=True, differentiable=True))
for cls in ["SGD", "Adagrad", "Adam", "AdamW"]:
    case(f"{cls}-fused-foreach", RuntimeError, "`fused` and `foreach` cannot be `True` together.",
         _ctor(cls, fused=True, foreach=True))
case("Rprop-etas-high", V, "Invalid eta values: 1.2, 1.5", _ctor("Rprop", etas=(1.2, 1.5)))
case("Rprop-etas-low", V, "Invalid eta values: 0.5, 0.9", _ctor("Rprop", etas=(0.5, 0.9)))
case("Adagrad-lr_decay", V, "Invalid lr_decay value: -0.1", _ctor("Adagrad", lr_decay=-0.1))
case("Adagrad-initial_accumulator_value", V, "Invalid initial_accumulator_value value: -1",
     _ctor("Adagrad", initial_accumulator_value=-1))
case("Adadelta-rho-high", V, "Invalid rho value: 1.5", _ctor("Adadelta", rho=1.5))
case("Adadelta-rho-low", V, "Invalid rho value: -0.1", _ctor("Adadelta", rho=-0.1))
case("RMSprop-momentum", V, "Invalid momentum value: -0.9", _ctor("RMSprop", momentum=-0.9))
case("RMSprop-alpha", V, "Invalid alpha value: -0.99", _ctor("RMSprop", alpha=-0.99))
case("NAdam-momentum_decay", V, "Invalid momentum_decay value: -0.004", _ctor("NAdam", momentum_decay=-4e-3))
case("Adam-tensor-lr-foreach", V, "lr as a Tensor is not supported for capturable=False and foreach=True",
     _ctor("Adam", lr=_tensor(0.01), foreach=True))
case("Adam-betas-mixed", V, "betas must be either both floats or both Tensors",
     _ctor("Adam", betas=lambda lib: (lib.array(0.9), 0.999)))
# torch wants floats: an int beta is refused too.
case("Adam-betas-int", V, "betas must be either both floats or both Tensors", _ctor("Adam", betas=(0, 0.99)))
case("AdamW-betas-int", V, "betas must be either both floats or both Tensors", _ctor("AdamW", betas=(0.9, 0)))
case("Adam-tensor-betas-foreach", V, "betas[0] as a Tensor is not supported for capturable=False and foreach=True",
     _ctor("Adam", betas=lambda lib: (lib.array(0.9), lib.array(0.999)), foreach=True))
case("SparseAdam-lr-zero", V, "Invalid learning rate: 0", _ctor("SparseAdam", lr=0))
case("SparseAdam-eps-zero", V, "Invalid epsilon value: 0.0", _ctor("SparseAdam", eps=0.0))
case("Adafactor-lr", V, "Learning rate should be >= 0 but is: -0.1", _ctor("Adafactor", lr=-0.1))
case("Adafactor-beta2_decay", V, "beta2_decay should be <= 0 but is: 0.5", _ctor("Adafactor", beta2_decay=0.5))
case("Adafactor-eps1", V, "epsilon1 should be >= 0 but is: -1e-30", _ctor("Adafactor", eps=(-1e-30, 1e-3)))
case("Adafactor-eps2", V, "epsilon2 should be >= 0 but is: -0.001", _ctor("Adafactor", eps=(None, -1e-3)))
case("Adafactor-d", V, "Clipping threshold d should be >= 1 but is: 0.5", _ctor("Adafactor", d=0.5))
case("Adafactor-weight_decay", V, "weight_decay should be >= 0 but is: -0.1", _ctor("Adafactor", weight_decay=-0.1))
case("Muon-lr", V, "Learning rate should be >= 0 but is: -0.1", _ctor("Muon", lr=-0.1))
case("Muon-momentum", V, "momentum should be >= 0 but is: -0.95", _ctor("Muon", momentum=-0.95))
case("Muon-weight_decay", V, "weight decay should be >= 0 but is: -0.1", _ctor("Muon", weight_decay=-0.1))
case("Muon-adjust_lr_fn", V, "Adjust learning rate function spectral is not supported",
     _ctor("Muon", adjust_lr_fn="spectral"))
case("Muon-1d-param", V, "Muon only supports 2D parameters whereas we found a parameter with size: torch.Size([3])",
     _ctor("Muon", params_fn=lambda lib: [lib.P(np.ones((2, 2))), lib.P(np.ones(3))]))
case("SparseAdam-complex", V, "Complex params at indices [[0, 1]]: SparseAdam does not support complex parameters",
     _ctor("SparseAdam", params_fn=lambda lib: [lib.P(np.ones(3)), lib.P(np.ones(3), np.complex128)]))

# -- the params argument ------------------------------------------------------------------

case("params-single-parameter", TypeError,
     "params argument given to the optimizer should be an iterable of Tensors or dicts, but got {T}",
     lambda lib: lib.optim.SGD(lib.P(np.ones(3)), lr=0.1))
case("params-empty", V, "optimizer got an empty parameter list", lambda lib: lib.optim.SGD([], lr=0.1))
case("params-empty-generator", V, "optimizer got an empty parameter list",
     lambda lib: lib.optim.Adam((p for p in []), lr=0.1))
case("params-numpy-array", TypeError, "optimizer can only optimize Tensors, but one of the params is numpy.ndarray{H}",
     lambda lib: lib.optim.SGD([lib.P(np.ones(3)), np.ones(3)], lr=0.1))
case("params-numpy-array-itself", TypeError, "optimizer can only optimize Tensors, but one of the params is numpy.float64{H}",
     lambda lib: lib.optim.SGD(np.ones(3), lr=0.1))
case("params-dict-of-arrays", TypeError, "optimizer can only optimize Tensors, but one of the params is str{H}",
     lambda lib: lib.optim.Adam({"w": np.ones(3), "b": np.zeros(2)}))
case("params-dict-of-params", TypeError, "optimizer can only optimize Tensors, but one of the params is str{H}",
     lambda lib: lib.optim.Adam({"w": lib.P(np.ones(3))}))
case("group-params-dict", TypeError, "optimizer can only optimize Tensors, but one of the params is str{H}",
     lambda lib: lib.optim.Adam([{"params": {"w": lib.P(np.ones(3))}, "lr": 0.1}]))
case("param-int", RuntimeError, "Only Tensors of floating point and complex dtype can require gradients{I}",
     lambda lib: lib.P([1, 2], np.int64))
case("param-bool", RuntimeError, "Only Tensors of floating point and complex dtype can require gradients{I}",
     lambda lib: lib.P([True], np.bool_))
case("params-float", TypeError, "optimizer can only optimize Tensors, but one of the params is float",
     lambda lib: lib.optim.Adam([{"params": [lib.P(np.ones(3)), 1.0]}]))
case("params-set-in-group", TypeError,
     "optimizer parameters need to be organized in ordered collections, but the ordering of tensors in sets "
     "will change between runs. Please use a list instead.",
     lambda lib: lib.optim.SGD([{"params": {lib.P(np.ones(3))}}], lr=0.1))


def _same_param_twice(lib):
    p = lib.P(np.ones(3))
    return lib.optim.SGD([{"params": [p]}, {"params": [lib.P(np.ones(2)), p]}], lr=0.1)


case("param-in-two-groups", V, "some parameters appear in more than one parameter group", _same_param_twice)
case("group-missing-required", V, "parameter group didn't specify a value of required optimization parameter lr",
     lambda lib: lib.Optimizer([{"params": [lib.P(np.ones(3))], "momentum": 0.5}],
                               {"lr": lib.required, "momentum": 0.0}))
case("names-mixed-in-group", V, "all optimizer params should be with/without names. Some param names are missing",
     lambda lib: lib.optim.Adam([("w", lib.P(np.ones(3))), lib.P(np.ones(2))]))
case("names-mixed-across-groups", V,
     "all optimizer param groups should be with/without names. cannot add param group without names to the optimizer",
     lambda lib: lib.optim.Adam([{"params": [("w", lib.P(np.ones(3)))]}, {"params": [lib.P(np.ones(2))]}]))
case("names-mixed-across-groups-2", V,
     "all optimizer param groups should be with/without names. cannot add param group with names to the optimizer",
     lambda lib: lib.optim.Adam([{"params": [lib.P(np.ones(3))]}, {"params": [("b", lib.P(np.ones(2)))]}]))


# -- refused calls after construction -----------------------------------------------------


def _trained(lib, cls="Adam", n=2, shapes=((2, 3), (4,)), steps=2, groups=True, **options):
    """An optimizer with two groups (one param each), a few steps taken (state exists)."""
    params = [lib.P(np.linspace(-1.0, 1.0, int(np.prod(s))).reshape(s) + k) for k, s in enumerate(shapes[:n])]
    spec = [{"params": [p]} for p in params] if groups else params
    opt = getattr(lib.optim, cls)(spec, **options)
    for t in range(steps):
        for p in params:
            p.grad = lib.dense(np.full(p.shape, 0.5 + t))
        opt.step()
    return opt, params


def _bad_step(cls, bad_grad, **options):
    """Group 0's param gets a dense gradient, group 1's the bad one; then step()."""

    def make(lib):
        shapes = ((2, 3), (3, 2)) if cls == "Muon" else ((2, 3), (4,))
        opt, params = _trained(lib, cls, shapes=shapes, **options)

        def bad():
            params[0].grad = lib.dense(np.ones(params[0].shape))
            params[1].grad = bad_grad(lib, params[1])
            opt.step()

        return opt, params, bad

    return make


def _sparse_grad(lib, p):
    x = np.zeros(p.shape)
    x.flat[1] = 2.0
    return lib.sparse(x)


for cls, msg in [
    ("Adam", "Adam does not support sparse gradients, please consider SparseAdam instead"),
    ("AdamW", "Adam does not support sparse gradients, please consider SparseAdam instead"),  # torch's AdamW is an Adam
    ("Adamax", "Adamax does not support sparse gradients"),
    ("NAdam", "NAdam does not support sparse gradients"),
    ("RAdam", "RAdam does not support sparse gradients"),
    ("RMSprop", "RMSprop does not support sparse gradients"),
    ("Adadelta", "Adadelta does not support sparse gradients"),
    ("ASGD", "ASGD does not support sparse gradients"),
    ("Rprop", "Rprop does not support sparse gradients"),
    ("Adafactor", "Adafactor does not support sparse gradients"),
    ("Muon", "Muon does not support sparse gradients"),
]:
    extra = {"ns_steps": 1} if cls == "Muon" else {}  # cheaper to compile, same checks
    case(f"{cls}-sparse-grad", RuntimeError, msg, _bad_step(cls, _sparse_grad, **extra), after=True)
case("Adagrad-sparse-weight_decay", RuntimeError, "weight_decay option is not compatible with sparse gradients",
     _bad_step("Adagrad", _sparse_grad, weight_decay=0.1), after=True)


def _complex_step(cls):
    def make(lib):
        shape = (2, 3)
        good = lib.P(np.ones(shape))
        bad_param = lib.P(np.ones(shape) + 1j * np.ones(shape), np.complex128)
        extra = {"ns_steps": 1} if cls == "Muon" else {}
        opt = getattr(lib.optim, cls)([{"params": [good]}, {"params": [bad_param]}], **extra)
        good.grad = lib.dense(np.full(shape, 0.5))
        opt.step()  # a first step with the complex parameter left out (no gradient)

        def bad():
            good.grad = lib.dense(np.ones(shape))
            bad_param.grad = lib.dense(np.ones(shape) * (1 + 2j), np.complex128)
            opt.step()

        return opt, [good, bad_param], bad

    return make


case("Muon-complex", RuntimeError, "Muon does not support complex parameters", _complex_step("Muon"), after=True)
case("Adafactor-complex", RuntimeError, "Adafactor does not support complex parameters", _complex_step("Adafactor"),
     after=True)


def _bad_load(mutate):
    def make(lib):
        opt, params = _trained(lib)
        saved = opt.state_dict()
        mutate(saved)
        return opt, params, lambda: opt.load_state_dict(saved)

    return make


case("load-fewer-groups", V, "loaded state dict has a different number of parameter groups",
     _bad_load(lambda sd: sd["param_groups"].pop()), after=True)
case("load-group-size", V, "loaded state dict contains a parameter group that doesn't match the size of optimizer's group",
     _bad_load(lambda sd: sd["param_groups"][1]["params"].append(7)), after=True)


def _bad_add(group_fn):
    def make(lib):
        opt, params = _trained(lib)
        return opt, params, lambda: opt.add_param_group(group_fn(lib, params))

    return make


case("add-group-duplicate", V, "some parameters appear in more than one parameter group",
     _bad_add(lambda lib, ps: {"params": [lib.P(np.ones(2)), ps[0]]}), after=True)
case("add-group-set", TypeError,
     "optimizer parameters need to be organized in ordered collections, but the ordering of tensors in sets "
     "will change between runs. Please use a list instead.",
     _bad_add(lambda lib, ps: {"params": {lib.P(np.ones(2))}}), after=True)
case("add-group-not-dict", TypeError, "param_group must be a dict, but got <class 'list'>",
     _bad_add(lambda lib, ps: [lib.P(np.ones(2))]), after=True)
case("add-group-non-tensor", TypeError, "optimizer can only optimize Tensors, but one of the params is str",
     _bad_add(lambda lib, ps: {"params": ["w"]}), after=True)
case("add-group-dict", TypeError, "optimizer can only optimize Tensors, but one of the params is str{H}",
     _bad_add(lambda lib, ps: {"params": {"w": lib.P(np.ones(2))}}), after=True)
case("add-group-array", TypeError, "optimizer can only optimize Tensors, but one of the params is numpy.ndarray{H}",
     _bad_add(lambda lib, ps: {"params": [np.ones(2)]}), after=True)
case("add-group-names-mixed", V,
     "all optimizer param groups should be with/without names. cannot add param group with names to the optimizer",
     _bad_add(lambda lib, ps: {"params": [("w", lib.P(np.ones(2)))]}), after=True)


@pytest.mark.parametrize("lib", _libs())
def test_top_level_set_of_params_is_accepted(lib):
    """A set given as ``params`` itself is turned into a list (torch's ``list(params)``):
    only a set inside a param group is refused."""
    p = lib.P(np.ones(3))
    opt = lib.optim.SGD({p}, lr=0.1)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["params"] == [p]


# -- the test -----------------------------------------------------------------------------


# The sentence torch_compat adds to torch's text, saying what to do ({H}, {I} in a message).
ARRAYS_HINT = ("To optimize JAX or NumPy arrays, or a pytree of them such as a dict, wrap them first: "
               "model = torch_compat.as_parameters(tree), then pass torch_compat.parameters(model).")
DTYPE_HINT = ("Cast the array to a floating dtype first (for example x.astype(jnp.float32)), or set "
              "requires_grad=False for an array that is not trained.")


def _expected(case: Case, lib) -> str:
    text = case.message.replace("{T}", TORCH_TYPE if lib.name == "torch" else OUR_TYPE)
    for mark, hint in (("{H}", ARRAYS_HINT), ("{I}", DTYPE_HINT)):
        text = text.replace(mark, "" if lib.name == "torch" else ". " + hint)
    return text


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


def _run_case(case: Case, lib):
    if not case.after_construction:
        with pytest.raises(case.exc) as info:
            case.make(lib)
        return info, None
    opt, params, bad = case.make(lib)
    before = _snapshot(opt, params) if lib.name == "ours" else None
    with pytest.raises(case.exc) as info:
        bad()
    return info, (opt, params, before)


@pytest.mark.parametrize("lib", _libs())
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_error(case, lib):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info, post = _run_case(case, lib)
    assert type(info.value) is case.exc, f"{lib.name}: {type(info.value).__name__}: {info.value}"
    assert str(info.value) == _expected(case, lib), f"{lib.name}: {info.value}"
    if post is None or lib.name != "ours":
        return
    opt, params, before = post
    _assert_same_snapshot(before, _snapshot(opt, params))
    # Still usable, and as if the bad call had not happened: a twin that never saw it
    # takes the same next step, bit for bit.
    twin, twin_params = _twin(case)
    for p, q in zip(params, twin_params):
        grad = None if p.is_complex() else jnp.asarray(np.full(p.shape, 0.25, dtype=p.dtype))
        p.grad = q.grad = grad
    opt.step()
    twin.step()
    for p, q in zip(params, twin_params):
        np.testing.assert_array_equal(np.asarray(p.data), np.asarray(q.data))


def _twin(case: Case):
    """The same optimizer, built and trained the same way, minus the refused call."""
    opt, params, _ = case.make(OurLib())
    return opt, params


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

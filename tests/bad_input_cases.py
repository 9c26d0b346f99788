"""Bad input for every torch.optim class: the one table of error cases, for both faces.

Two kinds of rows, run by ``test_bad_input.py`` on torch_compat, on the core aliases
and, when torch is importable, on torch itself:

1. **The grid** (:func:`cases`): every numeric option of every class set to each bad
   (or borderline) value, on one float64 ``(3, 2)`` parameter, then one step where torch
   accepts the constructor (torch checks some options only there). What torch 2.13 does is
   stored in ``golden/bad_input.json`` by ``make_golden_bad_input.py`` as ``"Type:
   message"``, ``"ok"`` or ``"ok, not finite"`` (torch accepts some values that wreck the
   step, such as RMSprop's ``alpha=1.5``); torch_compat must do the same, and the core
   alias with the same options must raise ``ValueError`` wherever the value is invalid
   (:func:`core_must_refuse`), with torch's text where torch raises ``ValueError`` for a
   number.
2. **Written cases** (:data:`CASES`): the expected type and text are written in the
   table. Each builds an optimizer with a library (:class:`OurLib` or :class:`TorchLib`)
   and raises, or (``after``) returns a refused call made after construction (a step with
   a sparse gradient, a bad ``load_state_dict`` or ``add_param_group``), which must leave
   everything as it was. A case with ``core`` options gives them to the core alias too,
   which must raise ``ValueError`` with the same text when it is built (also where torch
   checks only at the first step). :data:`EDGES` are values on the edge of what torch
   accepts: every face accepts them.

The classes come from ``gradxform.registry``; which options get bad values, and what
torch says, are written here.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Callable

import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

import torch_compat as tc
from gradxform.registry import FIRST_ORDER, SPECS
from torch_compat import optim as tco
from torch_compat.optim import optimizer as tco_optimizer

CLASSES = [spec.torch_name for spec in SPECS.values()]
CORE = {SPECS[alias].torch_name: alias for alias in FIRST_ORDER}

# ---------------------------------------------------------------------------- libraries

OUR_TYPE = "torch_compat.Parameter"
TORCH_TYPE = "torch.DoubleTensor"  # the parameters of the written cases are float64
# The sentence torch_compat adds to torch's text, saying what to do (``{H}``, ``{I}`` in a
# written message; absent on torch's side).
ARRAYS_HINT = ("To optimize JAX or NumPy arrays, or a pytree of them such as a dict, wrap them first: "
               "model = torch_compat.as_parameters(tree), then pass torch_compat.parameters(model).")
DTYPE_HINT = ("Cast the array to a floating dtype first (for example x.astype(jnp.float32)), or set "
              "requires_grad=False for an array that is not trained.")


def expected_message(message: str, lib_name: str) -> str:
    """A written message as ``lib_name`` ("ours" or "torch") gives it."""
    text = message.replace("{T}", TORCH_TYPE if lib_name == "torch" else OUR_TYPE)
    for mark, hint in (("{H}", ARRAYS_HINT), ("{I}", DTYPE_HINT)):
        text = text.replace(mark, "" if lib_name == "torch" else ". " + hint)
    return text


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
    """torch's library, with the same methods (imports torch)."""

    name = "torch"

    def __init__(self):
        import torch
        from torch.optim.optimizer import required

        self.torch = torch
        self.optim = torch.optim
        self.required = required
        self.Optimizer = torch.optim.Optimizer

    def P(self, x, dtype=np.float64):
        return self.torch.nn.Parameter(self.torch.from_numpy(np.array(x, dtype)))

    def array(self, x):
        return self.torch.tensor(x)

    def dense(self, x, dtype=np.float64):
        return self.torch.from_numpy(np.array(x, dtype))

    def sparse(self, x, dtype=np.float64):
        return self.torch.from_numpy(np.array(x, dtype)).to_sparse()


# --------------------------------------------------------------------- 1. the grid

# The numeric options of each class (torch's names) that get bad values, and whether
# each is one value or a pair (a triple for ns_coefficients). lr is every class's.
# (LBFGS: only lr; its tolerances are not in the golden file.)
SCALARS = {
    "SGD": ["lr", "momentum", "dampening", "weight_decay"],
    "ASGD": ["lr", "lambd", "alpha", "t0", "weight_decay"],
    "Rprop": ["lr"],
    "Adagrad": ["lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"],
    "Adadelta": ["lr", "rho", "eps", "weight_decay"],
    "RMSprop": ["lr", "alpha", "eps", "weight_decay", "momentum"],
    "Adam": ["lr", "eps", "weight_decay"],
    "AdamW": ["lr", "eps", "weight_decay"],
    "Adamax": ["lr", "eps", "weight_decay"],
    "SparseAdam": ["lr", "eps"],
    "NAdam": ["lr", "eps", "weight_decay", "momentum_decay"],
    "RAdam": ["lr", "eps", "weight_decay"],
    "Adafactor": ["lr", "beta2_decay", "d", "weight_decay"],
    "Muon": ["lr", "weight_decay", "momentum", "eps"],
    "LBFGS": ["lr"],
}
SEQUENCES = {
    "Rprop": {"etas": (0.5, 1.2), "step_sizes": (1e-6, 50.0)},
    "Adam": {"betas": (0.9, 0.999)},
    "AdamW": {"betas": (0.9, 0.999)},
    "Adamax": {"betas": (0.9, 0.999)},
    "SparseAdam": {"betas": (0.9, 0.999)},
    "NAdam": {"betas": (0.9, 0.999)},
    "RAdam": {"betas": (0.9, 0.999)},
    "Adafactor": {"eps": (None, 1e-3)},
    "Muon": {"ns_coefficients": (3.4445, -4.775, 2.0315)},
}

NAN, INF = float("nan"), float("inf")
SCALAR_VALUES = [-1.0, -1e-12, 0.0, 1.5, NAN, INF, -INF, "a", None, 1 + 1j, (0.1,)]
ELEMENT_VALUES = [-0.5, 0.0, 1.0, 1.5, NAN, "a", None]


def _label(value) -> str:
    return repr(value)


def cases():
    """``[(id, class name, kwargs)]``: every option of every class set to each bad value."""
    out = []
    for cls in CLASSES:
        for option in SCALARS[cls]:
            for value in SCALAR_VALUES:
                out.append((f"{cls}-{option}={_label(value)}", cls, {option: value}))
        for option, default in SEQUENCES.get(cls, {}).items():
            for index in range(len(default)):
                for value in ELEMENT_VALUES:
                    seq = list(default)
                    seq[index] = value
                    out.append((f"{cls}-{option}[{index}]={_label(value)}", cls, {option: tuple(seq)}))
            for bad in [default[:1], default + (0.5,), 0.9, "ab"]:
                out.append((f"{cls}-{option}={_label(bad)}", cls, {option: bad}))
    out += [
        ("Muon-ns_steps=100", "Muon", {"ns_steps": 100}),
        ("Muon-ns_steps=0.0", "Muon", {"ns_steps": 0.0}),
        ("Muon-ns_steps='a'", "Muon", {"ns_steps": "a"}),
        ("Muon-ns_steps=-1", "Muon", {"ns_steps": -1}),
        ("Muon-adjust_lr_fn='spectral'", "Muon", {"adjust_lr_fn": "spectral"}),
        ("SGD-nesterov-no-momentum", "SGD", {"nesterov": True}),
        ("SGD-nesterov-dampening", "SGD", {"nesterov": True, "momentum": 0.9, "dampening": 0.5}),
        ("LBFGS-line_search_fn='wolfe'", "LBFGS", {"line_search_fn": "wolfe"}),
        ("Adam-betas-int", "Adam", {"betas": (0, 0.99)}),
        ("Adam-tensor-lr-2", "Adam", {"lr": ("tensor", [0.1, 0.2])}),
        ("SGD-tensor-lr-2", "SGD", {"lr": ("tensor", [0.1, 0.2])}),
        ("LBFGS-tensor-lr-2", "LBFGS", {"lr": ("tensor", [0.1, 0.2])}),
        ("Adam-tensor-betas-2", "Adam", {"betas": (("tensor", [0.9, 0.9]), ("tensor", [0.99]))}),
    ]
    return out


def is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def core_must_refuse(cls: str, kwargs: dict, torch_result: str) -> bool:
    """Whether the core alias must raise ``ValueError`` for these options.

    It refuses what torch refuses, and besides anything that is not a real number
    where one is expected, and NaN (torch lets ``SGD(lr=nan)`` and some others through).
    """
    if torch_result == "ValueError: betas must be either both floats or both Tensors":
        return False  # torch wants float betas; the core takes any real number
    if torch_result != "ok" and not torch_result.startswith("ok"):
        return True
    for option, value in kwargs.items():
        values = value if isinstance(value, tuple) and option in SEQUENCES.get(cls, {}) else (value,)
        for v in values:
            if v is None and cls == "Adafactor" and option == "eps":
                continue
            if not is_number(v) or math.isnan(v):
                return True
    return False


def core_kwargs(kwargs: dict) -> dict:
    out = {}
    for key, value in kwargs.items():
        out["learning_rate" if key == "lr" else key] = value
    return out


def materialize(kwargs: dict, tensor):
    """Replaces ``("tensor", values)`` markers by ``tensor(values)``."""

    def one(v):
        if isinstance(v, tuple) and len(v) == 2 and v[0] == "tensor":
            return tensor(np.asarray(v[1], np.float64))
        if isinstance(v, tuple):
            return tuple(one(x) for x in v)
        return v

    return {k: one(v) for k, v in kwargs.items()}


SHAPE = (3, 2)


def outcome(run) -> str:
    """``"ok"`` (``"ok, not finite"`` when the parameter is no longer finite after the
    step), or the exception ``run()`` raises as ``"Type: message"``."""
    try:
        finite = run()
    except Exception as error:  # noqa: BLE001 - the type is what is compared
        return f"{type(error).__name__}: {error}"
    return "ok" if finite else "ok, not finite"


def run_torch(cls: str, kwargs: dict) -> str:
    """torch's outcome: construction, then one step (with a closure for LBFGS)."""
    import torch

    def run():
        param = torch.nn.Parameter(torch.ones(SHAPE, dtype=torch.float64))
        optimizer = getattr(torch.optim, cls)([param], **materialize(kwargs, torch.from_numpy))
        grad = torch.full(SHAPE, 0.5, dtype=torch.float64)
        param.grad = grad.to_sparse() if cls == "SparseAdam" else grad
        if cls == "LBFGS":
            optimizer.step(lambda: (param.detach() ** 2).sum())
        else:
            optimizer.step()
        return bool(torch.isfinite(param.detach()).all())

    return outcome(run)


def run_ours(cls: str, kwargs: dict) -> str:
    """torch_compat's outcome, the same way."""
    import jax.numpy as jnp
    from jax.experimental import sparse

    import torch_compat as tc
    from torch_compat import optim

    def run():
        param = tc.Parameter(jnp.ones(SHAPE, jnp.float64))
        optimizer = getattr(optim, cls)([param], **materialize(kwargs, jnp.asarray))
        grad = jnp.full(SHAPE, 0.5, jnp.float64)
        param.grad = sparse.BCOO.fromdense(grad) if cls == "SparseAdam" else grad
        if cls == "LBFGS":
            optimizer.step(lambda: float(jnp.sum(param.data**2)))
        else:
            optimizer.step()
        return bool(jnp.all(jnp.isfinite(param.data)))

    return outcome(run)



# ------------------------------------------------------------------- 2. written cases


@dataclasses.dataclass
class Case:
    """One written case (see the module docstring).

    ``make(lib)`` raises (construction cases), or returns ``(optimizer, params, bad_call)``
    (``after``); ``core`` holds the options (torch's spelling, values possibly functions
    of a library) that the core alias of ``cls`` must refuse with ``ValueError(message)``.
    """

    id: str
    exc: type
    message: str
    make: Callable
    after_construction: bool = False
    cls: str | None = None
    core: dict | None = None


def _ctor(cls, params_fn=None, step=False, **options):
    """A case that builds ``cls(params, **options)`` (and steps it once, with ``step``,
    for what torch checks only at the first step)."""

    def make(lib):
        params = params_fn(lib) if params_fn else [lib.P(np.ones((2, 3)))]
        opts = {k: (v(lib) if callable(v) else v) for k, v in options.items()}
        optimizer = getattr(lib.optim, cls)(params, **opts)
        if step:
            for p in params:
                p.grad = lib.dense(np.ones(p.shape))
            optimizer.step()
        return optimizer

    return make


def _tensor(value):
    return lambda lib: lib.array(value)


CASES: list[Case] = []


def case(id, exc, message, make, after=False):
    CASES.append(Case(id, exc, message, make, after))


def ctor(id, cls, exc, message, *, core=False, step=False, params_fn=None, **options):
    """A construction case; ``core``: the core alias refuses the same options with the same text."""
    CASES.append(Case(id, exc, message, _ctor(cls, params_fn, step, **options), cls=cls,
                      core=options if core else None))


def core_case(cls, message, *, step=False, **options):
    """A refused number, for torch_compat, torch and the core alike (id from the options)."""
    label = ",".join(f"{k}={'tensor' if callable(v) else repr(v)}" for k, v in options.items())
    ctor(f"{cls}-{label}", cls, ValueError, message, core=True, step=step, **options)


# -- refused options, class by class (torch_compat, torch; the core where core=True) ------

V = ValueError
for cls in ["SGD", "ASGD", "Rprop", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam", "RAdam"]:
    ctor(f"{cls}-lr", cls, V, "Invalid learning rate: -0.1", core=True, lr=-0.1)
for cls in CORE:  # every class but LBFGS
    ctor(f"{cls}-tensor-lr", cls, V, "Tensor lr must be 1-element", core=True, lr=_tensor([0.1, 0.2]))
for cls in ["SGD", "ASGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam", "RAdam"]:
    ctor(f"{cls}-weight_decay", cls, V, "Invalid weight_decay value: -0.001", core=True, weight_decay=-1e-3)
for cls in ["Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam", "RAdam"]:
    ctor(f"{cls}-eps", cls, V, "Invalid epsilon value: -1e-08", core=True, eps=-1e-8)
for cls in ["Adam", "AdamW", "Adamax", "NAdam", "RAdam", "SparseAdam"]:
    ctor(f"{cls}-beta0", cls, V, "Invalid beta parameter at index 0: 1.0", core=True, betas=(1.0, 0.999))
    ctor(f"{cls}-beta1", cls, V, "Invalid beta parameter at index 1: -0.5", core=True, betas=(0.9, -0.5))

ctor("SGD-momentum", "SGD", V, "Invalid momentum value: -0.5", core=True, momentum=-0.5)
ctor("SGD-nesterov-no-momentum", "SGD", V, "Nesterov momentum requires a momentum and zero dampening", core=True,
     nesterov=True)
ctor("SGD-nesterov-dampening", "SGD", V, "Nesterov momentum requires a momentum and zero dampening", core=True,
     momentum=0.9, dampening=0.1, nesterov=True)
for cls in ["SGD", "Adagrad", "Adam", "AdamW"]:
    case(f"{cls}-fused-differentiable", RuntimeError, "`fused` does not support `differentiable`",
         _ctor(cls, fused=True, differentiable=True))
for cls in ["SGD", "Adagrad", "Adam", "AdamW"]:
    case(f"{cls}-fused-foreach", RuntimeError, "`fused` and `foreach` cannot be `True` together.",
         _ctor(cls, fused=True, foreach=True))
ctor("Rprop-etas-high", "Rprop", V, "Invalid eta values: 1.2, 1.5", core=True, etas=(1.2, 1.5))
ctor("Rprop-etas-low", "Rprop", V, "Invalid eta values: 0.5, 0.9", core=True, etas=(0.5, 0.9))
ctor("Adagrad-lr_decay", "Adagrad", V, "Invalid lr_decay value: -0.1", core=True, lr_decay=-0.1)
ctor("Adagrad-initial_accumulator_value", "Adagrad", V, "Invalid initial_accumulator_value value: -1", core=True,
     initial_accumulator_value=-1)
ctor("Adadelta-rho-high", "Adadelta", V, "Invalid rho value: 1.5", core=True, rho=1.5)
ctor("Adadelta-rho-low", "Adadelta", V, "Invalid rho value: -0.1", core=True, rho=-0.1)
ctor("RMSprop-momentum", "RMSprop", V, "Invalid momentum value: -0.9", core=True, momentum=-0.9)
ctor("RMSprop-alpha", "RMSprop", V, "Invalid alpha value: -0.99", core=True, alpha=-0.99)
ctor("NAdam-momentum_decay", "NAdam", V, "Invalid momentum_decay value: -0.004", core=True, momentum_decay=-4e-3)
case("Adam-tensor-lr-foreach", V, "lr as a Tensor is not supported for capturable=False and foreach=True",
     _ctor("Adam", lr=_tensor(0.01), foreach=True))
case("Adam-betas-mixed", V, "betas must be either both floats or both Tensors",
     _ctor("Adam", betas=lambda lib: (lib.array(0.9), 0.999)))
# torch wants floats: an int beta is refused too.
case("Adam-betas-int", V, "betas must be either both floats or both Tensors", _ctor("Adam", betas=(0, 0.99)))
case("AdamW-betas-int", V, "betas must be either both floats or both Tensors", _ctor("AdamW", betas=(0.9, 0)))
case("Adam-tensor-betas-foreach", V, "betas[0] as a Tensor is not supported for capturable=False and foreach=True",
     _ctor("Adam", betas=lambda lib: (lib.array(0.9), lib.array(0.999)), foreach=True))
ctor("SparseAdam-lr-zero", "SparseAdam", V, "Invalid learning rate: 0", core=True, lr=0)
ctor("SparseAdam-eps-zero", "SparseAdam", V, "Invalid epsilon value: 0.0", core=True, eps=0.0)
ctor("Adafactor-lr", "Adafactor", V, "Learning rate should be >= 0 but is: -0.1", core=True, lr=-0.1)
ctor("Adafactor-beta2_decay", "Adafactor", V, "beta2_decay should be <= 0 but is: 0.5", core=True, beta2_decay=0.5)
ctor("Adafactor-eps1", "Adafactor", V, "epsilon1 should be >= 0 but is: -1e-30", core=True, eps=(-1e-30, 1e-3))
ctor("Adafactor-eps2", "Adafactor", V, "epsilon2 should be >= 0 but is: -0.001", core=True, eps=(None, -1e-3))
ctor("Adafactor-d", "Adafactor", V, "Clipping threshold d should be >= 1 but is: 0.5", core=True, d=0.5)
ctor("Adafactor-weight_decay", "Adafactor", V, "weight_decay should be >= 0 but is: -0.1", core=True,
     weight_decay=-0.1)
ctor("Muon-lr", "Muon", V, "Learning rate should be >= 0 but is: -0.1", core=True, lr=-0.1)
ctor("Muon-momentum", "Muon", V, "momentum should be >= 0 but is: -0.95", core=True, momentum=-0.95)
ctor("Muon-weight_decay", "Muon", V, "weight decay should be >= 0 but is: -0.1", core=True, weight_decay=-0.1)
ctor("Muon-adjust_lr_fn", "Muon", V, "Adjust learning rate function spectral is not supported", core=True,
     adjust_lr_fn="spectral")
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




# -- refused numbers, also given to the core alias --------------------------------------
# The first failing check decides the message: torch's order of checks is tested too.

core_case("SGD", "Invalid learning rate: -1", lr=-1)
core_case("SGD", "Invalid momentum value: -0.5", lr=0.1, momentum=-0.5)
core_case("SGD", "Invalid weight_decay value: -0.001", lr=0.1, weight_decay=-1e-3)
core_case("SGD", "Invalid learning rate: -0.5", lr=np.float64(-0.5))
core_case("SGD", "Nesterov momentum requires a momentum and zero dampening", lr=0.1, nesterov=True)
core_case("SGD", "Nesterov momentum requires a momentum and zero dampening", lr=0.1, momentum=0.9, dampening=0.1,
          nesterov=True)
core_case("SGD", "Invalid learning rate: -1.0", lr=-1.0, momentum=-1.0)
core_case("SGD", "Invalid momentum value: -1.0", lr=0.1, momentum=-1.0, weight_decay=-1.0)
core_case("ASGD", "Invalid learning rate: -0.01", lr=-0.01)
core_case("ASGD", "Invalid weight_decay value: -0.1", lr=0.01, weight_decay=-0.1)
core_case("Rprop", "Invalid learning rate: -0.01", lr=-0.01)
core_case("Rprop", "Invalid eta values: 1.5, 2.0", lr=0.01, etas=(1.5, 2.0))
core_case("Rprop", "Invalid eta values: 0.5, 0.9", lr=0.01, etas=(0.5, 0.9))
core_case("Rprop", "Invalid eta values: 0.0, 1.2", lr=0.01, etas=(0.0, 1.2))
core_case("Rprop", "Invalid eta values: 0.5, 1.0", lr=0.01, etas=(0.5, 1.0))
core_case("Adagrad", "Invalid learning rate: -0.01", lr=-0.01)
core_case("Adagrad", "Invalid lr_decay value: -0.1", lr=0.01, lr_decay=-0.1)
core_case("Adagrad", "Invalid weight_decay value: -0.1", lr=0.01, weight_decay=-0.1)
core_case("Adagrad", "Invalid initial_accumulator_value value: -1.0", lr=0.01, initial_accumulator_value=-1.0)
core_case("Adagrad", "Invalid epsilon value: -1e-10", lr=0.01, eps=-1e-10)
core_case("Adadelta", "Invalid learning rate: -1.0", lr=-1.0)
core_case("Adadelta", "Invalid rho value: 1.1", rho=1.1)
core_case("Adadelta", "Invalid epsilon value: -1e-06", eps=-1e-6)
core_case("Adadelta", "Invalid weight_decay value: -0.5", weight_decay=-0.5)
core_case("RMSprop", "Invalid learning rate: -0.01", lr=-0.01)
core_case("RMSprop", "Invalid weight_decay value: -0.1", weight_decay=-0.1)
core_case("RMSprop", "Invalid epsilon value: -1.0", eps=-1.0, alpha=-1.0)
core_case("Adam", "Invalid learning rate: -0.001", lr=-1e-3)
core_case("Adam", "Invalid beta parameter at index 0: -0.1", betas=(-0.1, 0.999))
core_case("Adam", "Invalid beta parameter at index 1: 1.0", betas=(0.9, 1.0))
core_case("Adam", "Invalid weight_decay value: -0.01", weight_decay=-0.01)
core_case("Adam", "Invalid learning rate: -1.0", lr=-1.0, eps=-1.0)
core_case("Adam", "Invalid epsilon value: -1.0", eps=-1.0, betas=(1.0, 1.0))
core_case("Adam", "Invalid beta parameter at index 0: 1.0", betas=(1.0, 1.0))
core_case("AdamW", "Invalid learning rate: -0.001", lr=-1e-3)
core_case("AdamW", "Invalid beta parameter at index 1: 1.5", betas=(0.9, 1.5))
core_case("AdamW", "Invalid weight_decay value: -0.01", weight_decay=-0.01)
core_case("Adamax", "Invalid learning rate: -0.002", lr=-2e-3)
core_case("Adamax", "Invalid beta parameter at index 1: 1.0", betas=(0.9, 1.0))
core_case("Adamax", "Invalid weight_decay value: -1.0", weight_decay=-1.0)
core_case("SparseAdam", "Invalid learning rate: 0.0", lr=0.0)
core_case("SparseAdam", "Invalid learning rate: -0.001", lr=-1e-3)
core_case("SparseAdam", "Invalid epsilon value: -1e-08", eps=-1e-8)
core_case("SparseAdam", "Invalid beta parameter at index 1: 1.0", betas=(0.9, 1.0))
core_case("NAdam", "Invalid learning rate: -0.002", lr=-2e-3)
core_case("NAdam", "Invalid beta parameter at index 1: 1.0", betas=(0.9, 1.0))
core_case("NAdam", "Invalid weight_decay value: -0.1", weight_decay=-0.1)
core_case("RAdam", "Invalid learning rate: -0.001", lr=-1e-3)
core_case("RAdam", "Invalid beta parameter at index 1: 1.0", betas=(0.9, 1.0))
core_case("RAdam", "Invalid weight_decay value: -0.1", weight_decay=-0.1)
core_case("Adafactor", "Learning rate should be >= 0 but is: -1.0", lr=-1.0)
core_case("Adafactor", "epsilon1 should be >= 0 but is: -1.0", eps=(-1.0, 1e-3))
core_case("Muon", "Learning rate should be >= 0 but is: -0.001", lr=-1e-3)
core_case("Muon", "momentum should be >= 0 but is: -0.5", momentum=-0.5)
core_case("Muon", "Adjust learning rate function bogus is not supported", adjust_lr_fn="bogus")
# torch checks these only in step(); the core when the alias is built.
core_case("Muon", "Number of steps must be less than 100 for computational efficiency", step=True, ns_steps=100)
core_case("Muon", "Coefficients must be a tuple of exactly 3 values", step=True, ns_coefficients=(3.4445, -4.775))

# Values on the edge of what torch accepts: every face accepts them.
EDGES = [
    ("SGD", dict(lr=0.0, momentum=0.0, weight_decay=0.0)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.0, nesterov=True)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=1.0)),
    ("ASGD", dict(lr=0.0, weight_decay=0.0)),
    ("Rprop", dict(lr=0.0, etas=(1e-3, 1.001))),
    ("Adagrad", dict(lr=0.0, lr_decay=0.0, initial_accumulator_value=0.0, eps=0.0)),
    ("Adadelta", dict(lr=0.0, rho=0.0, eps=0.0)),
    ("Adadelta", dict(rho=1.0)),
    ("RMSprop", dict(lr=0.0, alpha=0.0, eps=0.0, momentum=0.0)),
    ("Adam", dict(lr=0.0, betas=(0.0, 0.0), eps=0.0, weight_decay=0.0)),
    ("Adam", dict(betas=(0.999999, 0.999999), amsgrad=True)),
    ("AdamW", dict(lr=0.0, betas=(0.0, 0.0), eps=0.0, weight_decay=0.0)),
    ("Adamax", dict(lr=0.0, betas=(0.0, 0.0), eps=0.0)),
    ("SparseAdam", dict(lr=1e-12, betas=(0.0, 0.0), eps=1e-12)),
    ("NAdam", dict(lr=0.0, momentum_decay=0.0, betas=(0.0, 0.0))),
    ("RAdam", dict(lr=0.0, eps=0.0, betas=(0.0, 0.0))),
    ("Adafactor", dict(lr=0.0, beta2_decay=0.0, eps=(0.0, 0.0), d=1.0, weight_decay=0.0)),
    ("Muon", dict(lr=0.0, momentum=0.0, weight_decay=0.0, ns_steps=99, adjust_lr_fn="original")),
    ("Muon", dict(adjust_lr_fn="match_rms_adamw")),
]


def edge_id(cls, options):
    return f"{cls}-" + ",".join(f"{k}={v!r}" for k, v in options.items())


# -- lr_scheduler misuse the scheduler golden file (schedules.npz) does not cover --------


def _two_optimizers(optim_module, make_param):
    a = optim_module.SGD([make_param()], lr=0.1)
    b = optim_module.SGD([make_param()], lr=0.2)
    return a, b


def scheduler_cases():
    """``{id: run(optim_module, make_param)}``; each raises (or not) as torch does."""

    def sequential_other_optimizer(optim_module, make_param):
        a, b = _two_optimizers(optim_module, make_param)
        L = optim_module.lr_scheduler
        L.SequentialLR(a, [L.StepLR(a, 2), L.StepLR(b, 2)], milestones=[2])

    def chained_other_optimizer(optim_module, make_param):
        a, b = _two_optimizers(optim_module, make_param)
        L = optim_module.lr_scheduler
        L.ChainedScheduler([L.StepLR(a, 2), L.ExponentialLR(b, 0.9)])

    def plateau_after_new_group(optim_module, make_param):
        opt = optim_module.SGD([make_param()], lr=0.1)
        sched = optim_module.lr_scheduler.ReduceLROnPlateau(opt, patience=0, min_lr=[0.0])
        opt.add_param_group({"params": [make_param()]})
        for metric in (1.0, 2.0, 3.0):
            sched.step(metric)

    def warm_restarts_negative_epoch(optim_module, make_param):
        opt = optim_module.SGD([make_param()], lr=0.1)
        optim_module.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=3).step(-2)

    def lambda_lr_count(optim_module, make_param):
        opt = optim_module.SGD([make_param()], lr=0.1)
        optim_module.lr_scheduler.LambdaLR(opt, [lambda e: 1.0, lambda e: 0.5])

    def cyclic_lr_mode(optim_module, make_param):
        opt = optim_module.SGD([make_param()], lr=0.1, momentum=0.9)
        optim_module.lr_scheduler.CyclicLR(opt, 0.01, 0.1, mode="sine")

    return {
        "SequentialLR-other-optimizer": sequential_other_optimizer,
        "ChainedScheduler-other-optimizer": chained_other_optimizer,
        "ReduceLROnPlateau-new-group": plateau_after_new_group,
        "CosineAnnealingWarmRestarts-negative-epoch": warm_restarts_negative_epoch,
        "LambdaLR-two-lambdas-one-group": lambda_lr_count,
        "CyclicLR-unknown-mode": cyclic_lr_mode,
    }

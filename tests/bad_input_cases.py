"""Bad hyperparameters for every torch.optim class: one table for torch, torch_compat and the core.

Each case builds an optimizer of one class on one float64 ``(3, 2)`` parameter with one
option set to a bad (or borderline) value and, when torch accepts the constructor, takes
one step (``when == "step"``: torch checks some options only there). What torch 2.13
does is stored in ``golden/bad_input.json`` by ``make_golden_bad_input.py`` as
``"Type: message"``, ``"ok"`` or ``"ok, not finite"`` (torch accepts some values that
wreck the step, such as RMSprop's ``alpha=1.5``); torch_compat must do the same, and the core alias with
the same options must raise ``ValueError`` wherever the value is invalid
(:func:`core_must_refuse`), with torch's text where torch raises ``ValueError`` for a
number.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

CLASSES = "SGD ASGD Rprop Adagrad Adadelta RMSprop Adam AdamW Adamax SparseAdam NAdam RAdam Adafactor Muon LBFGS".split()
CORE = {
    "SGD": "sgd",
    "ASGD": "asgd",
    "Rprop": "rprop",
    "Adagrad": "adagrad",
    "Adadelta": "adadelta",
    "RMSprop": "rmsprop",
    "Adam": "adam",
    "AdamW": "adamw",
    "Adamax": "adamax",
    "SparseAdam": "sparse_adam",
    "NAdam": "nadam",
    "RAdam": "radam",
    "Adafactor": "adafactor",
    "Muon": "muon",
}

# The numeric options of each class (torch's names), and whether each is one value or a
# pair (a triple for ns_coefficients). lr is every class's.
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

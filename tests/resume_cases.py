"""The runs of tests/test_checkpoints.py: every optimizer and scheduler, stopped and resumed.

Run as a script, in a fresh process, with the same jax configuration on both sides
(x64 on; float32 and float64 parameters side by side), for one ``PART`` of the cases
(``functional`` or ``torch``; the test runs the two parts side by side):

* ``python tests/resume_cases.py run PART FOLDER``: builds every case, trains ``K`` steps,
  saves a checkpoint (pickle; ``gradxform.checkpoint.save``, which holds everything but
  the optimizer objects that the ``*_object`` cases pickle; and orbax for the functional
  states when orbax is installed), then trains ``M`` more steps: the uninterrupted run.
  Its final state goes to ``FOLDER/run.pkl``.
* ``python tests/resume_cases.py resume PART FOLDER``: builds every case afresh, loads each
  checkpoint format in turn and trains ``M`` steps: ``FOLDER/resume-<format>.pkl``. The
  formats: ``pickle``, ``npz`` (``gradxform.checkpoint.load``), ``npz_target`` (the same
  file loaded with the abstract states as ``target=``, functional part only) and
  ``orbax``.

Results hold numpy arrays and Python values only (see :func:`to_numpy`), so that the
test can compare them bit for bit in its own process.

The functional cases cover all 14 aliases and ``lbfgs`` with the options that create
every optional buffer, ``flatten``, ``reduce_on_plateau`` and a schedule; the
torch_compat cases cover the 15 optimizers (LBFGS with a closure) and the 15
lr_scheduler classes (LambdaLR and MultiplicativeLR with module-level functions and a
callable object whose attributes torch's state_dict keeps).
"""

from __future__ import annotations

import os
import pickle
import sys
import types

import jax

if __name__ == "__main__":  # as the test suite runs (tests/conftest.py), before any array
    jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import numpy as np

import gradxform
import torch_compat as tc
from gradxform import checkpoint, schedules
from torch_compat import optim
from torch_compat.optim import lr_scheduler

K, M = 3, 4  # steps before the checkpoint, steps after it

# ---------------------------------------------------------------------------------------
# The problem: a smooth loss over float32 and float64 leaves, gradients with zeros
# ---------------------------------------------------------------------------------------


def initial_values(kind: str) -> dict:
    """Starting parameters: ``mixed`` (float32, float64 and bfloat16 leaves, nested),
    ``matrices`` (2-D only, for Muon), ``float32`` / ``float64`` (one dtype, for L-BFGS)."""
    rng = np.random.default_rng(11)
    if kind == "mixed":
        return {
            "a": rng.standard_normal((3, 4)).astype(np.float32),
            "b": rng.standard_normal(5),
            "c": {"m": rng.standard_normal((2, 3)), "h": rng.standard_normal(4).astype(jnp.bfloat16)},
        }
    if kind == "matrices":
        return {"a": rng.standard_normal((3, 4)).astype(np.float32), "b": rng.standard_normal((4, 2))}
    dtype = np.dtype(kind)
    return {"w": rng.standard_normal((3, 2)).astype(dtype), "b": rng.standard_normal(2).astype(dtype)}


def loss(params):
    """A sum of quadratics and sines, accumulated in float64."""
    total = jnp.zeros([], jnp.float64)
    for i, leaf in enumerate(jax.tree.leaves(params)):
        x = leaf.astype(jnp.float32) if leaf.dtype == jnp.bfloat16 else leaf
        total = total + jnp.sum(0.5 * (i + 1) * x**2 + jnp.sin(3.0 * x)).astype(jnp.float64)
    return total


def mask(grads, t):
    """Zeroes a third of each gradient, a different third each step (SparseAdam's pattern)."""
    return jax.tree.map(
        lambda g: jnp.where(jnp.arange(g.size).reshape(g.shape) % 3 == t % 3, jnp.zeros_like(g), g), grads
    )


# A metric for the plateau rules: improves, stalls, improves, stalls.
METRICS = (3.0, 2.0, 2.0, 2.0, 1.5, 1.5, 1.5, 1.5, 1.5, 1.0)


# ---------------------------------------------------------------------------------------
# Functional cases: name -> (transformation, parameter kind)
# ---------------------------------------------------------------------------------------


def functional_cases() -> dict:
    """Every alias with the options that create its optional buffers, and the wrappers."""
    return {
        "sgd": (gradxform.sgd(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3), "mixed"),
        "sgd_dampening": (gradxform.sgd(0.05, momentum=0.5, dampening=0.2, maximize=True), "mixed"),
        "sgd_plain": (gradxform.sgd(0.05), "mixed"),
        "asgd": (gradxform.asgd(0.05, lambd=1e-2, t0=2.0, weight_decay=1e-3), "mixed"),
        "rprop": (gradxform.rprop(0.05, etas=(0.4, 1.3), step_sizes=(1e-4, 0.5)), "mixed"),
        "adagrad": (gradxform.adagrad(0.1, lr_decay=1e-2, initial_accumulator_value=0.1, weight_decay=1e-3), "mixed"),
        "adadelta": (gradxform.adadelta(0.5, rho=0.8, weight_decay=1e-3), "mixed"),
        "rmsprop": (gradxform.rmsprop(0.01, centered=True, momentum=0.5, weight_decay=1e-3), "mixed"),
        "adam": (gradxform.adam(0.05, amsgrad=True, weight_decay=1e-3), "mixed"),
        "adam_schedule": (gradxform.adam(schedules.cosine_annealing(0.05, T_max=5, eta_min=0.001)), "mixed"),
        "adamw": (gradxform.adamw(0.05, amsgrad=True), "mixed"),
        "adamax": (gradxform.adamax(0.05, weight_decay=1e-3), "mixed"),
        "sparse_adam": (gradxform.sparse_adam(0.05), "mixed"),
        "nadam": (gradxform.nadam(0.05, weight_decay=1e-3, decoupled_weight_decay=True), "mixed"),
        "radam": (gradxform.radam(0.05, weight_decay=1e-3), "mixed"),
        "adafactor": (gradxform.adafactor(0.05, eps=(1e-30, 1e-3), weight_decay=1e-3), "mixed"),
        "muon": (gradxform.muon(0.05, nesterov=True, adjust_lr_fn="match_rms_adamw"), "matrices"),
        "lbfgs_float32": (gradxform.lbfgs(0.5, max_iter=3, history_size=4, line_search_fn="strong_wolfe"), "float32"),
        "lbfgs_float64": (gradxform.lbfgs(1.0, max_iter=3, history_size=4), "float64"),
        "flatten_adam": (gradxform.flatten(gradxform.adam(0.05, amsgrad=True)), "mixed"),
        "plateau": (gradxform.chain(gradxform.sgd(0.1, momentum=0.5), gradxform.reduce_on_plateau(factor=0.5, patience=1, cooldown=1)), "mixed"),
    }


def functional_step(name: str, tx):
    """The training step of a case: ``(params, state, t) -> (params, state)``."""

    def step(params, state, t):
        value, grads = jax.value_and_grad(loss)(params)
        if name.startswith("lbfgs"):
            updates, state = tx.update(grads, state, params, value_fn=loss, value=value)
        elif name == "plateau":
            updates, state = tx.update(mask(grads, t), state, params, value=jnp.asarray(METRICS)[t])
        else:
            updates, state = tx.update(mask(grads, t), state, params)
        return gradxform.apply_updates(params, updates), state

    return step


# ---------------------------------------------------------------------------------------
# torch_compat cases: name -> builder(list of Parameters) -> (optimizer, scheduler)
# ---------------------------------------------------------------------------------------


def warmup(epoch):
    """A module-level lr_lambda (torch's state_dict saves None for a function)."""
    return (epoch + 1) / (epoch + 2)


def every_other(epoch):
    """A module-level lr_lambda for MultiplicativeLR."""
    return 0.5 if epoch % 2 else 0.9


class Decay:
    """A callable object with state: its ``__dict__`` is in the scheduler's state_dict."""

    def __init__(self, rate):
        self.rate, self.calls = rate, 0

    def __call__(self, epoch):
        self.calls += 1
        return self.rate ** (epoch + self.calls % 2)


def _two_groups(ps, **options):
    """Group 0: the float32 matrix; group 1: the float64 leaves, with its own lr."""
    return [{"params": ps[:1]}, {"params": ps[1:], "lr": options.pop("lr1")}], options


def _opt(cls, **options):
    def build(ps):
        groups, rest = _two_groups(ps, **options)
        return cls(groups, **rest)

    return build


def optimizer_cases() -> dict:
    """The 15 torch_compat optimizers, each with the options that create every buffer."""
    return {
        "SGD": (_opt(optim.SGD, lr=0.05, lr1=0.03, momentum=0.9, nesterov=True, weight_decay=1e-3), "mixed"),
        # ASGD's eta and mu and NAdam's mu_product are float32 scalars (as torch keeps
        # them); torch's load_state_dict casts them to the parameter's dtype, so their
        # state_dict is bit for bit with float32 parameters. ASGD_object and NAdam_object
        # (float64 and bfloat16 too) are resumed by pickling the optimizer itself.
        "ASGD": (_opt(optim.ASGD, lr=0.05, lr1=0.03, lambd=1e-2, t0=2.0, weight_decay=1e-3), "float32"),
        "ASGD_object": (_opt(optim.ASGD, lr=0.05, lr1=0.03, lambd=1e-2, t0=2.0, weight_decay=1e-3), "mixed"),
        "Rprop": (_opt(optim.Rprop, lr=0.05, lr1=0.03, etas=(0.4, 1.3), step_sizes=(1e-4, 0.5)), "mixed"),
        "Adagrad": (_opt(optim.Adagrad, lr=0.1, lr1=0.05, lr_decay=1e-2, initial_accumulator_value=0.1), "mixed"),
        "Adadelta": (_opt(optim.Adadelta, lr=0.5, lr1=0.3, rho=0.8, weight_decay=1e-3), "mixed"),
        "RMSprop": (_opt(optim.RMSprop, lr=0.01, lr1=0.02, centered=True, momentum=0.5), "mixed"),
        "Adam": (_opt(optim.Adam, lr=0.05, lr1=0.03, amsgrad=True, weight_decay=1e-3), "mixed"),
        "AdamW": (_opt(optim.AdamW, lr=0.05, lr1=0.03, amsgrad=True), "mixed"),
        "Adamax": (_opt(optim.Adamax, lr=0.05, lr1=0.03, weight_decay=1e-3), "mixed"),
        "SparseAdam": (_opt(optim.SparseAdam, lr=0.05, lr1=0.03), "mixed"),
        "NAdam": (_opt(optim.NAdam, lr=0.05, lr1=0.03, momentum_decay=5e-3, decoupled_weight_decay=True, weight_decay=1e-3), "float32"),
        "NAdam_object": (_opt(optim.NAdam, lr=0.05, lr1=0.03, momentum_decay=5e-3, decoupled_weight_decay=True, weight_decay=1e-3), "mixed"),
        "RAdam": (_opt(optim.RAdam, lr=0.05, lr1=0.03, decoupled_weight_decay=True, weight_decay=1e-3), "mixed"),
        "Adafactor": (_opt(optim.Adafactor, lr=0.05, lr1=0.03, eps=(1e-30, 1e-3)), "mixed"),
        "Muon": (_opt(optim.Muon, lr=0.05, lr1=0.03, adjust_lr_fn="match_rms_adamw"), "matrices"),
        "LBFGS_float32": (lambda ps: optim.LBFGS(ps, lr=0.5, max_iter=3, history_size=3, line_search_fn="strong_wolfe"), "float32"),
        "LBFGS_float64": (lambda ps: optim.LBFGS(ps, lr=1.0, max_iter=3, history_size=3), "float64"),
    }


def _sgd(ps):
    groups, rest = _two_groups(ps, lr=0.1, lr1=0.05, momentum=0.9)
    return optim.SGD(groups, **rest)


def _adam(ps):
    groups, rest = _two_groups(ps, lr=0.1, lr1=0.05)
    return optim.Adam(groups, **rest)


def _sched(make, opt_builder=_sgd):
    def build(ps):
        opt = opt_builder(ps)
        return opt, make(opt)

    return build


S = lr_scheduler
SCHEDULERS = {
    "LambdaLR": lambda o: S.LambdaLR(o, [warmup, Decay(0.9)]),
    "MultiplicativeLR": lambda o: S.MultiplicativeLR(o, every_other),
    "StepLR": lambda o: S.StepLR(o, step_size=2, gamma=0.5),
    "MultiStepLR": lambda o: S.MultiStepLR(o, milestones=[2, 5], gamma=0.3),
    "ConstantLR": lambda o: S.ConstantLR(o, factor=0.5, total_iters=5),
    "LinearLR": lambda o: S.LinearLR(o, start_factor=0.25, total_iters=5),
    "ExponentialLR": lambda o: S.ExponentialLR(o, gamma=0.9),
    "PolynomialLR": lambda o: S.PolynomialLR(o, total_iters=5, power=2.0),
    "CosineAnnealingLR": lambda o: S.CosineAnnealingLR(o, T_max=4, eta_min=1e-3),
    "ChainedScheduler": lambda o: S.ChainedScheduler([S.ConstantLR(o, factor=0.5, total_iters=4), S.ExponentialLR(o, gamma=0.8)]),
    "SequentialLR": lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.5, total_iters=4), S.CosineAnnealingLR(o, T_max=3)], milestones=[5]),
    "ReduceLROnPlateau": lambda o: S.ReduceLROnPlateau(o, factor=0.5, patience=1, cooldown=1),
    "CyclicLR": lambda o: S.CyclicLR(o, base_lr=0.01, max_lr=[0.1, 0.2], step_size_up=2, mode="triangular2"),
    "CosineAnnealingWarmRestarts": lambda o: S.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=2, eta_min=1e-3),
    "OneCycleLR": lambda o: S.OneCycleLR(o, max_lr=0.2, total_steps=10, three_phase=True),
}


def scheduler_cases() -> dict:
    """The 15 lr_scheduler classes on SGD with momentum (2 groups); two more on Adam,
    where CyclicLR and OneCycleLR cycle ``betas[0]``."""
    cases = {f"{name}": (_sched(make), "mixed") for name, make in SCHEDULERS.items()}
    cases["CyclicLR_adam"] = (_sched(lambda o: S.CyclicLR(o, 0.01, 0.1, step_size_up=3, mode="exp_range", gamma=0.9), _adam), "mixed")
    cases["OneCycleLR_adam"] = (_sched(lambda o: S.OneCycleLR(o, max_lr=[0.1, 0.2], total_steps=10, anneal_strategy="linear"), _adam), "mixed")
    return cases


def torch_cases() -> dict:
    """name -> (builder(ps) -> (optimizer, scheduler or None), parameter kind)."""
    cases = {}
    for name, (build, kind) in optimizer_cases().items():
        cases[name] = ((lambda b: lambda ps: (b(ps), None))(build), kind)
    cases.update({f"sched/{name}": case for name, case in scheduler_cases().items()})
    return cases


def parameters(values: dict) -> list:
    return tc.parameters(tc.as_parameters(jax.tree.map(jnp.asarray, values)))


_grad = jax.jit(jax.value_and_grad(loss))


def torch_step(name: str, opt, scheduler, ps, t) -> None:
    """One training step: gradients (masked), ``opt.step()``, then the scheduler."""
    if isinstance(opt, optim.LBFGS):

        def closure():
            opt.zero_grad()
            value, grads = _grad([p.data for p in ps])
            for p, g in zip(ps, grads):
                p.grad = g
            return value

        opt.step(closure)
    else:
        _, grads = _grad([p.data for p in ps])
        for p, g in zip(ps, mask(grads, t)):
            p.grad = g
        opt.step()
    if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
        scheduler.step(METRICS[t])
    elif scheduler is not None:
        scheduler.step()


# ---------------------------------------------------------------------------------------
# Results, saving and loading
# ---------------------------------------------------------------------------------------


def to_numpy(tree):
    """The tree with JAX arrays as numpy arrays, containers and Python values as they are."""
    return jax.tree.map(lambda x: np.asarray(x) if isinstance(x, jax.Array) else x, tree)


def attributes(obj):
    """A scheduler's every attribute (not only what its state_dict saves), functions by
    name and callable objects by their attributes, members of SequentialLR and
    ChainedScheduler included: a field that is not saved but matters shows up here."""
    if isinstance(obj, lr_scheduler.LRScheduler):
        return {k: attributes(v) for k, v in vars(obj).items() if k != "optimizer"}
    if isinstance(obj, (list, tuple)):
        return type(obj)(attributes(v) for v in obj)
    if isinstance(obj, dict):
        return {k: attributes(v) for k, v in obj.items()}
    if isinstance(obj, types.FunctionType):
        return obj.__qualname__
    if callable(obj) and hasattr(obj, "__dict__"):
        return (type(obj).__qualname__, attributes(vars(obj)))
    return to_numpy(obj)


def _torch_result(opt, scheduler, ps) -> dict:
    return {
        "params": [np.asarray(p.data) for p in ps],
        "optimizer": to_numpy(opt.state_dict()),
        "scheduler": None if scheduler is None else to_numpy(scheduler.state_dict()),
        "scheduler_attributes": None if scheduler is None else attributes(scheduler),
    }


def orbax_available() -> bool:
    try:
        import orbax.checkpoint  # noqa: F401
    except ImportError:
        return False
    return True


_STEPS: dict = {}  # name -> (transformation, step), built once per process


@jax.jit
def _step_all(params: dict, states: dict, t):
    """Every functional case's step, in one compiled call (one compilation instead of
    one per case: the test is compile-bound)."""
    out = {name: _STEPS[name][1](params[name], states[name], t) for name in params}
    return {name: o[0] for name, o in out.items()}, {name: o[1] for name, o in out.items()}


def build_all(part: str, init: bool = True):
    """Every case of ``part`` (``"functional"`` or ``"torch"``), its parameters at their
    initial values (and, with ``init``, the functional states from ``tx.init``; else
    None, for a checkpoint to fill)."""
    functional, torch = {}, {}
    if part == "torch":
        for name, (build, kind) in torch_cases().items():
            ps = parameters(initial_values(kind))
            opt, scheduler = build(ps)
            torch[name] = (opt, scheduler, ps)
        return functional, torch
    if not _STEPS:
        _STEPS.update({name: (tx, functional_step(name, tx)) for name, (tx, _) in functional_cases().items()})
    for name, (_, kind) in functional_cases().items():
        tx, step = _STEPS[name]
        params = jax.tree.map(jnp.asarray, initial_values(kind))
        functional[name] = (tx, step, params, tx.init(params) if init else None)
    return functional, torch


def train(functional: dict, torch: dict, start: int, stop: int) -> None:
    for t in range(start, stop):
        if functional:
            params, states = _step_all({n: c[2] for n, c in functional.items()},
                                       {n: c[3] for n, c in functional.items()}, jnp.asarray(t, jnp.int32))
            for name, (tx, step, _, _) in functional.items():
                functional[name] = (tx, step, params[name], states[name])
        for name, (opt, scheduler, ps) in torch.items():
            torch_step(name, opt, scheduler, ps, t)


def results(functional: dict, torch: dict) -> dict:
    return {
        "functional": {name: to_numpy((params, state)) for name, (_, _, params, state) in functional.items()},
        "torch": {name: _torch_result(*case) for name, case in torch.items()},
    }


def checkpoint_of(functional: dict, torch: dict) -> dict:
    """What a training script saves: functional (params, state); for torch_compat the
    optimizer's and scheduler's state_dict() and the parameter values."""
    return {
        "functional": {name: (params, state) for name, (_, _, params, state) in functional.items()},
        "torch": {
            name: {"object": opt}
            if name.endswith("_object")
            else {
                "optimizer": opt.state_dict(),
                "scheduler": None if scheduler is None else scheduler.state_dict(),
                "params": [np.asarray(p.data) for p in ps],
            }
            for name, (opt, scheduler, ps) in torch.items()
        },
    }


def run(part: str, folder: str) -> None:
    functional, torch = build_all(part)
    train(functional, torch, 0, K)
    saved = checkpoint_of(functional, torch)
    with open(os.path.join(folder, "checkpoint.pkl"), "wb") as f:
        pickle.dump(saved, f)
    # A gradxform checkpoint holds data only: not the pickled optimizer objects.
    checkpoint.save(os.path.join(folder, "checkpoint.npz"),
                    {"functional": saved["functional"],
                     "torch": {name: entry for name, entry in saved["torch"].items() if "object" not in entry}})
    if functional and orbax_available():
        import orbax.checkpoint as ocp

        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(os.path.join(folder, "orbax"), checkpoint.to_orbax(saved["functional"]))
    train(functional, torch, K, K + M)
    with open(os.path.join(folder, "run.pkl"), "wb") as f:
        pickle.dump(results(functional, torch), f)


def load(folder: str, fmt: str, functional: dict) -> dict:
    """The checkpoint saved by :func:`run`, read back in format ``fmt``."""
    if fmt == "pickle":
        with open(os.path.join(folder, "checkpoint.pkl"), "rb") as f:
            return pickle.load(f)
    if fmt == "npz":
        return checkpoint.load(os.path.join(folder, "checkpoint.npz"))
    # The target gives the NamedTuple types; without it, orbax returns dicts and lists.
    target = {name: jax.eval_shape(lambda p, tx=tx: (p, tx.init(p)), params) for name, (tx, _, params, _) in functional.items()}
    if fmt == "npz_target":
        # (Only the functional part resumes this way; its file holds no torch_compat case.)
        return checkpoint.load(os.path.join(folder, "checkpoint.npz"), target={"functional": target, "torch": {}})
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(os.path.join(folder, "orbax"), checkpoint.to_orbax(target))
    return {"functional": checkpoint.from_orbax(restored, target)}


def resume(part: str, folder: str) -> None:
    formats = ["pickle", "npz"] + (["npz_target"] if part == "functional" else [])
    formats += ["orbax"] if part == "functional" and orbax_available() else []
    for fmt in formats:
        functional, torch = build_all(part, init=False)
        saved = load(folder, fmt, functional)
        for name, (params, state) in saved["functional"].items():
            tx, step, _, _ = functional[name]
            functional[name] = (tx, step, params, state)
        for name, (opt, scheduler, ps) in list(torch.items()):
            if name not in saved["torch"]:  # an optimizer object, which only pickle keeps
                del torch[name]
                continue
            entry = saved["torch"][name]
            if "object" in entry:  # the whole optimizer, its Parameters inside
                opt = entry["object"]
                torch[name] = (opt, None, [p for group in opt.param_groups for p in group["params"]])
                continue
            for p, value in zip(ps, entry["params"]):
                p.data = jnp.asarray(value)
            opt.load_state_dict(entry["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(entry["scheduler"])
        train(functional, torch, K, K + M)
        with open(os.path.join(folder, f"resume-{fmt}.pkl"), "wb") as f:
            pickle.dump(results(functional, torch), f)


if __name__ == "__main__":
    mode, part, folder = sys.argv[1:]
    {"run": run, "resume": resume}[mode](part, folder)

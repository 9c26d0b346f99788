"""Learning-rate scheduler scenarios, written once for torch and for torch_compat.

A scenario is a function ``run(backend) -> dict[str, np.ndarray]``. The backend brings
the ``lr_scheduler`` module and builds optimizers, so the same code runs torch 2.13's
schedulers (``make_golden_schedules.py`` stores the result in
``tests/golden/schedules.npz``, ``test_schedules_live.py`` runs it live) and
torch_compat's (both test files compare). Each run records, epoch by epoch:

* ``lr``: ``[steps, groups]``, each group's ``lr`` when ``optimizer.step()`` runs;
* ``momentum``: the same for ``momentum`` or ``betas[0]`` where the scenario cycles it;
* ``last_lr``: ``scheduler.get_last_lr()`` after each ``scheduler.step()``;
* ``last_epoch``: ``scheduler.last_epoch`` after each step (where it has one);
* ``warnings``: the UserWarnings raised, in order (text);
* ``error``: ``"Type: message"`` of an exception a scenario expects, or absent.

:data:`TWINS` pairs each functional schedule of :mod:`gradxform.schedules` with the
torch_compat scheduler it mirrors.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

STEPS = 40
TORCH_VERSION_PREFIX = "2.13.0"


# -- backends ----------------------------------------------------------------------------------


class Backend:
    """The scheduler module and an optimizer factory, for torch or torch_compat."""

    name: str
    L: Any

    def optimizer(self, kind: str = "sgd", lrs=(0.1,)):
        """An optimizer with one param group per entry of ``lrs``.

        ``kind``: ``"sgd"`` (momentum 0.9), ``"adam"`` (``betas``) or ``"adagrad"`` (no
        momentum at all).
        """
        groups = [{"params": [self.parameter()], "lr": lr} for lr in lrs]
        if kind == "sgd":
            return self.optim.SGD(groups, lr=lrs[0], momentum=0.9)
        if kind == "adam":
            return self.optim.Adam(groups, lr=lrs[0], betas=(0.9, 0.999))
        if kind == "adagrad":
            return self.optim.Adagrad(groups, lr=lrs[0])
        raise ValueError(kind)


class CompatBackend(Backend):
    name = "torch_compat"

    def __init__(self):
        import jax.numpy as jnp

        import torch_compat
        from torch_compat import optim
        from torch_compat.optim import lr_scheduler

        self.L, self.optim = lr_scheduler, optim
        self.parameter = lambda: torch_compat.Parameter(jnp.zeros(1))


class TorchBackend(Backend):
    name = "torch"

    def __init__(self):
        import torch
        from torch.optim import lr_scheduler

        self.L, self.optim = lr_scheduler, torch.optim
        self.parameter = lambda: torch.nn.Parameter(torch.zeros(1))


# -- functions given to LambdaLR, MultiplicativeLR and CyclicLR -------------------------------------


def decay_095(epoch):
    return 0.95**epoch


def every_third_halves(epoch):
    return 0.5 ** (epoch // 3)


def shrink_097(epoch):
    return 0.97


def shrink_by_epoch(epoch):
    return 1.0 - 0.01 * (epoch % 4)


class Warmup:
    """A callable object: its ``__dict__`` is saved by LambdaLR.state_dict()."""

    def __init__(self, steps):
        self.steps = steps

    def __call__(self, epoch):
        return min(1.0, (epoch + 1) / self.steps)


def halve_per_cycle(x):
    return 0.5**x


def slow_decay(x):
    return 1.0 / (1.0 + 0.05 * x)


# -- running a scheduler ---------------------------------------------------------------------


def _momentum(group):
    return group["betas"][0] if "betas" in group else group.get("momentum", math.nan)


def _floats(values):
    return [float(v) for v in values]


class Recorder:
    """Collects the per-epoch values of one scenario."""

    def __init__(self, momentum: bool = False):
        self.rows: dict[str, list] = {"lr": [], "last_lr": [], "last_epoch": []}
        if momentum:
            self.rows["momentum"] = []
        self.warnings: list[str] = []
        self.error: str | None = None

    def before_step(self, opt):
        self.rows["lr"].append(_floats(g["lr"] for g in opt.param_groups))
        if "momentum" in self.rows:
            self.rows["momentum"].append(_floats(_momentum(g) for g in opt.param_groups))

    def after_step(self, sched):
        self.rows["last_lr"].append(_floats(sched.get_last_lr()))
        self.rows["last_epoch"].append(getattr(sched, "last_epoch", -(10**9)))

    def drive(self, opt, sched, steps, *, metrics=None, hook=None, epochs=None):
        """``steps`` rounds of: record, optimizer.step(), [hook], scheduler.step()."""
        for k in range(steps):
            self.before_step(opt)
            opt.step()
            if hook is not None:
                hook(k, opt, sched)
            if metrics is not None:
                sched.step(metrics[k])
            elif epochs is not None:
                sched.step(epochs[k])
            else:
                sched.step()
            self.after_step(sched)

    def result(self) -> dict[str, np.ndarray]:
        out = {k: np.asarray(v, dtype=np.float64) for k, v in self.rows.items() if v}
        if "last_epoch" in out:
            out["last_epoch"] = out["last_epoch"].astype(np.int64)
        out["warnings"] = np.asarray(self.warnings, dtype=str)
        if self.error is not None:
            out["error"] = np.asarray(self.error)
        return out


def _record_warnings(rec: Recorder, body: Callable[[], None]) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            body()
        except (ValueError, TypeError, KeyError, RuntimeError, ZeroDivisionError) as exc:
            rec.error = f"{type(exc).__name__}: {exc}"
    rec.warnings.extend(str(w.message) for w in caught if issubclass(w.category, UserWarning))


# -- scenario builders -------------------------------------------------------------------------

Make = Callable[[Backend, Any], Any]
"""``(backend, optimizer) -> scheduler``."""


@dataclass
class Setup:
    make: Make
    kind: str = "sgd"
    lrs: tuple = (0.1,)
    momentum: bool = False
    metrics: tuple | None = None
    steps: int = STEPS


def plain(setup: Setup, *, hook=None):
    """Build, then step ``setup.steps`` times (with an optional hook between steps)."""

    def run(B):
        rec = Recorder(setup.momentum)

        def body():
            opt = B.optimizer(setup.kind, setup.lrs)
            sched = setup.make(B, opt)
            rec.drive(opt, sched, setup.steps, metrics=setup.metrics, hook=hook)

        _record_warnings(rec, body)
        return rec.result()

    return run


def by_hand(setup: Setup):
    """The ``lr`` (and, where cycled, nothing else) changed by hand between steps."""

    def hook(k, opt, sched):
        if k % 7 == 3:
            for i, group in enumerate(opt.param_groups):
                group["lr"] = group["lr"] * (0.5 + 0.1 * i)
        if k == 11:
            opt.param_groups[0]["lr"] = 0.3

    return plain(setup, hook=hook)


def resumed(setup: Setup, at: int = 13):
    """Run ``at`` steps, save both state dicts, rebuild everything, load, go on."""

    def run(B):
        rec = Recorder(setup.momentum)

        def body():
            opt = B.optimizer(setup.kind, setup.lrs)
            sched = setup.make(B, opt)
            metrics = setup.metrics
            rec.drive(opt, sched, at, metrics=metrics)
            saved_opt = copy.deepcopy(opt.state_dict())
            saved_sched = copy.deepcopy(sched.state_dict())
            opt = B.optimizer(setup.kind, setup.lrs)
            sched = setup.make(B, opt)
            opt.load_state_dict(saved_opt)
            sched.load_state_dict(saved_sched)
            rest = None if metrics is None else metrics[at:]
            rec.drive(opt, sched, setup.steps - at, metrics=rest)

        _record_warnings(rec, body)
        return rec.result()

    return run


def with_epochs(setup: Setup, epochs):
    """The deprecated ``step(epoch)`` path, with the given epochs."""

    def run(B):
        rec = Recorder(setup.momentum)

        def body():
            opt = B.optimizer(setup.kind, setup.lrs)
            sched = setup.make(B, opt)
            rec.drive(opt, sched, len(epochs), epochs=epochs)

        _record_warnings(rec, body)
        return rec.result()

    return run


def from_last_epoch(cls_name: str, kwargs: dict, last_epoch: int, *, kind="sgd", lrs=(0.1,), steps=15):
    """A scheduler built with ``last_epoch >= 0`` on groups holding ``initial_lr``."""

    def run(B):
        rec = Recorder()

        def body():
            opt = B.optimizer(kind, lrs)
            for group in opt.param_groups:
                group["initial_lr"] = group["lr"]
                group["lr"] = group["lr"] * 0.5
            sched = getattr(B.L, cls_name)(opt, **kwargs, last_epoch=last_epoch)
            rec.drive(opt, sched, steps)

        _record_warnings(rec, body)
        return rec.result()

    return run


def error_on_build(cls_name: str, *args, kind="sgd", lrs=(0.1,), **kwargs):
    """Only the exception (type and text) the constructor raises."""

    def run(B):
        rec = Recorder()

        def body():
            opt = B.optimizer(kind, lrs)
            getattr(B.L, cls_name)(opt, *args, **kwargs)

        _record_warnings(rec, body)
        assert rec.error is not None, f"{cls_name}{args}{kwargs} did not raise"
        return rec.result()

    return run


def one(cls_name: str, **kwargs) -> Make:
    return lambda B, opt: getattr(B.L, cls_name)(opt, **kwargs)


# -- the scenarios ---------------------------------------------------------------------------


SINGLE: dict[str, Setup] = {
    # LambdaLR
    "LambdaLR-exp": Setup(one("LambdaLR", lr_lambda=decay_095)),
    "LambdaLR-two-groups": Setup(
        lambda B, opt: B.L.LambdaLR(opt, [decay_095, every_third_halves]), lrs=(0.1, 0.02)
    ),
    "LambdaLR-callable-object": Setup(lambda B, opt: B.L.LambdaLR(opt, Warmup(6))),
    # MultiplicativeLR
    "MultiplicativeLR-const": Setup(one("MultiplicativeLR", lr_lambda=shrink_097)),
    "MultiplicativeLR-by-epoch": Setup(
        lambda B, opt: B.L.MultiplicativeLR(opt, [shrink_097, shrink_by_epoch]), lrs=(0.1, 0.3)
    ),
    # StepLR
    "StepLR-3-half": Setup(one("StepLR", step_size=3, gamma=0.5)),
    "StepLR-1-09": Setup(one("StepLR", step_size=1, gamma=0.9), lrs=(0.1, 0.05)),
    "StepLR-default-gamma": Setup(one("StepLR", step_size=7)),
    # MultiStepLR
    "MultiStepLR-dup": Setup(one("MultiStepLR", milestones=[2, 5, 5, 9], gamma=0.5)),
    "MultiStepLR-unsorted": Setup(one("MultiStepLR", milestones=[30, 7, 3]), lrs=(0.1, 1.0)),
    # ConstantLR
    "ConstantLR-default": Setup(one("ConstantLR")),
    "ConstantLR-half-4": Setup(one("ConstantLR", factor=0.5, total_iters=4), lrs=(0.1, 0.7)),
    "ConstantLR-zero-iters": Setup(one("ConstantLR", factor=0.25, total_iters=0)),
    # LinearLR
    "LinearLR-default": Setup(one("LinearLR")),
    "LinearLR-decay": Setup(one("LinearLR", start_factor=1.0, end_factor=0.1, total_iters=7)),
    "LinearLR-warmup-1": Setup(one("LinearLR", start_factor=0.25, total_iters=1), lrs=(0.1, 0.3)),
    "LinearLR-long": Setup(one("LinearLR", start_factor=0.01, end_factor=0.9, total_iters=33)),
    # ExponentialLR
    "ExponentialLR-09": Setup(one("ExponentialLR", gamma=0.9)),
    "ExponentialLR-grow": Setup(one("ExponentialLR", gamma=1.05), lrs=(0.1, 0.01)),
    # PolynomialLR
    "PolynomialLR-default": Setup(one("PolynomialLR")),
    "PolynomialLR-sq": Setup(one("PolynomialLR", total_iters=8, power=2.0)),
    "PolynomialLR-sqrt": Setup(one("PolynomialLR", total_iters=30, power=0.5), lrs=(0.1, 0.2)),
    # CosineAnnealingLR
    "CosineAnnealingLR-10": Setup(one("CosineAnnealingLR", T_max=10)),
    "CosineAnnealingLR-7-min": Setup(one("CosineAnnealingLR", T_max=7, eta_min=0.01), lrs=(0.1, 0.5)),
    "CosineAnnealingLR-long": Setup(one("CosineAnnealingLR", T_max=40, eta_min=1e-4)),
    # CosineAnnealingWarmRestarts
    "CosineAnnealingWarmRestarts-5": Setup(one("CosineAnnealingWarmRestarts", T_0=5)),
    "CosineAnnealingWarmRestarts-mult2": Setup(
        one("CosineAnnealingWarmRestarts", T_0=3, T_mult=2, eta_min=0.001), lrs=(0.1, 0.05)
    ),
    "CosineAnnealingWarmRestarts-mult3": Setup(one("CosineAnnealingWarmRestarts", T_0=2, T_mult=3)),
    # CyclicLR
    "CyclicLR-triangular": Setup(
        one("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=4), momentum=True
    ),
    "CyclicLR-triangular2-down": Setup(
        one("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=3, step_size_down=5, mode="triangular2"),
        momentum=True,
    ),
    "CyclicLR-exp-range": Setup(
        one("CyclicLR", base_lr=0.001, max_lr=0.1, step_size_up=5, mode="exp_range", gamma=0.97),
        momentum=True,
    ),
    "CyclicLR-scale-cycle": Setup(
        one("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=3, scale_fn=halve_per_cycle),
        momentum=True,
    ),
    "CyclicLR-scale-iterations": Setup(
        one("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=4, scale_fn=slow_decay, scale_mode="iterations"),
        momentum=True,
    ),
    "CyclicLR-adam-betas": Setup(
        one("CyclicLR", base_lr=0.001, max_lr=0.01, step_size_up=6, base_momentum=0.85, max_momentum=0.95),
        kind="adam",
        momentum=True,
    ),
    "CyclicLR-no-momentum": Setup(
        one("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=4, cycle_momentum=False), kind="adagrad"
    ),
    "CyclicLR-groups": Setup(
        one(
            "CyclicLR",
            base_lr=[0.01, 0.02],
            max_lr=[0.1, 0.3],
            step_size_up=5,
            step_size_down=2,
            base_momentum=[0.8, 0.7],
            max_momentum=[0.9, 0.95],
        ),
        lrs=(0.5, 0.5),
        momentum=True,
    ),
    # OneCycleLR
    "OneCycleLR-cos": Setup(one("OneCycleLR", max_lr=0.1, total_steps=STEPS), momentum=True),
    "OneCycleLR-linear": Setup(
        one("OneCycleLR", max_lr=0.1, total_steps=STEPS + 5, anneal_strategy="linear", pct_start=0.25),
        momentum=True,
    ),
    "OneCycleLR-three-phase": Setup(
        one("OneCycleLR", max_lr=0.1, total_steps=STEPS, three_phase=True, div_factor=10.0, final_div_factor=100.0),
        momentum=True,
    ),
    "OneCycleLR-epochs-adam": Setup(
        one("OneCycleLR", max_lr=[0.01, 0.02], epochs=8, steps_per_epoch=5, base_momentum=0.8, max_momentum=0.9),
        kind="adam",
        lrs=(0.1, 0.1),
        momentum=True,
    ),
    "OneCycleLR-no-momentum": Setup(
        one("OneCycleLR", max_lr=0.1, total_steps=STEPS, cycle_momentum=False), kind="adagrad"
    ),
    "OneCycleLR-past-end": Setup(one("OneCycleLR", max_lr=0.1, total_steps=STEPS - 3), momentum=True),
    # ReduceLROnPlateau
    "ReduceLROnPlateau-default": Setup(
        one("ReduceLROnPlateau"), metrics=tuple([1.0] * 5 + [0.5] + [0.6] * 34)
    ),
    "ReduceLROnPlateau-min-rel": Setup(
        one("ReduceLROnPlateau", factor=0.5, patience=2, cooldown=1),
        metrics=tuple(1.0 / (1 + k // 5) + 0.001 * (k % 3) for k in range(STEPS)),
    ),
    "ReduceLROnPlateau-max-abs": Setup(
        one("ReduceLROnPlateau", mode="max", factor=0.3, patience=1, threshold=0.05, threshold_mode="abs", min_lr=[0.001, 0.01]),
        metrics=tuple(math.sin(k / 3.0) for k in range(STEPS)),
        lrs=(0.1, 0.2),
    ),
    "ReduceLROnPlateau-eps": Setup(
        one("ReduceLROnPlateau", factor=0.5, patience=0, eps=0.01, min_lr=0.004),
        metrics=tuple([2.0] * STEPS),
    ),
    "ReduceLROnPlateau-min-abs-cooldown": Setup(
        one("ReduceLROnPlateau", factor=0.7, patience=3, threshold=0.1, threshold_mode="abs", cooldown=4),
        metrics=tuple(10.0 - 0.05 * k for k in range(STEPS)),
    ),
}


def _sequential(B, opt, members, milestones):
    return B.L.SequentialLR(opt, [m(B, opt) for m in members], milestones=milestones)


def _chained(B, opt, members, with_optimizer=False):
    schedulers = [m(B, opt) for m in members]
    return B.L.ChainedScheduler(schedulers, optimizer=opt) if with_optimizer else B.L.ChainedScheduler(schedulers)


class _Both:
    """Two schedulers stepping one optimizer, the way torch's docs chain them."""

    def __init__(self, schedulers):
        self.schedulers = schedulers
        self.optimizer = schedulers[0].optimizer

    def step(self):
        for s in self.schedulers:
            s.step()

    def get_last_lr(self):
        return self.schedulers[-1].get_last_lr()

    def state_dict(self):
        return [s.state_dict() for s in self.schedulers]

    def load_state_dict(self, states):
        for s, state in zip(self.schedulers, states):
            s.load_state_dict(state)


COMPOSED: dict[str, Setup] = {
    "Both-Exponential-MultiStep": Setup(
        lambda B, opt: _Both([B.L.ExponentialLR(opt, 0.9), B.L.MultiStepLR(opt, [4, 9], 0.1)])
    ),
    "Both-Cosine-Step": Setup(
        lambda B, opt: _Both([B.L.CosineAnnealingLR(opt, 12, 0.001), B.L.StepLR(opt, 5, 0.5)]), lrs=(0.1, 0.4)
    ),
    "Both-Linear-Polynomial": Setup(
        lambda B, opt: _Both([B.L.LinearLR(opt, 0.2, 1.0, 6), B.L.PolynomialLR(opt, 30, 1.5)])
    ),
    "Chained-Constant-Exponential": Setup(
        lambda B, opt: _chained(B, opt, [one("ConstantLR", factor=0.1, total_iters=3), one("ExponentialLR", gamma=0.95)])
    ),
    "Chained-three-with-optimizer": Setup(
        lambda B, opt: _chained(
            B,
            opt,
            [one("LinearLR", start_factor=0.5, total_iters=4), one("MultiStepLR", milestones=[10, 20]), one("CosineAnnealingLR", T_max=15)],
            with_optimizer=True,
        ),
        lrs=(0.1, 0.02),
    ),
    "Chained-Multiplicative-Step": Setup(
        lambda B, opt: _chained(B, opt, [one("MultiplicativeLR", lr_lambda=shrink_097), one("StepLR", step_size=4)])
    ),
    "Sequential-warmup-cosine": Setup(
        lambda B, opt: _sequential(
            B, opt, [one("LinearLR", start_factor=0.1, total_iters=5), one("CosineAnnealingLR", T_max=30)], [5]
        )
    ),
    "Sequential-three": Setup(
        lambda B, opt: _sequential(
            B,
            opt,
            [one("ConstantLR", factor=0.5, total_iters=10), one("ExponentialLR", gamma=0.9), one("StepLR", step_size=4, gamma=0.5)],
            [3, 15],
        ),
        lrs=(0.1, 0.03),
    ),
    "Sequential-lambda-multiplicative": Setup(
        lambda B, opt: _sequential(
            B, opt, [one("LambdaLR", lr_lambda=decay_095), one("MultiplicativeLR", lr_lambda=shrink_097), one("PolynomialLR", total_iters=10)], [6, 20]
        )
    ),
    "Sequential-restarts-cyclic": Setup(
        lambda B, opt: _sequential(
            B,
            opt,
            [one("CosineAnnealingWarmRestarts", T_0=4, T_mult=2), one("CyclicLR", base_lr=0.01, max_lr=0.1, step_size_up=3)],
            [12],
        ),
        momentum=True,
    ),
    "Sequential-onecycle-constant": Setup(
        lambda B, opt: _sequential(
            B, opt, [one("OneCycleLR", max_lr=0.2, total_steps=20), one("ConstantLR", factor=0.5, total_iters=5)], [19]
        ),
        momentum=True,
    ),
    "Sequential-nested-chained": Setup(
        lambda B, opt: _sequential(
            B,
            opt,
            [
                one("LinearLR", start_factor=0.2, total_iters=4),
                lambda B, opt: _chained(B, opt, [one("ExponentialLR", gamma=0.95), one("StepLR", step_size=6)]),
            ],
            [4],
        )
    ),
    "Sequential-same-milestone": Setup(
        lambda B, opt: _sequential(
            B, opt, [one("ExponentialLR", gamma=0.8), one("StepLR", step_size=2), one("LinearLR", start_factor=0.3)], [5, 5]
        )
    ),
}

_HAND_MODIFIED = [
    "LambdaLR-exp",
    "MultiplicativeLR-by-epoch",
    "StepLR-3-half",
    "MultiStepLR-dup",
    "ConstantLR-half-4",
    "LinearLR-long",
    "ExponentialLR-grow",
    "PolynomialLR-sqrt",
    "CosineAnnealingLR-7-min",
    "CosineAnnealingLR-long",
    "CosineAnnealingWarmRestarts-mult2",
    "CyclicLR-groups",
    "OneCycleLR-epochs-adam",
    "ReduceLROnPlateau-max-abs",
    "Both-Cosine-Step",
    "Chained-three-with-optimizer",
    "Sequential-three",
]

_RESUMED = [
    "LambdaLR-callable-object",
    "MultiplicativeLR-const",
    "StepLR-1-09",
    "MultiStepLR-unsorted",
    "ConstantLR-default",
    "LinearLR-decay",
    "ExponentialLR-09",
    "PolynomialLR-sq",
    "CosineAnnealingLR-10",
    "CosineAnnealingWarmRestarts-mult3",
    "CyclicLR-exp-range",
    "CyclicLR-adam-betas",
    "OneCycleLR-three-phase",
    "ReduceLROnPlateau-min-rel",
    "Both-Exponential-MultiStep",
    "Chained-Constant-Exponential",
    "Sequential-warmup-cosine",
    "Sequential-restarts-cyclic",
]

_EPOCHS = [0, 1, 2, 3, 7, 4, 4, 12, 20, 19, 33, 1]

_WITH_EPOCHS = {
    "StepLR-3-half": _EPOCHS,
    "MultiStepLR-dup": _EPOCHS,
    "ConstantLR-half-4": _EPOCHS,
    "LinearLR-decay": _EPOCHS,
    "ExponentialLR-09": _EPOCHS,
    "PolynomialLR-sq": _EPOCHS,
    "CosineAnnealingLR-7-min": _EPOCHS,
    "LambdaLR-exp": _EPOCHS,
    "MultiplicativeLR-const": _EPOCHS,
    "CyclicLR-triangular": _EPOCHS,
    "CosineAnnealingWarmRestarts-5": [0.0, 0.5, 1.25, 4.9, 5.0, 12.5, 3.0],
    "CosineAnnealingWarmRestarts-mult2": [0.0, 0.5, 2.75, 3.0, 8.5, 9.0, 20.0, 21.5, 44.0, 1.0],
    "ReduceLROnPlateau-min-rel": [3, 4, 10, 11, 12, 13, 20, 21],
}

_FROM_LAST_EPOCH = {
    "StepLR": {"step_size": 3, "gamma": 0.5},
    "MultiStepLR": {"milestones": [6, 9], "gamma": 0.5},
    "ConstantLR": {"factor": 0.5, "total_iters": 6},
    "LinearLR": {"start_factor": 0.5, "total_iters": 8},
    "ExponentialLR": {"gamma": 0.9},
    "PolynomialLR": {"total_iters": 12, "power": 2.0},
    "CosineAnnealingLR": {"T_max": 9},
    "CosineAnnealingWarmRestarts": {"T_0": 4, "T_mult": 2},
    "LambdaLR": {"lr_lambda": decay_095},
    "MultiplicativeLR": {"lr_lambda": shrink_097},
    "CyclicLR": {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 4},
    "OneCycleLR": {"max_lr": 0.1, "total_steps": 30},
}

_ERRORS = {
    "ConstantLR-factor": error_on_build("ConstantLR", factor=1.5),
    "LinearLR-start": error_on_build("LinearLR", start_factor=0.0),
    "LinearLR-end": error_on_build("LinearLR", end_factor=-0.1),
    "LambdaLR-count": error_on_build("LambdaLR", [decay_095, decay_095]),
    "MultiplicativeLR-not-callable": error_on_build("MultiplicativeLR", 0.9),
    "ReduceLROnPlateau-factor": error_on_build("ReduceLROnPlateau", factor=1.0),
    "ReduceLROnPlateau-mode": error_on_build("ReduceLROnPlateau", mode="up"),
    "ReduceLROnPlateau-threshold-mode": error_on_build("ReduceLROnPlateau", threshold_mode="ratio"),
    "ReduceLROnPlateau-min-lrs": error_on_build("ReduceLROnPlateau", min_lr=[0.1, 0.2]),
    "CyclicLR-mode": error_on_build("CyclicLR", 0.01, 0.1, mode="sawtooth"),
    "CyclicLR-no-momentum": error_on_build("CyclicLR", 0.01, 0.1, kind="adagrad"),
    "CyclicLR-base-lr-count": error_on_build("CyclicLR", [0.01, 0.02], 0.1),
    "CyclicLR-momentum-count": error_on_build("CyclicLR", 0.01, 0.1, base_momentum=[0.8, 0.8]),
    "CosineAnnealingWarmRestarts-T0": error_on_build("CosineAnnealingWarmRestarts", 0),
    "CosineAnnealingWarmRestarts-T0-float": error_on_build("CosineAnnealingWarmRestarts", 2.0),
    "CosineAnnealingWarmRestarts-Tmult": error_on_build("CosineAnnealingWarmRestarts", 3, T_mult=0),
    "CosineAnnealingWarmRestarts-eta": error_on_build("CosineAnnealingWarmRestarts", 3, eta_min="0"),
    "OneCycleLR-steps": error_on_build("OneCycleLR", 0.1),
    "OneCycleLR-total": error_on_build("OneCycleLR", 0.1, total_steps=0),
    "OneCycleLR-epochs": error_on_build("OneCycleLR", 0.1, epochs=0, steps_per_epoch=3),
    "OneCycleLR-steps-per-epoch": error_on_build("OneCycleLR", 0.1, epochs=3, steps_per_epoch=1.5),
    "OneCycleLR-pct": error_on_build("OneCycleLR", 0.1, total_steps=10, pct_start=1),
    "OneCycleLR-anneal": error_on_build("OneCycleLR", 0.1, total_steps=10, anneal_strategy="cubic"),
    "OneCycleLR-no-momentum": error_on_build("OneCycleLR", 0.1, total_steps=10, kind="adagrad"),
    "OneCycleLR-max-lr-count": error_on_build("OneCycleLR", [0.1, 0.2, 0.3], total_steps=10, lrs=(0.1, 0.1)),
    "StepLR-resume-without-initial-lr": error_on_build("StepLR", 3, last_epoch=4, lrs=(0.1, 0.2)),
}


def _composite_errors():
    def sequential_counts(B):
        rec = Recorder()

        def body():
            opt = B.optimizer()
            B.L.SequentialLR(opt, [B.L.StepLR(opt, 2), B.L.ExponentialLR(opt, 0.9)], milestones=[2, 4])

        _record_warnings(rec, body)
        return rec.result()

    def sequential_plateau(B):
        rec = Recorder()

        def body():
            opt = B.optimizer()
            B.L.SequentialLR(opt, [B.L.StepLR(opt, 2), B.L.ReduceLROnPlateau(opt)], milestones=[2])

        _record_warnings(rec, body)
        return rec.result()

    def sequential_empty(B):
        rec = Recorder()
        _record_warnings(rec, lambda: B.L.SequentialLR(B.optimizer(), [], milestones=[]))
        return rec.result()

    def chained_empty(B):
        rec = Recorder()
        _record_warnings(rec, lambda: B.L.ChainedScheduler([]))
        return rec.result()

    def chained_not_scheduler(B):
        rec = Recorder()
        _record_warnings(rec, lambda: B.L.ChainedScheduler([B.L.StepLR(B.optimizer(), 2), object()]))
        return rec.result()

    def not_an_optimizer(B):
        rec = Recorder()
        _record_warnings(rec, lambda: B.L.StepLR(object(), 2))
        return rec.result()

    def restarts_negative_epoch(B):
        rec = Recorder()

        def body():
            sched = B.L.CosineAnnealingWarmRestarts(B.optimizer(), 3)
            sched.step(-1)

        _record_warnings(rec, body)
        return rec.result()

    return {
        "SequentialLR-milestone-count": sequential_counts,
        "SequentialLR-plateau": sequential_plateau,
        "SequentialLR-empty": sequential_empty,
        "ChainedScheduler-empty": chained_empty,
        "ChainedScheduler-not-scheduler": chained_not_scheduler,
        "StepLR-not-an-optimizer": not_an_optimizer,
        "CosineAnnealingWarmRestarts-negative-epoch": restarts_negative_epoch,
    }


def _warning_scenarios():
    def scheduler_before_optimizer(B):
        rec = Recorder()

        def body():
            opt = B.optimizer()
            sched = B.L.ExponentialLR(opt, 0.9)
            for _ in range(3):
                rec.before_step(opt)
                sched.step()  # wrong order: warned on the first call only
                opt.step()
                rec.after_step(sched)

        _record_warnings(rec, body)
        return rec.result()

    def step_replaced(B):
        rec = Recorder()

        def body():
            opt = B.optimizer()
            sched = B.L.StepLR(opt, 2)
            opt.step = lambda closure=None: None  # replaced after the scheduler was built
            rec.drive(opt, sched, 3)

        _record_warnings(rec, body)
        return rec.result()

    def get_lr_outside_step(B):
        rec = Recorder()

        def body():
            opt = B.optimizer()
            sched = B.L.StepLR(opt, 2)
            opt.step()
            sched.step()
            rec.rows["last_lr"].append(_floats(sched.get_lr()))

        _record_warnings(rec, body)
        return rec.result()

    def two_schedulers_one_step_wrapper(B):
        rec = Recorder()

        def body():
            opt = B.optimizer()
            first = B.L.StepLR(opt, 2)
            second = B.L.ExponentialLR(opt, 0.9)
            rec.drive(opt, _Both([first, second]), 4)
            rec.rows["last_epoch"].append(int(hasattr(opt.step, "_wrapped_by_lr_sched")))

        _record_warnings(rec, body)
        return rec.result()

    def restarts_fractional_no_warning(B):
        rec = Recorder()

        def body():
            opt = B.optimizer()
            sched = B.L.CosineAnnealingWarmRestarts(opt, 4)
            for k in range(12):
                rec.before_step(opt)
                sched.step(k / 3)  # no optimizer.step() and no epoch warning here
                rec.after_step(sched)

        _record_warnings(rec, body)
        return rec.result()

    def onecycle_past_end(B):
        rec = Recorder(momentum=True)

        def body():
            opt = B.optimizer()
            sched = B.L.OneCycleLR(opt, 0.1, total_steps=6)
            rec.drive(opt, sched, 8)

        _record_warnings(rec, body)
        return rec.result()

    return {
        "warn-scheduler-before-optimizer": scheduler_before_optimizer,
        "warn-step-replaced": step_replaced,
        "warn-get-lr-outside-step": get_lr_outside_step,
        "warn-two-schedulers": two_schedulers_one_step_wrapper,
        "warn-restarts-fractional": restarts_fractional_no_warning,
        "error-onecycle-past-end": onecycle_past_end,
    }


def scenarios() -> dict[str, Callable[[Backend], dict[str, np.ndarray]]]:
    """Every scenario, by name."""
    out: dict[str, Callable] = {}
    for name, setup in {**SINGLE, **COMPOSED}.items():
        out[name] = plain(setup)
    for name in _HAND_MODIFIED:
        out[f"{name}/by-hand"] = by_hand({**SINGLE, **COMPOSED}[name])
    for name in _RESUMED:
        out[f"{name}/resumed"] = resumed({**SINGLE, **COMPOSED}[name])
    for name, epochs in _WITH_EPOCHS.items():
        out[f"{name}/epochs"] = with_epochs(SINGLE[name], epochs)
    for cls_name, kwargs in _FROM_LAST_EPOCH.items():
        for last_epoch in (0, 5, 8):
            out[f"{cls_name}/last-epoch-{last_epoch}"] = from_last_epoch(cls_name, kwargs, last_epoch)
    for name, run in _ERRORS.items():
        out[f"error/{name}"] = run
    for name, run in _composite_errors().items():
        out[f"error/{name}"] = run
    out.update(_warning_scenarios())
    return out


SCHEDULER_CLASSES = (
    "LambdaLR",
    "MultiplicativeLR",
    "StepLR",
    "MultiStepLR",
    "ConstantLR",
    "LinearLR",
    "ExponentialLR",
    "SequentialLR",
    "CosineAnnealingLR",
    "ChainedScheduler",
    "ReduceLROnPlateau",
    "CyclicLR",
    "CosineAnnealingWarmRestarts",
    "OneCycleLR",
    "PolynomialLR",
)


def compare(name: str, ours: dict[str, np.ndarray], reference: dict[str, np.ndarray], rtol: float = 1e-12) -> None:
    """Asserts that a torch_compat run equals torch's: same keys, values to ``rtol``."""
    assert sorted(ours) == sorted(reference), f"{name}: recorded {sorted(ours)}, torch {sorted(reference)}"
    for key, expected in reference.items():
        got = ours[key]
        if expected.dtype.kind in "USO" or key in ("last_epoch", "error"):
            assert got.tolist() == expected.tolist(), f"{name} [{key}]:\n ours  {got.tolist()}\n torch {expected.tolist()}"
        else:
            assert got.shape == expected.shape, f"{name} [{key}]: shape {got.shape} vs torch {expected.shape}"
            np.testing.assert_allclose(got, expected, rtol=rtol, atol=0, err_msg=f"{name} [{key}]")


# -- functional schedules and their torch_compat twins ---------------------------------------------


@dataclass
class Twin:
    """A :mod:`gradxform.schedules` schedule and the torch_compat scheduler it mirrors."""

    functional: Callable[[Any], Callable]  # schedules module -> schedule
    scheduler: Callable[[Any, Any], Any]  # (lr_scheduler module, optimizer) -> scheduler
    lr: float = 0.1
    steps: int = 60
    key: str = "lr"  # "lr" or "momentum"
    kind: str = "sgd"


TWINS: dict[str, Twin] = {
    "constant": Twin(lambda S: S.constant(0.1, factor=0.5, total_iters=4), lambda L, o: L.ConstantLR(o, 0.5, 4)),
    "constant-default-torch": Twin(lambda S: S.constant(0.1, 1 / 3, 5), lambda L, o: L.ConstantLR(o)),
    "linear": Twin(lambda S: S.linear(0.1), lambda L, o: L.LinearLR(o)),
    "linear-decay": Twin(lambda S: S.linear(0.1, 1.0, 0.05, 37), lambda L, o: L.LinearLR(o, 1.0, 0.05, 37)),
    "polynomial": Twin(lambda S: S.polynomial(0.1, 20, 2.0), lambda L, o: L.PolynomialLR(o, 20, 2.0)),
    "polynomial-sqrt": Twin(lambda S: S.polynomial(0.1, 9, 0.5), lambda L, o: L.PolynomialLR(o, 9, 0.5)),
    "step": Twin(lambda S: S.step(0.1, 7, 0.5), lambda L, o: L.StepLR(o, 7, 0.5)),
    "multistep": Twin(lambda S: S.multistep(0.1, [30, 5, 12, 12]), lambda L, o: L.MultiStepLR(o, [30, 5, 12, 12])),
    "exponential": Twin(lambda S: S.exponential(0.1, 0.93), lambda L, o: L.ExponentialLR(o, 0.93)),
    "cosine": Twin(lambda S: S.cosine_annealing(0.1, 17, 0.001), lambda L, o: L.CosineAnnealingLR(o, 17, 0.001)),
    "cosine-to-zero": Twin(lambda S: S.cosine_annealing(0.1, 25), lambda L, o: L.CosineAnnealingLR(o, 25), steps=25),
    "warm-restarts": Twin(
        lambda S: S.cosine_annealing_warm_restarts(0.1, 6, 1, 0.002),
        lambda L, o: L.CosineAnnealingWarmRestarts(o, 6, 1, 0.002),
    ),
    "warm-restarts-mult2": Twin(
        lambda S: S.cosine_annealing_warm_restarts(0.1, 3, 2), lambda L, o: L.CosineAnnealingWarmRestarts(o, 3, 2)
    ),
    "warm-restarts-mult3": Twin(
        lambda S: S.cosine_annealing_warm_restarts(0.1, 1, 3, 0.01),
        lambda L, o: L.CosineAnnealingWarmRestarts(o, 1, 3, 0.01),
        steps=130,
    ),
    "cyclic-triangular": Twin(lambda S: S.cyclic(0.01, 0.1, 5), lambda L, o: L.CyclicLR(o, 0.01, 0.1, 5)),
    "cyclic-triangular2": Twin(
        lambda S: S.cyclic(0.01, 0.1, 4, 7, "triangular2"), lambda L, o: L.CyclicLR(o, 0.01, 0.1, 4, 7, "triangular2")
    ),
    "cyclic-exp-range": Twin(
        lambda S: S.cyclic(0.001, 0.1, 6, mode="exp_range", gamma=0.98),
        lambda L, o: L.CyclicLR(o, 0.001, 0.1, 6, mode="exp_range", gamma=0.98),
    ),
    "cyclic-custom-cycle": Twin(
        lambda S: S.cyclic(0.01, 0.1, 3, 5, scale_fn=lambda x: 0.5**x),
        lambda L, o: L.CyclicLR(o, 0.01, 0.1, 3, 5, scale_fn=lambda x: 0.5**x),
    ),
    "cyclic-custom-iterations": Twin(
        lambda S: S.cyclic(0.01, 0.1, 4, scale_fn=lambda x: 1 / (1 + 0.05 * x), scale_mode="iterations"),
        lambda L, o: L.CyclicLR(o, 0.01, 0.1, 4, scale_fn=lambda x: 1 / (1 + 0.05 * x), scale_mode="iterations"),
    ),
    "cyclic-momentum": Twin(
        lambda S: S.cyclic(0.95, 0.85, 4, 6, "triangular2"),
        lambda L, o: L.CyclicLR(o, 0.01, 0.1, 4, 6, "triangular2", base_momentum=0.85, max_momentum=0.95),
        key="momentum",
    ),
    "one-cycle": Twin(lambda S: S.one_cycle(0.1, 60), lambda L, o: L.OneCycleLR(o, 0.1, 60)),
    "one-cycle-linear": Twin(
        lambda S: S.one_cycle(0.3, 61, 0.25, "linear", 10.0, 100.0),
        lambda L, o: L.OneCycleLR(o, 0.3, 61, pct_start=0.25, anneal_strategy="linear", div_factor=10.0, final_div_factor=100.0),
    ),
    "one-cycle-three-phase": Twin(
        lambda S: S.one_cycle(0.1, 60, 0.35, three_phase=True),
        lambda L, o: L.OneCycleLR(o, 0.1, 60, pct_start=0.35, three_phase=True),
    ),
    "one-cycle-momentum": Twin(
        lambda S: S.one_cycle_momentum(60, 0.3, "cos", 0.8, 0.9),
        lambda L, o: L.OneCycleLR(o, 0.1, 60, base_momentum=0.8, max_momentum=0.9),
        key="momentum",
    ),
    "one-cycle-momentum-three-phase": Twin(
        lambda S: S.one_cycle_momentum(60, 0.2, "linear", three_phase=True),
        lambda L, o: L.OneCycleLR(o, 0.1, 60, pct_start=0.2, anneal_strategy="linear", three_phase=True),
        key="momentum",
    ),
    "join-warmup-cosine": Twin(
        lambda S: S.join([S.linear(0.1, 0.1, 1.0, 5), S.cosine_annealing(0.1, 40)], [5]),
        lambda L, o: L.SequentialLR(o, [L.LinearLR(o, 0.1, 1.0, 5), L.CosineAnnealingLR(o, 40)], [5]),
    ),
    "join-three": Twin(
        lambda S: S.join([S.constant(0.1, 0.5, 10), S.exponential(0.1, 0.9), S.step(0.1, 4, 0.5)], [3, 15]),
        lambda L, o: L.SequentialLR(
            o, [L.ConstantLR(o, 0.5, 10), L.ExponentialLR(o, 0.9), L.StepLR(o, 4, 0.5)], [3, 15]
        ),
    ),
    "join-same-boundary": Twin(
        lambda S: S.join([S.exponential(0.1, 0.8), S.step(0.1, 2), S.linear(0.1, 0.3)], [5, 5]),
        lambda L, o: L.SequentialLR(o, [L.ExponentialLR(o, 0.8), L.StepLR(o, 2), L.LinearLR(o, 0.3)], [5, 5]),
    ),
}

"""The schedules' arithmetic is written once, in ``gradxform._schedule_math``, for both faces.

Each test replaces one shared formula with a stub and checks that the functional schedule
(:mod:`gradxform.schedules`, :func:`gradxform.reduce_on_plateau`) and its torch_compat
scheduler both give what the stub gives: a formula that one face wrote again on its own
would go on giving the real number, and a fix to a formula reaches both faces.
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import pytest

import gradxform
from gradxform import _schedule_math, schedules
from torch_compat import Parameter
from torch_compat.optim import SGD, lr_scheduler as L

MARK = 0.125
"""What a stubbed formula returns; no schedule below reaches it otherwise."""

# formula, torch_compat scheduler, whether it is stepped with an epoch (the closed form
# of a chainable scheduler), functional twin
CASES = {
    "StepLR": ("decay", lambda o: L.StepLR(o, 2), True, lambda: schedules.step(0.1, 2)),
    "MultiStepLR": ("decay", lambda o: L.MultiStepLR(o, [1, 2]), True, lambda: schedules.multistep(0.1, [1, 2])),
    "ExponentialLR": ("decay", lambda o: L.ExponentialLR(o, 0.9), True, lambda: schedules.exponential(0.1, 0.9)),
    "ConstantLR": ("constant", lambda o: L.ConstantLR(o), True, lambda: schedules.constant(0.1, 1 / 3, 5)),
    "LinearLR": ("linear", lambda o: L.LinearLR(o), True, lambda: schedules.linear(0.1)),
    "PolynomialLR": ("polynomial", lambda o: L.PolynomialLR(o), True, lambda: schedules.polynomial(0.1)),
    "CosineAnnealingLR": (
        "cosine",
        lambda o: L.CosineAnnealingLR(o, 10),
        True,
        lambda: schedules.cosine_annealing(0.1, 10),
    ),
    "CosineAnnealingWarmRestarts": (
        "cosine",
        lambda o: L.CosineAnnealingWarmRestarts(o, 2, 2),
        False,
        lambda: schedules.cosine_annealing_warm_restarts(0.1, 2, 2),
    ),
    "CyclicLR": ("cyclic", lambda o: L.CyclicLR(o, 0.01, 0.1, 4), False, lambda: schedules.cyclic(0.01, 0.1, 4)),
    "OneCycleLR-cos": ("anneal_cos", lambda o: L.OneCycleLR(o, 0.1, 10), False, lambda: schedules.one_cycle(0.1, 10)),
    "OneCycleLR-linear": (
        "anneal_linear",
        lambda o: L.OneCycleLR(o, 0.1, 10, anneal_strategy="linear"),
        False,
        lambda: schedules.one_cycle(0.1, 10, anneal_strategy="linear"),
    ),
}
STEP = 3


def _compat_lr(make, with_epoch: bool) -> float:
    """The ``lr`` a torch_compat scheduler writes for step ``STEP``."""
    opt = SGD([Parameter(jnp.zeros(1))], lr=0.1, momentum=0.9)
    scheduler = make(opt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # step(epoch)'s deprecation
        if with_epoch:
            opt.step()
            scheduler.step(STEP)
        else:
            for _ in range(STEP):
                opt.step()
                scheduler.step()
    return opt.param_groups[0]["lr"]


def _functional_lr(make) -> float:
    return float(make()(jnp.asarray(STEP, jnp.int32)))


@pytest.mark.parametrize("name", list(CASES))
def test_both_faces_take_the_closed_form_from_the_shared_formula(name, monkeypatch):
    formula, compat, with_epoch, functional = CASES[name]
    assert MARK not in (_compat_lr(compat, with_epoch), _functional_lr(functional))
    monkeypatch.setattr(_schedule_math, formula, lambda *args: MARK)
    assert _compat_lr(compat, with_epoch) == MARK
    assert _functional_lr(functional) == MARK


def _first_reduction(stubs: dict, monkeypatch) -> tuple[float, float]:
    """The torch_compat ``lr`` (from 0.1) and the functional scale after one metric, with
    ``patience=0`` and ``factor=0.5``; one metric alone is an improvement, so nothing
    is reduced unless a stub says otherwise."""
    for formula, stub in stubs.items():
        monkeypatch.setattr(_schedule_math, formula, stub)
    opt = SGD([Parameter(jnp.zeros(1))], lr=0.1)
    scheduler = L.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    opt.step()
    scheduler.step(1.0)
    tx = gradxform.reduce_on_plateau(factor=0.5, patience=0)
    _, state = tx.update(jnp.ones(1), tx.init(jnp.zeros(1)), value=1.0)
    return opt.param_groups[0]["lr"], float(state.scale)


PLATEAU_STUBS = {
    "improves": ({"improves": lambda *args: False}, (0.05, 0.5)),
    "count_bad_epochs": (
        {"count_bad_epochs": lambda xp, better, metric, best, bad, cooldown: (best, bad + 1, cooldown)},
        (0.05, 0.5),
    ),
    "reduced": (
        {
            "improves": lambda *args: False,
            "reduced": lambda xp, value, factor, minimum, eps: (value * 0 + MARK, True),
        },
        (MARK, MARK),
    ),
}


@pytest.mark.parametrize("name", list(PLATEAU_STUBS))
def test_both_faces_take_the_plateau_rules_from_the_shared_formulas(name, monkeypatch):
    assert _first_reduction({}, monkeypatch) == (0.1, 1.0)
    stubs, expected = PLATEAU_STUBS[name]
    assert _first_reduction(stubs, monkeypatch) == expected

"""Learning-rate schedules against torch 2.13.0, without torch.

* Every scenario of :mod:`schedule_cases` (every scheduler class, several
  parameterisations, alone, chained, in ChainedScheduler and SequentialLR, with the
  ``lr`` changed by hand, resumed from a state dict, built with ``last_epoch``, stepped
  with the deprecated ``step(epoch)``, and torch's warnings and errors) replayed with
  torch_compat's schedulers against ``tests/golden/schedules.npz``: learning rates,
  momenta, ``get_last_lr()`` and ``last_epoch`` every epoch (relative 1e-12), warning
  and error texts exactly.
* Every functional schedule of :mod:`gradxform.schedules` against its torch_compat twin
  (relative 1e-12), and :func:`gradxform.reduce_on_plateau` against
  ``ReduceLROnPlateau``.
* Functional schedules driving optimizers inside ``jax.jit``: compiled once, the
  schedule's value used at every step.
"""

from __future__ import annotations

import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform
import make_golden_schedules as mg
import schedule_cases as sc
from gradxform import schedules
from torch_compat import optim
from torch_compat.optim import lr_scheduler

RTOL = 1e-12


@functools.lru_cache(maxsize=None)
def _golden():
    return mg.read()


@functools.lru_cache(maxsize=None)
def _compat():
    return sc.CompatBackend()


SCENARIOS = sc.scenarios()


def test_golden_file_covers_every_scenario_and_class():
    meta, runs = _golden()
    assert meta["torch_version"].startswith(sc.TORCH_VERSION_PREFIX)
    assert sorted(runs) == sorted(SCENARIOS), "regenerate: python tests/make_golden_schedules.py"
    names = " ".join(SCENARIOS)
    for cls in sc.SCHEDULER_CLASSES:
        assert cls in names or cls.replace("LR", "") in names, cls
    # Enough epochs to see the schedules move, and the lrs do move.
    lr = runs["OneCycleLR-cos"]["lr"][:, 0]
    assert lr.shape == (sc.STEPS,) and len(np.unique(lr)) > sc.STEPS // 2


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scheduler_matches_torch_golden(name):
    _, runs = _golden()
    sc.compare(name, SCENARIOS[name](_compat()), runs[name], rtol=RTOL)


# -- functional schedules against their torch_compat twins -------------------------------------


@pytest.mark.parametrize("name", list(sc.TWINS))
def test_functional_schedule_matches_torch_compat_twin(name):
    twin = sc.TWINS[name]
    functional = schedules.sample(twin.functional(schedules), twin.steps)
    compat = lr_scheduler.sample_lrs(lambda opt: twin.scheduler(lr_scheduler, opt), twin.steps, lr=twin.lr, key=twin.key)
    assert functional.dtype == np.float64
    assert compat.shape == (twin.steps, 1)
    np.testing.assert_allclose(functional, compat[:, 0], rtol=RTOL, atol=0)


def _plateau_setups():
    return [name for name, setup in sc.SINGLE.items() if setup.metrics is not None]


@pytest.mark.parametrize("name", _plateau_setups())
def test_reduce_on_plateau_matches_torch_compat(name):
    """Update ``j`` gets the metric of epoch ``j - 1``; its scale times the group's lr is
    the lr torch_compat's (so torch's) ReduceLROnPlateau gives epoch ``j``."""
    setup = sc.SINGLE[name]
    backend = _compat()
    opt = backend.optimizer(setup.kind, setup.lrs)
    scheduler = setup.make(backend, opt)
    expected = lr_scheduler.sample_lrs(lambda o: setup.make(backend, o), setup.steps,
                                       optimizer=backend.optimizer(setup.kind, setup.lrs),
                                       metrics=setup.metrics)
    kwargs = {k: getattr(scheduler, k) for k in ("factor", "patience", "threshold", "threshold_mode", "cooldown", "mode")}
    for group_index, lr in enumerate(setup.lrs):
        tx = gradxform.reduce_on_plateau(
            **kwargs, min_scale=scheduler.min_lrs[group_index] / lr, eps=scheduler.eps / lr
        )
        update = jax.jit(tx.update)
        state = tx.init(jnp.zeros(1))
        got = [lr * float(state.scale)]
        for metric in setup.metrics[: setup.steps - 1]:
            _, state = update(jnp.ones(1), state, value=jnp.asarray(metric))
            got.append(lr * float(state.scale))
        np.testing.assert_allclose(got, expected[:, group_index], rtol=RTOL, atol=0, err_msg=name)
        assert int(state.count) == setup.steps - 1


def test_reduce_on_plateau_scales_updates_and_skips_without_value():
    tx = gradxform.chain(gradxform.sgd(1.0), gradxform.reduce_on_plateau(factor=0.5, patience=0))
    params = {"w": jnp.zeros(2), "b": jnp.zeros((), jnp.float32)}
    grads = {"w": jnp.ones(2), "b": jnp.ones((), jnp.float32)}
    state = tx.init(params)
    update = jax.jit(tx.update)
    u, state = update(grads, state, params, value=1.0)  # baseline
    u, state = update(grads, state, params, value=2.0)  # worse: halved
    assert u["w"].tolist() == [-0.5, -0.5] and u["b"].dtype == jnp.float32
    u, state = tx.update(grads, state, params)  # no metric: state kept
    assert u["w"].tolist() == [-0.5, -0.5] and int(state[1].count) == 2
    with pytest.raises(ValueError, match="Factor should be < 1.0."):
        gradxform.reduce_on_plateau(factor=1.0)
    with pytest.raises(ValueError, match="mode up is unknown!"):
        gradxform.reduce_on_plateau(mode="up")


# -- jit: compiled once, driven by the schedule --------------------------------------------------

_ONE_PER_FUNCTION = [
    "constant",
    "linear",
    "polynomial",
    "step",
    "multistep",
    "exponential",
    "cosine",
    "warm-restarts-mult2",
    "cyclic-exp-range",
    "cyclic-custom-cycle",
    "one-cycle-three-phase",
    "join-three",
]


def _run_jitted(txs, steps, params):
    """Runs ``steps`` jitted steps of every transformation in ``txs`` (one compiled step
    for all, to keep the test fast); returns the number of compilations and, per step,
    each transformation's ``(updates, hyperparams)``."""
    traces = []

    @jax.jit
    def train_step(all_params, states):
        traces.append(1)  # runs once per compilation
        out = []
        for tx, params, state in zip(txs, all_params, states):
            grads = jax.tree.map(jnp.ones_like, params)
            updates, state = tx.update(grads, state, params)
            out.append((gradxform.apply_updates(params, updates), updates, state))
        return tuple(o[0] for o in out), tuple(o[1] for o in out), tuple(o[2] for o in out)

    all_params = tuple(params for _ in txs)
    states = tuple(tx.init(params) for tx in txs)
    history = []
    for _ in range(steps):
        all_params, updates, states = train_step(all_params, states)
        history.append([(u, gradxform.get_hyperparams(s)) for u, s in zip(updates, states)])
    return len(traces), history


def test_every_schedule_drives_sgd_inside_jit_without_recompiling():
    steps = 25
    chosen = [sc.TWINS[name].functional(schedules) for name in _ONE_PER_FUNCTION]
    traces, history = _run_jitted([gradxform.sgd(s) for s in chosen], steps, jnp.zeros(3))
    assert traces == 1
    for index, (name, schedule) in enumerate(zip(_ONE_PER_FUNCTION, chosen)):
        lrs = np.asarray([float(step[index][1]["learning_rate"]) for step in history])
        # The same function compiled in another context (scalar, not vmapped): XLA may
        # round differently, hence a tolerance.
        np.testing.assert_allclose(lrs, schedules.sample(schedule, steps), rtol=RTOL, atol=0, err_msg=name)
        for step, lr in zip(history, lrs):
            np.testing.assert_array_equal(np.asarray(step[index][0]), -lr)  # SGD: -lr * grad


_OPTIMIZERS = {
    "adam": lambda s: gradxform.adam(s),
    "adamw": lambda s: gradxform.adamw(s, weight_decay=0.1),
    "rmsprop": lambda s: gradxform.rmsprop(s, momentum=0.5),
    "radam": lambda s: gradxform.radam(s),
    "adagrad": lambda s: gradxform.adagrad(s),
    "sgd-nesterov": lambda s: gradxform.sgd(s, momentum=0.9, nesterov=True),
}


def test_a_schedule_drives_every_kind_of_optimizer_inside_jit():
    schedule = schedules.one_cycle(0.1, total_steps=12)
    txs = [make(schedule) for make in _OPTIMIZERS.values()]
    traces, history = _run_jitted(txs, 12, {"w": jnp.ones(3), "b": jnp.ones(())})
    assert traces == 1
    expected = schedules.sample(schedule, 12)
    for index, name in enumerate(_OPTIMIZERS):
        got = [float(step[index][1]["learning_rate"]) for step in history]
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=0, err_msg=name)


def test_schedules_drive_momentum_and_betas():
    momentum = schedules.one_cycle_momentum(10)
    beta1 = schedules.cyclic(0.95, 0.85, step_size_up=3)
    txs = [gradxform.sgd(0.1, momentum=momentum), gradxform.adam(1e-3, betas=(beta1, 0.999))]
    traces, history = _run_jitted(txs, 10, jnp.zeros(2))
    assert traces == 1
    got = [float(step[0][1]["momentum"]) for step in history]
    np.testing.assert_allclose(got, schedules.sample(momentum, 10), rtol=RTOL, atol=0)
    got = [float(step[1][1]["betas"][0]) for step in history]
    np.testing.assert_allclose(got, schedules.sample(beta1, 10), rtol=RTOL, atol=0)
    assert {float(step[1][1]["betas"][1]) for step in history} == {0.999}


def test_schedules_compute_in_the_default_float_dtype():
    for name in _ONE_PER_FUNCTION:
        value = sc.TWINS[name].functional(schedules)(jnp.asarray(3, jnp.int32))
        assert value.dtype == jnp.float64 and value.shape == (), name  # x64 is on in the tests


# -- helpers and errors ---------------------------------------------------------------------------


def test_sample_helpers():
    s = schedules.step(1.0, step_size=2, gamma=0.5)
    assert schedules.sample(s, 4, start=2).tolist() == [0.5, 0.5, 0.25, 0.25]
    opt = sc.CompatBackend().optimizer("adam", (0.1, 0.2))
    betas = lr_scheduler.sample_lrs(
        lambda o: lr_scheduler.OneCycleLR(o, [0.1, 0.2], total_steps=5), 5, optimizer=opt, key=lambda g: g["betas"][0]
    )
    assert betas.shape == (5, 2) and betas[0].tolist() == [0.95, 0.95] and betas[1, 0] < 0.95
    plateau = lr_scheduler.sample_lrs(
        lambda o: lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=0), 4, lr=1.0, metrics=[1.0, 2.0, 2.0, 2.0]
    )
    assert plateau[:, 0].tolist() == [1.0, 1.0, 0.5, 0.25]


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: schedules.linear(0.1, total_iters=0), "Expected positive integer total_iters, but got 0"),
        (lambda: schedules.polynomial(0.1, total_iters=2.5), "Expected positive integer total_iters"),
        (lambda: schedules.step(0.1, step_size=0), "Expected positive integer step_size"),
        (lambda: schedules.cosine_annealing_warm_restarts(0.1, T_0=0), "Expected positive integer T_0, but got 0"),
        (lambda: schedules.cosine_annealing_warm_restarts(0.1, 2, T_mult=0), "Expected integer T_mult >= 1"),
        (lambda: schedules.cyclic(0.1, 1.0, mode="saw"), "mode must be one of"),
        (lambda: schedules.cyclic(0.1, 1.0, scale_fn=abs, scale_mode="epochs"), "scale_mode must be one of"),
        (lambda: schedules.one_cycle(0.1, total_steps=0), "Expected positive integer total_steps"),
        (lambda: schedules.one_cycle(0.1, 10, pct_start=1.5), "Expected float between 0 and 1 pct_start"),
        (lambda: schedules.one_cycle(0.1, 10, anneal_strategy="cubic"), "anneal_strategy must be one of"),
        (lambda: schedules.join([], []), "at least one schedule"),
        (lambda: schedules.join([schedules.constant(1.0)] * 2, []), "one boundary fewer than schedules"),
        (lambda: schedules.join([schedules.constant(1.0)] * 3, [5, 2]), "non-decreasing"),
    ],
)
def test_functional_schedule_errors(build, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        build()


def test_one_cycle_holds_its_last_value():
    s = schedules.one_cycle(0.1, total_steps=10)
    values = schedules.sample(s, 14)
    assert values[9] == pytest.approx(0.1 / 25 / 1e4, rel=1e-12)
    assert np.all(values[9:] == values[9])


def test_torch_compat_optim_exports_lr_scheduler():
    assert optim.lr_scheduler is lr_scheduler
    for cls in (*sc.SCHEDULER_CLASSES, "LRScheduler"):
        assert cls in lr_scheduler.__all__ and issubclass(getattr(lr_scheduler, cls), lr_scheduler.LRScheduler)


def test_gallery_example_runs(tmp_path):
    pytest.importorskip("matplotlib")
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "schedules_gallery.py")
    spec = importlib.util.spec_from_file_location("schedules_gallery", path)
    gallery = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = gallery  # dataclasses look their module up there
    try:
        spec.loader.exec_module(gallery)
    finally:
        del sys.modules[spec.name]
    out = tmp_path / "gallery.png"
    gallery.main(["--quick", "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lr_scheduler_module_doctests():
    """torch_compat is outside pytest's doctest paths; its scheduler examples run here."""
    import doctest

    result = doctest.testmod(lr_scheduler, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 5 and result.failed == 0

"""Learning-rate schedules against torch 2.13's ``torch.optim.lr_scheduler``, live.

Needs torch (skipped without it; CI installs torch 2.13.0). Learning rates are compared
with a relative tolerance of 1e-12 (torch_compat's are in fact torch's, bit for bit).

* every scenario of :mod:`schedule_cases`, run by both;
* resuming across libraries: a state dict (optimizer and scheduler) saved by torch goes on
  in torch_compat, and the reverse;
* ``state_dict()`` contents equal to torch's after some steps;
* parameters trained with a scheduler that cycles lr and momentum (``betas``), with real
  gradients, against torch, and compiled once;
* array (tensor) learning rates;
* random parameterisations (hypothesis) of the schedulers with the subtlest arithmetic;
* the functional schedules and :func:`gradxform.reduce_on_plateau` against torch.
"""

from __future__ import annotations

import copy
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import gradxform  # noqa: E402
import schedule_cases as sc  # noqa: E402
import torch_compat  # noqa: E402
from gradxform import schedules  # noqa: E402
from torch_compat import optim  # noqa: E402
from torch_compat.optim import lr_scheduler  # noqa: E402
from torch_compat.optim.optimizer import GradxformOptimizer  # noqa: E402

RTOL = 1e-12
SCENARIOS = sc.scenarios()
SETUPS = {**sc.SINGLE, **sc.COMPOSED}


@functools.lru_cache(maxsize=None)
def _backends():
    return sc.TorchBackend(), sc.CompatBackend()


def test_torch_version():
    assert torch.__version__.startswith(sc.TORCH_VERSION_PREFIX), torch.__version__


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scheduler_matches_torch_live(name):
    torch_backend, compat_backend = _backends()
    sc.compare(name, SCENARIOS[name](compat_backend), SCENARIOS[name](torch_backend), rtol=RTOL)


# -- state dicts across libraries ---------------------------------------------------------------


def _to_numpy(tree):
    """A torch state dict with its tensors turned into numpy arrays (and back)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu().numpy()
    if isinstance(tree, jax.Array):
        return torch.from_numpy(np.array(tree))  # a writable copy
    if isinstance(tree, dict):
        return type(tree)({k: _to_numpy(v) for k, v in tree.items()})
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_numpy(v) for v in tree)
    return tree


def _resume_across(setup: sc.Setup, source, target, at: int = 13):
    rec = sc.Recorder(setup.momentum)
    metrics = setup.metrics

    def body():
        opt = source.optimizer(setup.kind, setup.lrs)
        sched = setup.make(source, opt)
        rec.drive(opt, sched, at, metrics=metrics)
        saved_opt = _to_numpy(copy.deepcopy(opt.state_dict()))
        saved_sched = copy.deepcopy(sched.state_dict())
        opt = target.optimizer(setup.kind, setup.lrs)
        sched = setup.make(target, opt)
        opt.load_state_dict(saved_opt)
        sched.load_state_dict(saved_sched)
        rec.drive(opt, sched, setup.steps - at, metrics=None if metrics is None else metrics[at:])

    sc._record_warnings(rec, body)
    return rec.result()


@pytest.mark.parametrize("direction", ["torch-to-compat", "compat-to-torch"])
@pytest.mark.parametrize("name", list(SETUPS))
def test_resume_from_the_other_librarys_state_dict(name, direction):
    torch_backend, compat_backend = _backends()
    source, target = (torch_backend, compat_backend) if direction == "torch-to-compat" else (compat_backend, torch_backend)
    expected = sc.resumed(SETUPS[name])(torch_backend)
    sc.compare(name, _resume_across(SETUPS[name], source, target), expected, rtol=RTOL)


def _comparable(state):
    """A scheduler state dict with callables replaced by their type name."""
    if isinstance(state, dict):
        return {k: _comparable(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_comparable(v) for v in state]
    if callable(state):
        return type(state).__name__
    return state


@pytest.mark.parametrize("name", list(SETUPS))
def test_state_dict_equals_torchs(name):
    setup = SETUPS[name]
    states = []
    for backend in _backends():
        opt = backend.optimizer(setup.kind, setup.lrs)
        sched = setup.make(backend, opt)
        raised = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                sc.Recorder(setup.momentum).drive(opt, sched, 9, metrics=setup.metrics)
            except Exception as exc:  # noqa: BLE001  (torch's own errors, compared below)
                raised = type(exc).__name__
        states.append((raised, _comparable(sched.state_dict())))
        states.append([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])
    torch_state, torch_groups, compat_state, compat_groups = states
    assert compat_state == torch_state
    assert compat_groups == torch_groups


# -- training with a scheduler ------------------------------------------------------------------


def _train(backend_name, make_optimizer, make_scheduler, steps=15):
    x0 = np.linspace(-1.0, 2.0, 5)
    coef = np.linspace(0.5, 3.0, 5)
    trajectory = []
    if backend_name == "torch":
        p = torch.nn.Parameter(torch.tensor(x0, dtype=torch.float64))
        opt = make_optimizer(torch.optim, [p])
        sched = make_scheduler(torch.optim.lr_scheduler, opt)
        for _ in range(steps):
            p.grad = torch.tensor(coef) * p.detach() + 0.1
            opt.step()
            sched.step()
            trajectory.append(p.detach().numpy().copy())
        return np.asarray(trajectory), None
    p = torch_compat.Parameter(jnp.asarray(x0))
    opt = make_optimizer(optim, [p])
    sched = make_scheduler(lr_scheduler, opt)
    compiled = []
    for step in range(steps):
        if step == 2:  # the first step compiles once more: it creates the state
            before = set(GradxformOptimizer._compiled)
            compiled = [(fn, fn._cache_size()) for fn in GradxformOptimizer._compiled.values()]
        p.grad = jnp.asarray(coef) * p.data + 0.1
        opt.step()
        sched.step()
        trajectory.append(np.asarray(p.data))
    assert set(GradxformOptimizer._compiled) == before, "a new learning rate compiled a new step"
    return np.asarray(trajectory), [(fn._cache_size(), size) for fn, size in compiled]


TRAININGS = {
    "sgd-onecycle": (
        lambda o, ps: o.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
        lambda L, opt: L.OneCycleLR(opt, 0.05, total_steps=15, three_phase=True),
    ),
    "adam-cyclic-betas": (
        lambda o, ps: o.Adam(ps, lr=0.1),
        lambda L, opt: L.CyclicLR(opt, 0.01, 0.1, step_size_up=3, mode="triangular2"),
    ),
    "rmsprop-cyclic-momentum": (
        lambda o, ps: o.RMSprop(ps, lr=0.01, momentum=0.5),
        lambda L, opt: L.CyclicLR(opt, 0.001, 0.01, step_size_up=4, base_momentum=0.5, max_momentum=0.8),
    ),
    "adamw-sequential": (
        lambda o, ps: o.AdamW(ps, lr=0.05, weight_decay=0.1),
        lambda L, opt: L.SequentialLR(opt, [L.LinearLR(opt, 0.1, total_iters=4), L.CosineAnnealingLR(opt, 11)], [4]),
    ),
}


@pytest.mark.parametrize("name", list(TRAININGS))
def test_training_with_a_scheduler_matches_torch_and_compiles_once(name):
    make_optimizer, make_scheduler = TRAININGS[name]
    expected, _ = _train("torch", make_optimizer, make_scheduler)
    got, cache_sizes = _train("compat", make_optimizer, make_scheduler)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert cache_sizes and all(now == then for now, then in cache_sizes), "recompiled"


def test_array_learning_rates_match_torch_tensor_learning_rates():
    results = []
    for kind in ("torch", "compat"):
        if kind == "torch":
            opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=torch.tensor(0.1, dtype=torch.float64))
            L = torch.optim.lr_scheduler
        else:
            opt = optim.SGD([torch_compat.Parameter(jnp.zeros(1))], lr=jnp.asarray(0.1, jnp.float64))
            L = lr_scheduler
        sched = L.ChainedScheduler([L.ExponentialLR(opt, 0.9), L.StepLR(opt, 3, 0.5), L.CosineAnnealingLR(opt, 10)])
        lrs = []
        for _ in range(20):
            lrs.append(float(opt.param_groups[0]["lr"]))
            opt.step()
            sched.step()
        kept = opt.param_groups[0]["lr"]
        results.append((lrs, tuple(np.shape(kept)), str(np.asarray(kept).dtype), [float(v) for v in sched.get_last_lr()]))
    (torch_lrs, *torch_rest), (compat_lrs, *compat_rest) = results
    np.testing.assert_allclose(compat_lrs, torch_lrs, rtol=RTOL, atol=0)
    assert compat_rest == torch_rest


# -- random parameterisations -----------------------------------------------------------------

_hypothesis = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _both(make, steps, *, kind="sgd", lrs=(0.1,), epochs=None):
    out = []
    for backend in _backends():
        rec = sc.Recorder(momentum=kind != "adagrad")

        def body():
            opt = backend.optimizer(kind, lrs)
            sched = make(backend.L, opt)
            rec.drive(opt, sched, steps if epochs is None else len(epochs), epochs=epochs)

        sc._record_warnings(rec, body)
        out.append(rec.result())
    return out


@_hypothesis
@given(
    up=st.integers(1, 9),
    down=st.one_of(st.none(), st.integers(0, 9)),
    mode=st.sampled_from(["triangular", "triangular2", "exp_range"]),
    gamma=st.floats(0.8, 1.0),
    kind=st.sampled_from(["sgd", "adam"]),
)
def test_random_cyclic(up, down, mode, gamma, kind):
    make = lambda L, opt: L.CyclicLR(opt, 0.003, 0.07, up, down, mode, gamma)  # noqa: E731
    torch_run, compat_run = _both(make, 30, kind=kind)
    sc.compare("CyclicLR", compat_run, torch_run, rtol=RTOL)


@_hypothesis
@given(
    total=st.integers(2, 40),
    pct=st.floats(0.0, 1.0),
    anneal=st.sampled_from(["cos", "linear"]),
    three_phase=st.booleans(),
    div=st.floats(1.0, 100.0),
)
def test_random_one_cycle(total, pct, anneal, three_phase, div):
    make = lambda L, opt: L.OneCycleLR(opt, 0.2, total, pct_start=pct, anneal_strategy=anneal,  # noqa: E731
                                       three_phase=three_phase, div_factor=div)
    torch_run, compat_run = _both(make, total + 2)  # two steps too many: torch's error
    sc.compare("OneCycleLR", compat_run, torch_run, rtol=RTOL)


@_hypothesis
@given(
    t0=st.integers(1, 6),
    mult=st.integers(1, 3),
    epochs=st.lists(st.one_of(st.integers(0, 60), st.floats(0.0, 60.0)), min_size=1, max_size=12),
)
def test_random_warm_restarts_with_epochs(t0, mult, epochs):
    make = lambda L, opt: L.CosineAnnealingWarmRestarts(opt, t0, mult, 0.001)  # noqa: E731
    torch_run, compat_run = _both(make, 0, epochs=epochs)
    sc.compare("CosineAnnealingWarmRestarts", compat_run, torch_run, rtol=RTOL)


@_hypothesis
@given(
    name=st.sampled_from(["StepLR", "MultiStepLR", "ConstantLR", "LinearLR", "ExponentialLR", "PolynomialLR", "CosineAnnealingLR"]),
    epochs=st.lists(st.integers(0, 50), min_size=1, max_size=15),
    hand=st.floats(0.1, 2.0),
)
def test_random_step_epoch_and_by_hand(name, epochs, hand):
    kwargs = {
        "StepLR": dict(step_size=4, gamma=0.7),
        "MultiStepLR": dict(milestones=[3, 9, 9, 20]),
        "ConstantLR": dict(factor=0.4, total_iters=6),
        "LinearLR": dict(start_factor=0.2, end_factor=0.9, total_iters=12),
        "ExponentialLR": dict(gamma=0.93),
        "PolynomialLR": dict(total_iters=30, power=1.7),
        "CosineAnnealingLR": dict(T_max=13, eta_min=0.002),
    }[name]
    make = lambda L, opt: getattr(L, name)(opt, **kwargs)  # noqa: E731
    torch_run, compat_run = _both(make, 0, epochs=epochs)
    sc.compare(name, compat_run, torch_run, rtol=RTOL)
    # Steps without epoch, with the lr scaled by hand every fifth step.
    out = []
    for backend in _backends():
        rec = sc.Recorder()
        opt = backend.optimizer()
        sched = make(backend.L, opt)

        def hook(k, opt, sched):
            if k % 5 == 2:
                opt.param_groups[0]["lr"] *= hand

        rec.drive(opt, sched, 30, hook=hook)
        out.append(rec.result())
    sc.compare(name, out[1], out[0], rtol=RTOL)


@_hypothesis
@given(
    metrics=st.lists(st.floats(-5.0, 5.0), min_size=1, max_size=40),
    mode=st.sampled_from(["min", "max"]),
    threshold_mode=st.sampled_from(["rel", "abs"]),
    threshold=st.floats(0.0, 0.3),
    patience=st.integers(0, 4),
    cooldown=st.integers(0, 3),
    factor=st.floats(0.05, 0.95),
)
def test_random_reduce_lr_on_plateau(metrics, mode, threshold_mode, threshold, patience, cooldown, factor):
    out = []
    for backend in _backends():
        opt = backend.optimizer("sgd", (0.1, 0.3))
        sched = backend.L.ReduceLROnPlateau(opt, mode, factor, patience, threshold, threshold_mode, cooldown, [0.001, 0.0], 1e-4)
        rec = sc.Recorder()
        rec.drive(opt, sched, len(metrics), metrics=metrics)
        out.append((rec.result(), sched.state_dict()))
    sc.compare("ReduceLROnPlateau", out[1][0], out[0][0], rtol=RTOL)
    assert out[1][1] == out[0][1]


# -- functional schedules against torch --------------------------------------------------------


@pytest.mark.parametrize("name", list(sc.TWINS))
def test_functional_schedule_matches_torch(name):
    twin = sc.TWINS[name]
    functional = schedules.sample(twin.functional(schedules), twin.steps)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=twin.lr, momentum=0.9)
    sched = twin.scheduler(torch.optim.lr_scheduler, opt)
    expected = []
    for _ in range(twin.steps):
        expected.append(opt.param_groups[0][twin.key])
        opt.step()
        sched.step()
    np.testing.assert_allclose(functional, expected, rtol=RTOL, atol=0)


PLATEAUS = [
    dict(mode="min", factor=0.5, patience=2, threshold=1e-3, threshold_mode="rel", cooldown=1, min_lr=0.0, eps=1e-8),
    dict(mode="max", factor=0.2, patience=0, threshold=0.05, threshold_mode="abs", cooldown=0, min_lr=1e-3, eps=1e-8),
    dict(mode="min", factor=0.7, patience=1, threshold=0.0, threshold_mode="abs", cooldown=3, min_lr=0.02, eps=1e-3),
]


@pytest.mark.parametrize("config", range(len(PLATEAUS)))
def test_reduce_on_plateau_matches_torch(config):
    kwargs = PLATEAUS[config]
    lr = 0.1
    rng = np.random.default_rng(config)
    metrics = np.cumsum(rng.normal(0.0, 1.0, 50)) * (1 if kwargs["mode"] == "max" else -1) * 0.1
    metrics = np.where(rng.random(50) < 0.3, metrics[0], metrics)  # plateaus
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
    expected = []
    for metric in metrics:
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step(metric)
    options = {k: v for k, v in kwargs.items() if k not in ("min_lr", "eps")}
    tx = gradxform.chain(gradxform.sgd(lr), gradxform.reduce_on_plateau(**options, min_scale=kwargs["min_lr"] / lr, eps=kwargs["eps"] / lr))
    params = jnp.zeros(1)
    state = tx.init(params)
    update = jax.jit(tx.update)
    got = []
    for k in range(len(metrics)):
        value = None if k == 0 else metrics[k - 1]  # the metric of the epoch just done
        updates, state = (update(jnp.ones(1), state, params, value=value) if value is not None
                          else tx.update(jnp.ones(1), state, params))
        got.append(-float(updates[0]))
    assert len(set(expected)) > 1, "the metrics never reduced the learning rate"
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=0)

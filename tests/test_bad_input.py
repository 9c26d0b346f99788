"""Bad input, both faces (docs/reliability.md, "Bad input"): the one table of
``bad_input_cases``, run on torch_compat, on the core aliases and, live, on torch.

1. The grid of bad options for all 15 classes: torch_compat does what torch 2.13 does
   (golden ``golden/bad_input.json``, made by torch; checked live against torch when it
   is importable), and the core alias refuses with ``ValueError``.
2. The written cases: torch_compat and torch raise the type and text written in the
   table (a refused call after construction changes nothing, and the next step is the one
   a twin that never saw it takes); the core alias refuses the same numbers with the same
   text; values on the edge of what torch accepts are accepted by every face.
3. Nothing is lost: every refused call after construction (a step whose closure
   raises, a gradient set behind the checks, a bad ``load_state_dict`` or
   ``add_param_group``) leaves ``.data``, ``state`` (step counts included) and
   ``param_groups`` bit for bit as they were, and the next step is the one a twin that
   never saw the bad call takes.
4. Hypothesis fuzzes the constructors of both faces.
"""

from __future__ import annotations

import copy
import json
import math
import pathlib
import warnings

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bad_input_cases as cases
import gradxform
import torch_compat as tc
from torch_compat import optim

try:
    import torch
except ImportError:  # everything but the live comparison runs from the golden file
    torch = None

_GOLDEN_FILE = json.loads((pathlib.Path(__file__).parent / "golden" / "bad_input.json").read_text())
GOLDEN = _GOLDEN_FILE["cases"]
GOLDEN_SCHEDULERS = _GOLDEN_FILE["schedulers"]
CASES = cases.cases()
BY_ID = {case_id: (cls, kwargs) for case_id, cls, kwargs in CASES}
WRITTEN = cases.CASES

# Options torch never checks (SGD's dampening, ASGD's lambd/alpha/t0, Rprop's
# step_sizes, Muon's eps and ns_coefficients) given a non-number: torch fails inside its
# tensor arithmetic at the first step (or ignores the value where it is unused); here the
# first step refuses it with our own ValueError/TypeError before anything changes.
# Also a 2-element tensor beta: torch's RuntimeError comes from Tensor.__bool__, ours
# from the jax array's. And ASGD alpha=-inf, where torch divides by zero in Python; and
# LBFGS lr=inf, where torch's first step makes the parameter infinite and ours does not.
KNOWN_DIFFERENCES = {
    "SGD-dampening='a'", "SGD-dampening=(1+1j)",
    "ASGD-lambd='a'", "ASGD-lambd=None", "ASGD-lambd=(1+1j)", "ASGD-lambd=(0.1,)",
    "ASGD-alpha=-inf", "ASGD-alpha='a'", "ASGD-alpha=None", "ASGD-alpha=(1+1j)", "ASGD-alpha=(0.1,)",
    "ASGD-t0='a'", "ASGD-t0=None", "ASGD-t0=(1+1j)", "ASGD-t0=(0.1,)",
    "Rprop-step_sizes[0]='a'", "Rprop-step_sizes[0]=None", "Rprop-step_sizes[1]='a'",
    "Rprop-step_sizes[1]=None", "Rprop-step_sizes='ab'",
    "Muon-eps='a'", "Muon-eps=None", "Muon-eps=(1+1j)", "Muon-eps=(0.1,)",
    "Muon-ns_coefficients[0]='a'", "Muon-ns_coefficients[0]=None", "Muon-ns_coefficients[1]='a'",
    "Muon-ns_coefficients[1]=None", "Muon-ns_coefficients[2]='a'", "Muon-ns_coefficients[2]=None",
    "Adam-tensor-betas-2",
    "LBFGS-lr=inf",
}  # fmt: skip
MATCHING = [c for c in CASES if c[0] not in KNOWN_DIFFERENCES]


def test_golden_covers_the_table():
    assert set(GOLDEN) == set(BY_ID)
    assert KNOWN_DIFFERENCES <= set(BY_ID)
    assert {cls for _, cls, _ in CASES} == set(cases.CLASSES)
    # The table is not all "ok": torch refuses most of it.
    assert sum(v != "ok" for v in GOLDEN.values()) > 400


@pytest.mark.parametrize("cls", list(cases.CORE))
def test_grid_covers_every_float_option(cls):
    """Each float option of the class's spec (and Adagrad's initial_accumulator_value)
    gets bad values in the grid: an option added to the registry must be added here."""
    spec = cases.SPECS[cases.CORE[cls]]
    numeric = {o.name for o in spec.options if o.hyper or o.name == "initial_accumulator_value"}
    assert set(cases.SCALARS[cls]) | set(cases.SEQUENCES.get(cls, {})) == numeric


@pytest.mark.parametrize("cls", cases.CLASSES)
def test_torch_compat_does_what_torch_does(cls):
    """One test per class (each runs a few dozen cases; steps share compilations)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrong = {
            case_id: (GOLDEN[case_id], got)
            for case_id, c, kwargs in MATCHING
            if c == cls and (got := cases.run_ours(c, kwargs)) != GOLDEN[case_id]
        }
    assert not wrong, wrong


@pytest.mark.parametrize("case_id", sorted(KNOWN_DIFFERENCES))
def test_known_differences_refuse_before_changing_anything(case_id):
    cls, kwargs = BY_ID[case_id]
    if case_id == "ASGD-alpha=-inf":
        assert GOLDEN[case_id] == "ZeroDivisionError: float division by zero"
        assert cases.run_ours(cls, kwargs) == "ok"
        return
    if case_id == "LBFGS-lr=inf":
        assert (GOLDEN[case_id], cases.run_ours(cls, kwargs)) == ("ok, not finite", "ok")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        param = tc.Parameter(jnp.ones(cases.SHAPE, jnp.float64))
        try:
            optimizer = getattr(optim, cls)([param], **cases.materialize(kwargs, jnp.asarray))
        except (ValueError, TypeError, RuntimeError):
            return  # refused at construction: nothing existed to lose
        param.grad = jnp.full(cases.SHAPE, 0.5)
        with pytest.raises((ValueError, TypeError)):
            optimizer.step()
    np.testing.assert_array_equal(np.asarray(param.data), 1.0)
    assert not optimizer.state


@pytest.mark.skipif(torch is None, reason="the live half needs torch")
def test_golden_is_what_torch_does_now():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        drift = {i: (GOLDEN[i], got) for i, c, kw in CASES if (got := cases.run_torch(c, kw)) != GOLDEN[i]}
    assert not drift, drift


@pytest.mark.parametrize("case_id", sorted(cases.scheduler_cases()))
def test_scheduler_misuse_is_refused_as_torch_does(case_id):
    run = cases.scheduler_cases()[case_id]
    ours = cases.outcome(lambda: run(optim, lambda: tc.Parameter(jnp.ones(2))) or True)
    assert ours == GOLDEN_SCHEDULERS[case_id]
    if torch is not None:
        theirs = cases.outcome(
            lambda: run(torch.optim, lambda: torch.nn.Parameter(torch.ones(2, dtype=torch.float64))) or True
        )
        assert theirs == GOLDEN_SCHEDULERS[case_id]


def _core_outcome(cls, kwargs):
    alias = cases.CORE[cls]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tx = getattr(gradxform, alias)(**cases.core_kwargs(cases.materialize(kwargs, jnp.asarray)))
        except ValueError as error:
            return "ValueError", str(error), None
        except Exception as error:  # noqa: BLE001 - any other type is a failure of the test
            return type(error).__name__, str(error), None
        params = jnp.ones(cases.SHAPE)
        updates, _ = tx.update(jnp.full(cases.SHAPE, 0.5), tx.init(params), params)
        return "ok", "", updates


CORE_CASES = [c for c in CASES if c[1] in cases.CORE]


@pytest.mark.parametrize("cls", sorted(cases.CORE))
def test_core_refuses_with_value_error(cls):
    """The core refuses every invalid value with ValueError: torch's text where torch
    refuses a number with ValueError, its own text for a non-number or NaN."""
    problems = {}
    for case_id, c, kwargs in CORE_CASES:
        if c != cls or "tensor" in case_id:
            continue
        refuse = cases.core_must_refuse(c, kwargs, GOLDEN[case_id])
        kind, message, updates = _core_outcome(c, kwargs)
        if refuse:
            if kind != "ValueError":
                problems[case_id] = (GOLDEN[case_id], kind, message)
            elif GOLDEN[case_id].startswith("ValueError: ") and all(
                cases.is_number(v) for v in _leaves(kwargs)
            ) and "unpack" not in GOLDEN[case_id]:
                if "ValueError: " + message != GOLDEN[case_id]:
                    problems[case_id] = (GOLDEN[case_id], message)
        else:
            if kind != "ok":
                problems[case_id] = ("accepted by torch", kind, message)
            elif GOLDEN[case_id] == "ok":  # torch's step stayed finite: so must the core's
                if not bool(jnp.all(jnp.isfinite(updates))):
                    problems[case_id] = ("non-finite update", np.asarray(updates))
    assert not problems, problems


def _leaves(kwargs):
    for value in kwargs.values():
        yield from (value if isinstance(value, tuple) else (value,))


def test_core_refuses_tensor_learning_rate_of_two_elements():
    for alias in cases.CORE.values():
        with pytest.raises(ValueError, match="^Tensor lr must be 1-element$"):
            getattr(gradxform, alias)(jnp.asarray([0.1, 0.2]))
    with pytest.raises(ValueError, match="^Tensor lr must be 1-element$"):
        gradxform.lbfgs(jnp.asarray([0.1, 0.2]))


# --------------------------------------------------------------------------- written cases


def _libs():
    libs = [pytest.param(cases.OurLib(), id="ours")]
    if torch is not None:
        libs.append(pytest.param(cases.TorchLib(), id="torch"))
    return libs


def _expected(case: cases.Case, lib) -> str:
    return cases.expected_message(case.message, lib.name)


def _run_case(case: cases.Case, lib):
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
@pytest.mark.parametrize("case", WRITTEN, ids=[c.id for c in WRITTEN])
def test_error(case, lib):
    """torch_compat (and torch) raise the written type and text; a refused call after
    construction changes nothing, and the next step is a twin's that never saw it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info, post = _run_case(case, lib)
    assert type(info.value) is case.exc, f"{lib.name}: {type(info.value).__name__}: {info.value}"
    assert str(info.value) == _expected(case, lib), f"{lib.name}: {info.value}"
    if post is None or lib.name != "ours":
        return
    opt, params, before = post
    assert _snapshot(opt, params) == before
    twin, twin_params, _ = case.make(cases.OurLib())  # the same, minus the refused call
    for p, q in zip(params, twin_params):
        grad = None if p.is_complex() else jnp.asarray(np.full(p.shape, 0.25, dtype=p.dtype))
        p.grad = q.grad = grad
    opt.step()
    twin.step()
    for p, q in zip(params, twin_params):
        np.testing.assert_array_equal(np.asarray(p.data), np.asarray(q.data))


CORE_WRITTEN = [c for c in WRITTEN if c.core is not None]


@pytest.mark.parametrize("case", CORE_WRITTEN, ids=[c.id for c in CORE_WRITTEN])
def test_core_error(case):
    """The core alias refuses the same options with ``ValueError`` and torch's text, when
    it is built (also where torch checks only at the first step)."""
    options = {k: (v(cases.OurLib()) if callable(v) else v) for k, v in case.core.items()}
    with pytest.raises(ValueError) as info:
        getattr(gradxform, cases.CORE[case.cls])(**cases.core_kwargs(options))
    assert type(info.value) is ValueError
    assert str(info.value) == case.message


def test_written_cases_cover_every_core_alias():
    assert {c.cls for c in CORE_WRITTEN} == set(cases.CORE)


@pytest.mark.parametrize("cls,options", cases.EDGES, ids=[cases.edge_id(c, o) for c, o in cases.EDGES])
def test_values_on_the_edge_are_accepted(cls, options):
    tx = getattr(gradxform, cases.CORE[cls])(**cases.core_kwargs(options))
    assert isinstance(tx, gradxform.GradientTransformation)
    for lib in [p.values[0] for p in _libs()]:
        opt = getattr(lib.optim, cls)([lib.P(np.ones((3, 2)))], **options)
        assert opt.defaults["lr"] == options.get("lr", cases.SPECS[cases.CORE[cls]].option("lr").default)


@pytest.mark.parametrize("lib", _libs())
def test_top_level_set_of_params_is_accepted(lib):
    """A set given as ``params`` itself is turned into a list (torch's ``list(params)``):
    only a set inside a param group is refused."""
    p = lib.P(np.ones(3))
    opt = lib.optim.SGD({p}, lr=0.1)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["params"] == [p]


# --------------------------------------------------------------------------- nothing is lost


def _snapshot(optimizer, params):
    """``.data``, ``state`` and ``param_groups`` as plain values (bit-exact comparisons)."""

    def plain(value):
        if isinstance(value, jax.Array):
            return ("array", str(value.dtype), value.shape, np.array(value).tobytes())
        return ("value", type(value).__name__, repr(value))

    state = [
        (params.index(p), [(k, plain(v)) for k, v in entry.items()]) for p, entry in optimizer.state.items()
    ]
    groups = [
        ([params.index(p) for p in g["params"]], repr({k: v for k, v in g.items() if k != "params"}))
        for g in optimizer.param_groups
    ]
    data = [(str(p.dtype), np.array(p.data).tobytes()) for p in params]
    return data, state, groups


def _trained(cls="Adam", steps=2, **options):
    """Two groups, a few steps taken (state exists), deterministic."""
    shapes = [(2, 3), (3, 2)]
    params = [tc.Parameter(jnp.linspace(-1.0, 1.0, 6).reshape(s) + k) for k, s in enumerate(shapes)]
    groups = [{"params": [params[0]]}, {"params": [params[1]], "lr": 0.05}]
    optimizer = getattr(optim, cls)(params if cls == "LBFGS" else groups, **options)
    for t in range(steps):
        for p in params:
            p.grad = jnp.full(p.shape, 0.5 + t)
        if cls == "LBFGS":
            optimizer.step(lambda: float(sum(jnp.sum(p.data**2) for p in params)))
        else:
            optimizer.step()
    return optimizer, params


def _next_step_equals_twin(optimizer, params, cls, **options):
    twin, twin_params = _trained(cls, **options)
    for p, q in zip(params, twin_params):
        p.grad = q.grad = jnp.full(p.shape, 0.25)
    optimizer.step()
    twin.step()
    for p, q in zip(params, twin_params):
        np.testing.assert_array_equal(np.asarray(p.data), np.asarray(q.data))


STEP_CLASSES = [c for c in cases.CLASSES if c not in ("LBFGS", "SparseAdam")]
CHEAP = {"Muon": {"ns_steps": 1}}


class Boom(Exception):
    pass


@pytest.mark.parametrize("cls", STEP_CLASSES)
def test_closure_that_raises_changes_nothing(cls):
    options = CHEAP.get(cls, {})
    optimizer, params = _trained(cls, **options)
    before = _snapshot(optimizer, params)

    def closure():
        raise Boom("loss failed")

    with pytest.raises(Boom):
        optimizer.step(closure)
    assert _snapshot(optimizer, params) == before
    _next_step_equals_twin(optimizer, params, cls, **options)


@pytest.mark.parametrize("bad", ["shape", "integer", "complex"])
@pytest.mark.parametrize("cls", ["SGD", "Adam", "Adagrad", "Rprop", "Muon", "Adafactor"])
def test_gradient_set_behind_the_checks_is_refused_before_donation(cls, bad):
    """``Parameter.grad`` refuses these as torch does; set behind its back (``_grad``),
    the core's trace-time check refuses them inside ``step()`` before the compiled call
    that donates the buffers, so nothing is lost."""
    options = {**CHEAP.get(cls, {}), **({"momentum": 0.9} if cls == "SGD" else {})}
    optimizer, params = _trained(cls, **options)
    before = _snapshot(optimizer, params)
    p = params[1]
    wrong = {
        "shape": jnp.ones(p.shape[::-1] + (1,)),
        "integer": jnp.ones(p.shape, jnp.int32),
        "complex": jnp.ones(p.shape, jnp.complex128),
    }[bad]
    params[0].grad = jnp.ones(params[0].shape)
    p._grad = wrong
    if cls == "Adafactor" and bad == "complex":
        message = "^updates do not match the parameters: at \\[0\\]"
    else:
        message = "^updates do not match the parameters: at \\[0\\] the parameter has shape"
    with pytest.raises(ValueError, match=message):
        optimizer.step()
    assert _snapshot(optimizer, params) == before
    _next_step_equals_twin(optimizer, params, cls, **options)


def test_lbfgs_closure_that_raises_at_the_first_evaluation_changes_nothing():
    optimizer, params = _trained("LBFGS", steps=1, lr=0.5, max_iter=2)
    before = _snapshot(optimizer, params)

    def closure():
        raise Boom("loss failed")

    with pytest.raises(Boom):
        optimizer.step(closure)
    assert _snapshot(optimizer, params) == before


def test_lbfgs_closure_that_raises_later_leaves_the_last_iterate_as_torch():
    """LBFGS moves the parameters between evaluations: a closure that raises at its third
    evaluation leaves them where torch leaves them, at the second iteration's point. On
    f(x) = |x|^2 from x0 = (1, -2), lr = 0.5: the first step is lr * min(1, 1/|g|_1) = 1/12
    along -g = (-2, 4), x1 = (5/6, -5/3); the quasi-Newton direction is then -x1 (the
    curvature is exactly 2), and x2 = x1 - 0.5 * x1 = (5/12, -5/6)."""

    def run(make, value_and_grad, read):
        p, optimizer = make()
        calls = [0]

        def closure():
            calls[0] += 1
            if calls[0] == 3:
                raise Boom("third evaluation")
            return value_and_grad(p, optimizer)

        with pytest.raises(Boom):
            optimizer.step(closure)
        return read(p)

    def ours_make():
        p = tc.Parameter(jnp.asarray([1.0, -2.0]))
        return p, optim.LBFGS([p], lr=0.5, max_iter=5)

    def ours_value_and_grad(p, optimizer):
        p.grad = 2 * p.data
        return float(jnp.sum(p.data**2))

    ours = run(ours_make, ours_value_and_grad, lambda p: np.asarray(p.data))
    np.testing.assert_allclose(ours, [5 / 12, -5 / 6], rtol=1e-12)
    if torch is not None:

        def torch_make():
            p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
            return p, torch.optim.LBFGS([p], lr=0.5, max_iter=5)

        def torch_value_and_grad(p, optimizer):
            optimizer.zero_grad()
            loss = (p**2).sum()
            loss.backward()
            return loss

        theirs = run(torch_make, torch_value_and_grad, lambda p: p.detach().numpy())
        np.testing.assert_array_equal(ours, theirs)


def _bad_load(mutate):
    optimizer, params = _trained("Adam", amsgrad=True)
    saved = optimizer.state_dict()
    bad = copy.deepcopy(saved)
    mutate(bad)
    return optimizer, params, bad


LOAD_CASES = {
    "fewer-groups": (
        lambda sd: sd["param_groups"].pop(),
        ValueError,
        "loaded state dict has a different number of parameter groups",
    ),
    "group-size": (
        lambda sd: sd["param_groups"][1]["params"].append(7),
        ValueError,
        "loaded state dict contains a parameter group that doesn't match the size of optimizer's group",
    ),
    "no-param-groups": (lambda sd: sd.pop("param_groups"), KeyError, "'param_groups'"),
    "no-state": (lambda sd: sd.pop("state"), KeyError, "'state'"),
    "group-without-params": (lambda sd: sd["param_groups"][0].pop("params"), KeyError, "'params'"),
}


def _torch_load_error(mutate):
    """torch's own exception for the same mutation of a torch state dict."""
    params = [torch.nn.Parameter(torch.ones(2, 3, dtype=torch.float64)), torch.nn.Parameter(torch.ones(3, 2, dtype=torch.float64))]
    opt = torch.optim.Adam([{"params": [params[0]]}, {"params": [params[1]], "lr": 0.05}], amsgrad=True)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    mutate(sd)
    try:
        opt.load_state_dict(sd)
    except Exception as error:  # noqa: BLE001
        return type(error), str(error)
    return None


@pytest.mark.parametrize("name", sorted(LOAD_CASES))
def test_refused_load_state_dict_changes_nothing(name):
    mutate, exc, message = LOAD_CASES[name]
    optimizer, params, bad = _bad_load(mutate)
    before = _snapshot(optimizer, params)
    with pytest.raises(exc) as info:
        optimizer.load_state_dict(bad)
    assert str(info.value) == message
    assert _snapshot(optimizer, params) == before
    _next_step_equals_twin(optimizer, params, "Adam", amsgrad=True)
    if torch is not None:
        assert _torch_load_error(mutate) == (exc, message)


def test_state_dict_with_a_buffer_of_the_wrong_shape_is_refused_at_step_and_nothing_is_lost():
    """torch loads it and fails in the step's arithmetic; here too it loads, and the step
    refuses it with torch's error (while tracing, before the donated call)."""
    optimizer, params = _trained("Adam")
    sd = optimizer.state_dict()
    sd["state"][1]["exp_avg"] = np.zeros((7,))
    optimizer.load_state_dict(sd)
    before = _snapshot(optimizer, params)
    for p in params:
        p.grad = jnp.ones(p.shape)
    with pytest.raises(RuntimeError) as info:
        optimizer.step()
    assert str(info.value) == "The size of tensor a (7) must match the size of tensor b (2) at non-singleton dimension 1"
    assert _snapshot(optimizer, params) == before


@pytest.mark.parametrize(
    "group, exc, message",
    [
        (lambda ps: {"params": [tc.Parameter(jnp.ones(2)), ps[0]]}, ValueError,
         "some parameters appear in more than one parameter group"),
        (lambda ps: {"params": [tc.Parameter(jnp.ones(2))], "lr": -1.0}, None, None),
        (lambda ps: {"params": ["w"]}, TypeError, "optimizer can only optimize Tensors, but one of the params is str"),
        (lambda ps: [tc.Parameter(jnp.ones(2))], TypeError, "param_group must be a dict, but got <class 'list'>"),
        (lambda ps: {"params": [("w", tc.Parameter(jnp.ones(2)))]}, ValueError,
         "all optimizer param groups should be with/without names. cannot add param group with names to the optimizer"),
    ],
    ids=["duplicate", "negative-lr-accepted-as-torch", "non-tensor", "not-a-dict", "names-mixed"],
)  # fmt: skip
def test_refused_add_param_group_changes_nothing(group, exc, message):
    optimizer, params = _trained("Adam")
    before = _snapshot(optimizer, params)
    if exc is None:
        # torch does not check a new group's options: it is added (and so here).
        optimizer.add_param_group(group(params))
        assert len(optimizer.param_groups) == 3
        return
    with pytest.raises(exc) as info:
        optimizer.add_param_group(group(params))
    assert str(info.value) == message
    assert _snapshot(optimizer, params) == before
    _next_step_equals_twin(optimizer, params, "Adam")


def test_structural_misuse_is_refused_with_torchs_messages():
    p = tc.Parameter(jnp.ones(3))
    with pytest.raises(ValueError, match="^optimizer got an empty parameter list$"):
        optim.Adam([])
    with pytest.raises(ValueError, match="^some parameters appear in more than one parameter group$"):
        optim.Adam([{"params": [p]}, {"params": [p]}])
    with pytest.raises(ValueError, match=r"^LBFGS doesn't support per-parameter options \(parameter groups\)$"):
        optim.LBFGS([{"params": [p]}, {"params": [tc.Parameter(jnp.ones(2))]}])
    if torch is not None:
        q = torch.nn.Parameter(torch.ones(3))
        with pytest.raises(ValueError, match="^optimizer got an empty parameter list$"):
            torch.optim.Adam([])
        with pytest.raises(ValueError, match="^some parameters appear in more than one parameter group$"):
            torch.optim.Adam([{"params": [q]}, {"params": [q]}])
        with pytest.raises(ValueError, match=r"^LBFGS doesn't support per-parameter options \(parameter groups\)$"):
            torch.optim.LBFGS([{"params": [q]}, {"params": [torch.nn.Parameter(torch.ones(2))]}])


# --------------------------------------------------------------------------- hypothesis


def _value(draw, option):
    """A valid-looking or invalid value for a numeric option."""
    return draw(
        st.one_of(
            st.floats(-2.0, 2.0, allow_nan=False),
            st.sampled_from([0.0, 1.0, -1e-3, 0.999, 1e-8]),
            st.sampled_from([float("nan"), "x", None]),
        )
    )


@st.composite
def options(draw, cls):
    kwargs = {}
    for option in cases.SCALARS[cls]:
        if draw(st.booleans()):
            kwargs[option] = _value(draw, option)
    for option, default in cases.SEQUENCES.get(cls, {}).items():
        if draw(st.booleans()):
            seq = list(default)
            index = draw(st.integers(0, len(seq) - 1))
            seq[index] = _value(draw, option)
            kwargs[option] = tuple(seq)
    return kwargs


def _fuzz_classes():
    return [c for c in cases.CLASSES if c not in ("LBFGS",)]


@pytest.mark.parametrize("cls", _fuzz_classes())
def test_fuzz_constructors(cls):
    """Random options: torch_compat agrees with torch (live) on type and message and,
    when it accepts, on the step's numbers; the core refuses what torch refuses (and
    non-numbers, NaN) with ValueError, and accepts the rest with a finite step."""

    @hypothesis.settings(max_examples=12, deadline=None, suppress_health_check=list(hypothesis.HealthCheck),
                         database=None)
    @hypothesis.given(kwargs=options(cls))
    def run(kwargs):
        if cls == "Muon":
            kwargs = {**kwargs, "ns_steps": 1}
        numbers_only = all(
            cases.is_number(v) and math.isfinite(v) for v in _leaves(kwargs) if not (v is None and cls == "Adafactor")
        )
        ours = _construct(optim, cls, kwargs, jnp.ones(cases.SHAPE))
        theirs = None
        if torch is not None:
            theirs = _construct(torch.optim, cls, kwargs, torch.ones(cases.SHAPE, dtype=torch.float64))
            assert ours[0] == theirs[0], (kwargs, ours, theirs)
        stepped = None
        if ours[0] == "ok" and numbers_only:
            stepped = _one_step(cls, ours[1], theirs[1] if theirs else None)
        kind, _, updates = _core_outcome(cls, kwargs)
        must_refuse = ours[0] != "ok" or not numbers_only and any(
            not (v is None and cls == "Adafactor") and (not cases.is_number(v) or math.isnan(v))
            for v in _leaves(kwargs)
        )
        if must_refuse:
            assert kind == "ValueError", (kwargs, kind)
        else:
            assert kind == "ok", (kwargs, kind)
            if stepped is not None:  # the core's step is finite exactly where torch_compat's is
                assert bool(jnp.all(jnp.isfinite(updates))) == stepped, kwargs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run()


def _construct(module, cls, kwargs, data):
    try:
        if module is optim:
            param = tc.Parameter(data)
        else:
            param = torch.nn.Parameter(data)
        return "ok", (getattr(module, cls)([param], **kwargs), param)
    except Exception as error:  # noqa: BLE001
        return f"{type(error).__name__}: {error}", None


def _one_step(cls, ours, theirs):
    """One step of torch_compat (and of torch, compared, when given); whether it stayed finite."""
    (opt, p) = ours
    grad = np.full(cases.SHAPE, 0.5)
    if cls == "SparseAdam":
        from jax.experimental import sparse

        p.grad = sparse.BCOO.fromdense(jnp.asarray(grad))
    else:
        p.grad = jnp.asarray(grad)
    opt.step()
    finite = bool(jnp.all(jnp.isfinite(p.data)))
    if theirs is not None:
        topt, tp = theirs
        tp.grad = torch.from_numpy(grad).to_sparse() if cls == "SparseAdam" else torch.from_numpy(grad)
        topt.step()
        np.testing.assert_allclose(np.asarray(p.data), tp.detach().numpy(), rtol=1e-6, atol=1e-9, equal_nan=True)
    return finite


def test_the_docs_table_names_tests_that_exist():
    """Each row of docs/reliability.md's "Bad input" and "Checkpoints and memory" tables
    names tests; they must exist."""
    import re

    root = pathlib.Path(__file__).parent.parent
    text = (root / "docs" / "reliability.md").read_text()
    rows = []
    for title in ("## Bad input", "## Checkpoints and memory"):
        section = text.split(title, 1)[1].split("\n## ", 1)[0]
        rows += [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| Input")]
    assert len(rows) >= 35
    named = 0
    for row in rows:
        cells = row.split(" | ")
        current = None
        for ref in re.findall(r"`(tests/[\w/]+\.py)?(?:::(\w+))?`", cells[-1]):
            path, name = ref
            current = path or current
            assert current, row
            source = (root / current).read_text()
            if name:
                assert f"def {name}(" in source, (current, name)
                named += 1
    assert named >= 20

"""Every public name of torch 2.13's ``torch.optim`` API exists in ``torch_compat``.

The names are in ``tests/golden/torch_optim_names.json`` (written by
``make_golden_names.py`` from torch), so the walk runs without torch; with torch, the file
is checked to be torch's current list. Also the names added for it:
``swap_in_optimizer_params_and_state`` (against torch's, live), ``Optimizer.profile_hook_step``,
the hook type aliases, and ``torch_compat.nn.utils.parameters_to_vector`` /
``vector_to_parameters`` (torch's numbers and messages).
"""

from __future__ import annotations

import importlib
import json

import jax.numpy as jnp
import numpy as np
import pytest

import make_golden_names as mg
import torch_compat
from torch_compat import optim
from torch_compat.nn.utils import parameters_to_vector, vector_to_parameters
from torch_compat.optim import swap_in_optimizer_params_and_state


def _golden() -> dict:
    with open(mg.GOLDEN_PATH) as f:
        return json.load(f)


def _ours(torch_path: str):
    module, _, attr = torch_path.partition(".optim")
    assert module == "torch", torch_path
    path = "torch_compat.optim" + attr
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError:  # a class: torch.optim.Optimizer -> torch_compat.optim.Optimizer
        owner, _, name = path.rpartition(".")
        return getattr(importlib.import_module(owner), name)


@pytest.mark.parametrize("kind", ["modules", "classes"])
def test_every_public_torch_name_exists(kind):
    golden = _golden()
    assert golden["torch_version"].startswith("2.13.0")
    missing = [
        f"{owner}.{name}" for owner, names in golden[kind].items() for name in names if not hasattr(_ours(owner), name)
    ]
    assert not missing, missing


def test_golden_names_are_torchs_current_ones():
    pytest.importorskip("torch")
    assert mg.torch_names() == _golden(), "regenerate: python tests/make_golden_names.py"


def test_type_aliases_are_usable_annotations():
    from torch_compat.optim import optimizer

    def make(params: optimizer.ParamsT) -> optimizer.StateDict:
        return optim.SGD(params, lr=0.1).state_dict()

    assert make([torch_compat.Parameter(jnp.zeros(1))])["param_groups"][0]["lr"] == 0.1
    assert optimizer.Args.__origin__ is tuple and optimizer.StateDict.__origin__ is dict
    assert optim.Optimizer.OptimizerPreHook is not None and optimizer.R.__name__ == "R"


def test_profile_hook_step_runs_the_hooks_around_the_function():
    opt = optim.SGD([torch_compat.Parameter(jnp.zeros(1))], lr=0.1)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append(("pre", args[1:])))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append(("post", args[1:])))
    handle = optim.optimizer.register_optimizer_step_pre_hook(lambda o, args, kwargs: calls.append(("global", ())))
    try:
        wrapped = optim.Optimizer.profile_hook_step(lambda self, x: calls.append(("body", (x,))) or x * 2)
        assert wrapped(opt, 21) == 42
    finally:
        handle.remove()
    assert calls == [("global", ()), ("pre", (21,)), ("body", (21,)), ("post", (21,))]


# -- swap_in_optimizer_params_and_state ---------------------------------------------------------


def _adam(lib, make):
    params = [make(np.array([1.0, -2.0])), make(np.array([[0.5]]))]
    opt = lib.Adam([{"params": params[:1]}, {"params": params[1:], "lr": 0.01}], lr=0.1)
    return params, opt


def _run_swap(lib, make, set_grad, read):
    params, opt = _adam(lib, make)
    for p in params:
        set_grad(p, np.ones(p.shape))
    opt.step()
    saved = opt.state_dict()
    saved["param_groups"][0]["lr"] = 0.5
    others = [make(np.array([3.0, 4.0])), make(np.array([[2.0]]))]
    for p in others:
        set_grad(p, np.full(p.shape, 0.5))
    with swap_in(lib)(opt, {"a": others[0], "b": others[1]}, saved):
        opt.step()
        inside = [g["lr"] for g in opt.param_groups]
    after = [g["lr"] for g in opt.param_groups]
    return {
        "others": [read(p) for p in others],
        "live": [read(p) for p in params],
        "exp_avg": [np.asarray(saved["state"][i]["exp_avg"]) for i in (0, 1)],
        "step": [float(np.asarray(saved["state"][i]["step"])) for i in (0, 1)],
        "lrs": inside + after,
    }


def swap_in(lib):
    return lib.swap_in_optimizer_params_and_state


def test_swap_in_runs_a_step_on_other_parameters_and_restores():
    result = _run_swap(
        optim,
        lambda a: torch_compat.Parameter(jnp.asarray(a)),
        lambda p, g: setattr(p, "grad", jnp.asarray(g)),
        lambda p: np.asarray(p.data),
    )
    # inside: the swap-in lr (0.5) and the live second group's; after: the live ones
    assert result["lrs"] == [0.5, 0.01, 0.1, 0.01]
    assert result["step"] == [2.0, 2.0]  # the swap-in state went on from step 1
    np.testing.assert_allclose(result["live"][0], [0.9, -2.1])  # untouched by the swap-in step


def test_swap_in_matches_torch_live():
    torch = pytest.importorskip("torch")
    ours = _run_swap(
        optim,
        lambda a: torch_compat.Parameter(jnp.asarray(a)),
        lambda p, g: setattr(p, "grad", jnp.asarray(g)),
        lambda p: np.asarray(p.data),
    )
    theirs = _run_swap(
        torch.optim,
        lambda a: torch.nn.Parameter(torch.tensor(a)),
        lambda p, g: setattr(p, "grad", torch.tensor(g)),
        lambda p: p.detach().numpy(),
    )
    assert ours["lrs"] == theirs["lrs"] and ours["step"] == theirs["step"]
    for key in ("others", "live", "exp_avg"):
        for a, b in zip(ours[key], theirs[key]):
            np.testing.assert_allclose(a, b, rtol=1e-12, err_msg=key)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s, o: None, "requires initialized optimizer state."),
        (lambda s, o: s.__setitem__("state", []), "to per-param state dicts, got list."),
        (lambda s, o: s.__setitem__("param_groups", s["param_groups"][:1]), "a different number of parameter groups"),
        (lambda s, o: s["param_groups"][0].__setitem__("extra", 1), "swap-in: ['extra']. Keys only in live: []."),
        (lambda s, o: s["state"].__setitem__(7, {}), "got extra keys [7]."),
    ],
    ids=["no_state", "state_not_dict", "groups", "keys", "extra_ids"],
)
def test_swap_in_refuses_as_torch(change, message):
    params, opt = _adam(optim, lambda a: torch_compat.Parameter(jnp.asarray(a)))
    saved = opt.state_dict()
    if message != "requires initialized optimizer state.":
        for p in params:
            p.grad = jnp.ones(p.shape)
        opt.step()
        saved = opt.state_dict()
    change(saved, opt)
    with pytest.raises(RuntimeError) as info:
        with swap_in_optimizer_params_and_state(opt, {str(i): p for i, p in enumerate(params)}, saved):
            pass
    assert message in str(info.value)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]


# -- parameters_to_vector / vector_to_parameters ------------------------------------------------


def test_parameters_to_vector_and_back():
    a = torch_compat.Parameter(jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3))
    b = torch_compat.Parameter(jnp.array([7.0, 8.0], dtype=jnp.float64))
    vec = parameters_to_vector([a, b])
    assert vec.dtype == jnp.float64 and vec.tolist() == [0, 1, 2, 3, 4, 5, 7, 8]
    vector_to_parameters(jnp.arange(10.0, dtype=jnp.float32), [a, b])  # the tail is unused
    assert a.data.tolist() == [[0, 1, 2], [3, 4, 5]] and b.data.tolist() == [6, 7]
    assert b.dtype == jnp.float32  # the vector's dtype, as torch's param.data = ...


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda ps: parameters_to_vector([]), ValueError, "torch.cat(): expected a non-empty list of Tensors"),
        (lambda ps: vector_to_parameters([1.0], ps), TypeError, "expected torch.Tensor, but got: list"),
        (lambda ps: vector_to_parameters(jnp.ones(3), ps), RuntimeError,
         "shape '[2, 3]' is invalid for input of size 3"),
    ],
    ids=["empty", "not_array", "short"],
)
def test_vector_functions_refuse_as_torch(call, error, message):
    params = [torch_compat.Parameter(jnp.ones((2, 3)))]
    with pytest.raises(error) as info:
        call(params)
    assert str(info.value) == message


def test_vector_functions_match_torch_live():
    torch = pytest.importorskip("torch")
    from torch.nn.utils import parameters_to_vector as t_p2v, vector_to_parameters as t_v2p

    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s) for s in [(3, 2), (4,), ()]]
    ours = [torch_compat.Parameter(jnp.asarray(a)) for a in arrays]
    theirs = [torch.nn.Parameter(torch.tensor(a)) for a in arrays]
    np.testing.assert_array_equal(np.asarray(parameters_to_vector(ours)), t_p2v(theirs).detach().numpy())
    vec = rng.standard_normal(12)
    vector_to_parameters(jnp.asarray(vec), ours)
    t_v2p(torch.tensor(vec), theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(np.asarray(a.data), b.detach().numpy())
    for call in (lambda p2v, v2p, ps: p2v([]), lambda p2v, v2p, ps: v2p([1.0], ps)):
        with pytest.raises(Exception) as mine:
            call(parameters_to_vector, vector_to_parameters, ours)
        with pytest.raises(Exception) as torchs:
            call(t_p2v, t_v2p, theirs)
        assert (type(mine.value), str(mine.value)) == (type(torchs.value), str(torchs.value))

"""``torch_compat.optim.swa_utils`` against torch 2.13's numbers (golden file), without torch.

* every scenario of :mod:`swa_cases` (AveragedModel with each averaging function, with
  and without buffers, float32 and float64; SWALR annealing, resuming, chaining; torch's
  error messages) against ``tests/golden/swa_utils.npz``;
* the functional face (:func:`gradxform.swa_update`, :func:`gradxform.ema_update`) gives
  the averages AveragedModel keeps;
* state dicts: the layout, a round trip that continues identically, refused loads;
* what is refused here and why: calling an AveragedModel, ``update_bn``.
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import pytest

import gradxform
import make_golden_swa as mg
import swa_cases as sc
import torch_compat
from torch_compat import optim
from torch_compat.optim import swa_utils

SCENARIOS = sc.scenarios()


def _rtol(name: str) -> float:
    return 1e-6 if "float32" in name else 1e-12


def test_golden_file_covers_every_scenario():
    meta, runs = mg.read()
    assert meta["torch_version"].startswith(sc.TORCH_VERSION_PREFIX)
    assert sorted(runs) == sorted(SCENARIOS), "regenerate: python tests/make_golden_swa.py"


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_swa_utils_matches_torch_golden(name):
    _, runs = mg.read()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = SCENARIOS[name](sc.CompatBackend())
    sc.compare(name, ours, runs[name], rtol=_rtol(name))


def test_torch_names_and_signatures():
    assert swa_utils.__all__ == [
        "AveragedModel", "update_bn", "SWALR", "get_ema_multi_avg_fn", "get_swa_multi_avg_fn",
        "get_ema_avg_fn", "get_swa_avg_fn",
    ]
    import inspect

    assert list(inspect.signature(swa_utils.AveragedModel).parameters) == [
        "model", "device", "avg_fn", "multi_avg_fn", "use_buffers",
    ]
    assert list(inspect.signature(swa_utils.SWALR).parameters) == [
        "optimizer", "swa_lr", "anneal_epochs", "anneal_strategy", "last_epoch",
    ]
    assert optim.swa_utils is swa_utils


# -- the functional face ------------------------------------------------------------------------


def _model_and_values(seed=0, dtype="float64"):
    values = sc.model_values(seed, dtype)
    backend = sc.CompatBackend()
    return backend, backend.model(values[0]), values


@pytest.mark.parametrize(
    "make, functional",
    [
        (lambda: {}, lambda s, p: gradxform.swa_update(s, p)),
        (
            lambda: {"multi_avg_fn": swa_utils.get_ema_multi_avg_fn(0.8)},
            lambda s, p: gradxform.ema_update(s, p, decay=0.8),
        ),
        (
            lambda: {"avg_fn": swa_utils.get_ema_avg_fn(0.8)},
            lambda s, p: gradxform.ema_update(s, p, decay=0.8, lerp=False),
        ),
        (
            lambda: {"multi_avg_fn": swa_utils.get_swa_multi_avg_fn()},
            lambda s, p: gradxform.swa_update(s, p, lerp=True),
        ),
    ],
    ids=["swa", "ema_multi", "ema", "swa_multi"],
)
def test_functional_average_is_averaged_models(make, functional, request):
    backend, model, values = _model_and_values()
    swa = swa_utils.AveragedModel(model, **make())
    params = torch_compat.values({"0": model["0"]})
    state = gradxform.average_init(params)
    for k in range(1, sc.UPDATES + 1):
        model = backend.set_values(model, values[k])
        swa.update_parameters(model)
        state = functional(state, torch_compat.values({"0": model["0"]}))
    assert int(state.count) == int(swa.n_averaged) == sc.UPDATES
    # The lerp forms may differ in the last bit: XLA fuses lerp's multiply-add under jit
    # (swa_utils' functions are jitted; ema_update/swa_update ran op by op here).
    rtol = 1e-15 if request.node.callspec.id in ("ema_multi", "swa_multi") else 0
    for leaf in ("weight", "bias"):
        np.testing.assert_allclose(
            np.asarray(swa.module["0"][leaf].data), np.asarray(state.average["0"][leaf]), rtol=rtol, atol=0
        )


# -- AveragedModel ------------------------------------------------------------------------------


def test_module_is_a_copy_and_buffers_follow_the_model():
    backend, model, values = _model_and_values(seed=3)
    swa = swa_utils.AveragedModel(model)
    assert swa.module["0"]["weight"] is not model["0"]["weight"]
    assert [name for name, _ in swa.named_parameters()] == ["module.0.bias", "module.0.weight"]
    assert swa.parameters() == [swa.module["0"]["bias"], swa.module["0"]["weight"]]
    model = backend.set_values(model, values[1])
    model["0"]["weight"].data = model["0"]["weight"].data + 0  # the model moves on ...
    swa.update_parameters(model)
    model["0"]["weight"].data = jnp.zeros((3, 4))  # ... without touching the average
    assert not np.any(np.asarray(swa.module["0"]["weight"].data) == 0)
    # use_buffers=False: the buffers are the model's, copied at each update
    np.testing.assert_array_equal(np.asarray(swa.module["1"]["running_mean"]), values[1]["1.running_mean"])
    assert int(swa.module["1"]["count"]) == int(values[1]["1.count"])


def test_state_dict_layout_and_round_trip_continue_identically():
    backend, model, values = _model_and_values(seed=4)
    swa = swa_utils.AveragedModel(model, use_buffers=True)
    for k in (1, 2, 3):
        model = backend.set_values(model, values[k])
        swa.update_parameters(model)
    saved = swa.state_dict()
    assert list(saved) == ["n_averaged", "module.0.bias", "module.0.weight", "module.1.count", "module.1.running_mean"]
    assert saved["n_averaged"].dtype == np.int64 and int(saved["n_averaged"]) == 3
    other = swa_utils.AveragedModel(backend.model(values[0]), use_buffers=True)
    other.load_state_dict({k: np.asarray(v) for k, v in saved.items()})
    for k in (4, 5):
        model = backend.set_values(model, values[k])
        swa.update_parameters(model)
        other.update_parameters(model)
    for (name, a), (_, b) in zip(swa.state_dict().items(), other.state_dict().items()):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)


def test_load_state_dict_refuses_bad_keys_and_shapes_and_loads_nothing():
    _, model, _ = _model_and_values()
    swa = swa_utils.AveragedModel(model)
    saved = swa.state_dict()
    before = np.asarray(swa.module["0"]["bias"].data)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "module.0.bias"'):
        swa.load_state_dict({k: v for k, v in saved.items() if k != "module.0.bias"})
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "extra"'):
        swa.load_state_dict({**saved, "extra": np.zeros(1)})
    bad = {**saved, "module.0.bias": np.ones(3), "module.0.weight": np.zeros((4, 3))}
    with pytest.raises(RuntimeError, match=r"size mismatch for module.0.weight: copying a param with shape \(4, 3\)"):
        swa.load_state_dict(bad)
    np.testing.assert_array_equal(np.asarray(swa.module["0"]["bias"].data), before)


def test_update_with_another_tree_is_refused():
    _, model, _ = _model_and_values()
    swa = swa_utils.AveragedModel(model)
    with pytest.raises(ValueError, match="update_parameters: the model's tree"):
        swa.update_parameters({"0": model["0"]})


def test_both_averaging_functions_are_refused_as_torch():
    with pytest.raises(AssertionError, match="^Only one of avg_fn and multi_avg_fn should be provided$"):
        swa_utils.AveragedModel({}, avg_fn=swa_utils.get_swa_avg_fn(), multi_avg_fn=swa_utils.get_swa_multi_avg_fn())


def test_device_places_the_average():
    import jax

    swa = swa_utils.AveragedModel(torch_compat.as_parameters({"w": jnp.ones(2)}), device="cpu")
    assert swa.module["w"].data.devices() == {jax.devices("cpu")[0]}
    swa.update_parameters(torch_compat.as_parameters({"w": jnp.ones(2)}))
    assert int(swa.n_averaged) == 1


def test_calling_an_averaged_model_is_refused_with_what_to_write():
    swa = swa_utils.AveragedModel(torch_compat.as_parameters({"w": jnp.ones(2)}))
    text = r"not a module, so it cannot be called.*torch_compat.values\(swa_model.module\)"
    with pytest.raises(TypeError, match=text):
        swa(jnp.ones(2))
    with pytest.raises(TypeError, match="cannot be called"):
        swa.forward(jnp.ones(2))


def test_update_bn_is_refused_saying_why():
    """A tree of Parameters has no BatchNorm layers: refused (torch would silently do nothing)."""
    with pytest.raises(NotImplementedError, match=r"a flax nnx Module \(nnx.BatchNorm\).*gradxform.swa_update"):
        swa_utils.update_bn([jnp.ones(2)], torch_compat.as_parameters({"w": jnp.ones(2)}))


def test_update_bn_is_the_equal_average_of_the_batch_statistics_and_restores_the_modes():
    nnx = pytest.importorskip("flax.nnx")
    model = sc.nnx_model(nnx)
    model.norm.use_running_average = True  # eval mode before: restored after
    model.norm.mean[...] = jnp.full(3, 5.0)  # stale statistics: reset first
    rng = np.random.default_rng(0)
    batches = [jnp.asarray(rng.standard_normal((8, 4)), jnp.float32) for _ in range(5)]
    loader = [(x, jnp.zeros(8)) for x in batches]  # (input, target) pairs, as torch's loaders
    swa_utils.update_bn(loader, model)
    hidden = [np.asarray(model.linear(x), np.float64) for x in batches]
    np.testing.assert_allclose(np.asarray(model.norm.mean[...]), np.mean([h.mean(0) for h in hidden], 0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(model.norm.var[...]), np.mean([h.var(0) for h in hidden], 0), rtol=1e-5)
    assert model.norm.momentum == 0.9 and model.norm.use_running_average is True
    assert model.drop.deterministic is False  # as it was


def test_update_bn_without_batch_norm_leaves_the_model():
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    before = np.asarray(model.kernel[...])
    swa_utils.update_bn([jnp.ones((3, 2))], model)
    np.testing.assert_array_equal(np.asarray(model.kernel[...]), before)


def test_swa_multi_avg_fn_refuses_integer_arrays():
    with pytest.raises(RuntimeError, match="integer arrays"):
        swa_utils.get_swa_multi_avg_fn()([jnp.zeros(2, jnp.int32)], [jnp.ones(2, jnp.int32)], 1)


# -- SWALR --------------------------------------------------------------------------------------


def test_swalr_state_dict_leaves_out_the_function_and_load_restores_it():
    opt = optim.SGD([torch_compat.Parameter(jnp.zeros(1))], lr=1.0)
    sched = swa_utils.SWALR(opt, swa_lr=0.5, anneal_strategy="linear")
    saved = sched.state_dict()
    assert "anneal_func" not in saved and "optimizer" not in saved
    assert saved["_anneal_strategy"] == "linear" and saved["anneal_epochs"] == 10
    other = swa_utils.SWALR(optim.SGD([torch_compat.Parameter(jnp.zeros(1))], lr=1.0), swa_lr=0.5)
    other.load_state_dict(saved)
    assert other.anneal_func(0.25) == 0.25  # linear, not the constructor's cosine
    assert opt.param_groups[0]["swa_lr"] == 0.5


def test_swalr_get_lr_outside_step_warns_as_torch():
    sched = swa_utils.SWALR(optim.SGD([torch_compat.Parameter(jnp.zeros(1))], lr=1.0), swa_lr=0.5)
    with pytest.warns(UserWarning, match=r"please use `get_last_lr\(\)`"):
        sched.get_lr()


def test_update_from_a_tree_of_arrays():
    """A functional loop's parameters (arrays, the same tree) update the average too."""
    model = torch_compat.as_parameters({"w": jnp.array([1.0]), "b": jnp.array([2.0])})
    swa = swa_utils.AveragedModel(model)
    swa.update_parameters(torch_compat.values(model))
    swa.update_parameters({"w": jnp.array([3.0]), "b": jnp.array([4.0])})
    assert swa.module["w"].data.tolist() == [2.0] and swa.module["b"].data.tolist() == [3.0]
    assert isinstance(swa.module["w"], torch_compat.Parameter) and int(swa.n_averaged) == 2

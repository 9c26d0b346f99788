"""``torch_compat.optim.swa_utils`` against torch 2.13's ``torch.optim.swa_utils``, live.

Needs torch (skipped without it). Every :mod:`swa_cases` scenario run by both (bit for
bit, as measured: float32 and float64, every averaging function), and state dicts crossing
between the libraries both ways (AveragedModel and SWALR), then continuing identically.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import swa_cases as sc  # noqa: E402
from torch_compat.optim import swa_utils  # noqa: E402

SCENARIOS = sc.scenarios()


def test_torch_version_and_names():
    assert torch.__version__.startswith(sc.TORCH_VERSION_PREFIX)
    assert swa_utils.__all__ == torch.optim.swa_utils.__all__
    for name in ("AveragedModel", "SWALR", "update_bn"):
        theirs = inspect.signature(getattr(torch.optim.swa_utils, name))
        ours = inspect.signature(getattr(swa_utils, name))
        assert [(p.name, p.default) for p in ours.parameters.values()] == [
            (p.name, p.default) for p in theirs.parameters.values()
        ], name


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_swa_utils_matches_torch_live(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = SCENARIOS[name](sc.TorchBackend())
        ours = SCENARIOS[name](sc.CompatBackend())
    sc.compare(name, ours, theirs, rtol=0)


@pytest.mark.parametrize("torch_first", [True, False], ids=["torch_to_compat", "compat_to_torch"])
def test_averaged_model_state_dict_crosses_and_continues(torch_first):
    tb, cb = sc.TorchBackend(), sc.CompatBackend()
    values = sc.model_values(7, "float64")
    first, second = (tb, cb) if torch_first else (cb, tb)
    emas = {b.name: (lambda S: S.get_ema_multi_avg_fn(0.7)) for b in (tb, cb)}
    model = first.model(values[0])
    avg = first.S.AveragedModel(model, multi_avg_fn=emas[first.name](first.S), use_buffers=True)
    for k in (1, 2, 3):
        model = first.set_values(model, values[k])
        avg.update_parameters(model)
    saved = {k: first.numpy(v) if torch_first else np.asarray(v) for k, v in avg.state_dict().items()}
    other_model = second.model(values[0])
    other = second.S.AveragedModel(other_model, multi_avg_fn=emas[second.name](second.S), use_buffers=True)
    other.load_state_dict({k: torch.as_tensor(np.array(v)) for k, v in saved.items()} if not torch_first else saved)
    for k in (4, 5, 6):
        model = first.set_values(model, values[k])
        other_model = second.set_values(other_model, values[k])
        avg.update_parameters(model)
        other.update_parameters(other_model)
    a, b = avg.state_dict(), other.state_dict()
    assert sorted(a) == sorted(b)  # the same keys (torch's are in module order, ours in tree order)
    for key in a:
        np.testing.assert_array_equal(np.asarray(first.numpy(a[key]) if torch_first else a[key]),
                                      np.asarray(b[key] if torch_first else second.numpy(b[key])), err_msg=key)


@pytest.mark.parametrize("torch_first", [True, False], ids=["torch_to_compat", "compat_to_torch"])
def test_swalr_state_dict_crosses_and_continues(torch_first):
    tb, cb = sc.TorchBackend(), sc.CompatBackend()
    first, second = (tb, cb) if torch_first else (cb, tb)

    def build(B):
        opt = B.optim.SGD([{"params": [B.parameter()], "lr": 0.2}, {"params": [B.parameter()], "lr": 0.4}], lr=0.2)
        return opt, B.S.SWALR(opt, swa_lr=[0.05, 0.01], anneal_epochs=6)

    opt, sched = build(first)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(3):
            opt.step()
            sched.step()
        opt2, sched2 = build(second)
        opt2.load_state_dict(_plain(opt.state_dict()))
        sched2.load_state_dict(sched.state_dict())
        for _ in range(6):
            for o, s in ((opt, sched), (opt2, sched2)):
                o.step()
                s.step()
            assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in opt2.param_groups]
            assert sched.get_last_lr() == sched2.get_last_lr()


def _plain(state_dict):
    """An optimizer state dict with no per-parameter state (SGD before any gradient)."""
    return {"state": {}, "param_groups": [dict(g) for g in state_dict["param_groups"]]}


def test_update_bn_matches_torchs_on_a_batch_norm_model():
    """A flax nnx Linear -> BatchNorm and torch's Linear -> BatchNorm1d, the same weights and
    loader: the same running means; the variances differ only by flax's biased convention
    (torch's unbiased one times (m - 1) / m for batches of m)."""
    nnx = pytest.importorskip("flax.nnx")
    import jax.numpy as jnp

    model = sc.nnx_model(nnx)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3, momentum=0.1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(np.asarray(model.linear.kernel[...]).T))
        net[0].bias.copy_(torch.tensor(np.asarray(model.linear.bias[...])))
    rng = np.random.default_rng(1)
    m = 16
    batches = [rng.standard_normal((m, 4)).astype(np.float32) for _ in range(6)]
    torch.optim.swa_utils.update_bn([torch.tensor(x) for x in batches], net)
    swa_utils.update_bn([jnp.asarray(x) for x in batches], model)
    np.testing.assert_allclose(np.asarray(model.norm.mean[...]), net[1].running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(model.norm.var[...]), net[1].running_var.numpy() * (m - 1) / m, rtol=1e-5, atol=1e-6
    )
    assert net[1].momentum == 0.1 and model.norm.momentum == 0.9

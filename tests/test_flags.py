"""torch's implementation flags in torch_compat: ``foreach``, ``fused``, ``capturable``,
``differentiable`` (documented on each page of docs/optimizers/).

* ``foreach`` and ``fused`` select nothing (one implementation): the same numbers;
  torch's constructor checks on them are mirrored (tests/bad_input_cases.py);
* ``capturable=True``: every step already keeps its state on the device, so nothing
  changes, except that CPU parameters are refused at ``step()`` with torch's
  AssertionError text (torch refuses them outside its fused path), before anything changes;
* ``differentiable=True``: a UserWarning, once per class, pointing to the gradxform
  transformations, which ``jax.grad`` differentiates through (shown here).
"""

from __future__ import annotations

import inspect
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform
import torch_compat
from torch_compat import optim
from torch_compat.optim import _from_spec

CAPTURABLE = [n for n in optim.__all__ if isinstance(getattr(optim, n), type)
              and "capturable" in inspect.signature(getattr(optim, n)).parameters]
DIFFERENTIABLE = [n for n in optim.__all__ if isinstance(getattr(optim, n), type)
                  and "differentiable" in inspect.signature(getattr(optim, n)).parameters]


def _param():
    p = torch_compat.Parameter(jnp.array([1.0, -2.0]))
    p.grad = jnp.array([0.5, 0.25])
    return p


def test_the_flag_lists_are_torchs():
    assert sorted(CAPTURABLE) == ["ASGD", "Adadelta", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Rprop"]
    assert sorted(DIFFERENTIABLE) == sorted(CAPTURABLE + ["Adagrad", "SGD"])


@pytest.mark.parametrize("name", CAPTURABLE)
def test_capturable_on_cpu_is_refused_as_torch_and_changes_nothing(name):
    p = _param()
    opt = getattr(optim, name)([p], lr=0.1, capturable=True)
    with pytest.raises(AssertionError) as info:
        opt.step()
    assert str(info.value) == _from_spec.capturable_message(name)
    assert "If capturable=True, params" in str(info.value) and "'cuda'" in str(info.value)
    assert p.data.tolist() == [1.0, -2.0] and not opt.state


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_capturable_with_fused_runs_as_in_torch(name):
    p, q = _param(), _param()
    getattr(optim, name)([p], lr=0.1, capturable=True, fused=True).step()
    getattr(optim, name)([q], lr=0.1).step()
    np.testing.assert_array_equal(np.asarray(p.data), np.asarray(q.data))


@pytest.mark.parametrize("name", CAPTURABLE)
def test_capturable_messages_are_torchs_live(name):
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.ones(2))
    opt = getattr(torch.optim, name)([p], lr=0.1, capturable=True)
    p.grad = torch.ones(2)
    with pytest.raises(AssertionError) as info:
        opt.step()
    assert str(info.value) == _from_spec.capturable_message(name)


def test_differentiable_warns_once_per_class_and_changes_no_number():
    for name in ("SGD", "Adam"):
        _from_spec.WARNED.discard((name, "differentiable"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a, b, c = _param(), _param(), _param()
        opt_a = optim.Adam([a], lr=0.1, differentiable=True)
        opt_b = optim.Adam([b], lr=0.1, differentiable=True)  # the same class: no second warning
        optim.SGD([_param()], lr=0.1, differentiable=True)
        optim.Adam([c], lr=0.1)
    texts = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(texts) == 2, texts
    assert texts[0].startswith("Adam(differentiable=True) has no effect in torch_compat")
    assert "gradxform.adam inside jax.grad" in texts[0]
    assert texts[1].startswith("SGD(differentiable=True)") and "gradxform.sgd" in texts[1]
    opt_c = optim.Adam([c], lr=0.1)
    for opt in (opt_a, opt_b, opt_c):
        opt.step()
    assert a.data.tolist() == b.data.tolist() == c.data.tolist()


@pytest.mark.parametrize("flags", [{"foreach": True}, {"fused": True}, {"foreach": False, "fused": None}])
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "Adagrad"])
def test_foreach_and_fused_give_the_same_numbers(name, flags):
    p, q = _param(), _param()
    kwargs = {"momentum": 0.9} if name == "SGD" else {}
    one, other = getattr(optim, name)([p], lr=0.1, **kwargs, **flags), getattr(optim, name)([q], lr=0.1, **kwargs)
    for _ in range(3):
        one.step()
        other.step()
    np.testing.assert_array_equal(np.asarray(p.data), np.asarray(q.data))


def test_differentiating_through_steps_is_the_cores_meaning():
    """What torch's differentiable=True is for: gradients through optimizer steps, here
    with jax.grad through gradxform.adam's init and update (learning rate and initial
    parameters), checked against central finite differences."""

    def loss(lr, w0):
        tx = gradxform.adam(lr)
        f = lambda w: jnp.sum((w - 3.0) ** 2 * jnp.arange(1.0, 4.0))  # noqa: E731
        w, state = w0, tx.init(w0)
        for _ in range(3):
            updates, state = tx.update(jax.grad(f)(w), state, w)
            w = gradxform.apply_updates(w, updates)
        return f(w)

    w0 = jnp.array([0.5, -1.0, 2.0], jnp.float64)
    d_lr, d_w0 = jax.grad(loss, argnums=(0, 1))(0.1, w0)
    eps = 1e-6
    assert float(d_lr) == pytest.approx(float((loss(0.1 + eps, w0) - loss(0.1 - eps, w0)) / (2 * eps)), rel=1e-6)
    for i in range(3):
        e = jnp.zeros(3).at[i].set(eps)
        numeric = (loss(0.1, w0 + e) - loss(0.1, w0 - e)) / (2 * eps)
        assert float(d_w0[i]) == pytest.approx(float(numeric), rel=1e-5, abs=1e-8)

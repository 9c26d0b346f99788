"""``Parameter``'s torch conveniences (``item``, ``tolist``, ``numpy``, ``detach``, ``numel``,
``size``, ``dim``, ``requires_grad``) and what a Parameter does in JAX maths (refused, each
error saying what to write: operators in test_compat_errors.py, jnp functions and jit here).
Live comparisons with torch where torch is installed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torch_compat
from torch_compat import optim


def test_item_tolist_numel_size_dim():
    p = torch_compat.Parameter(jnp.arange(6.0).reshape(2, 3))
    assert p.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert (p.numel(), p.size(), p.size(1), p.dim(), p.ndim) == (6, (2, 3), 3, 2, 2)
    one = torch_compat.Parameter(jnp.array([[2.5]]))
    assert one.item() == 2.5 and isinstance(one.item(), float)
    for data, n in ((jnp.ones(3), 3), (jnp.ones(0), 0)):
        with pytest.raises(RuntimeError) as info:
            torch_compat.Parameter(data).item()
        assert str(info.value) == f"a Tensor with {n} elements cannot be converted to Scalar"


def test_numpy_is_refused_while_requires_grad_and_detach_is_a_copy():
    p = torch_compat.Parameter(jnp.array([1.0, 2.0]))
    with pytest.raises(RuntimeError) as info:
        p.numpy()
    assert str(info.value) == "Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead."
    d = p.detach()
    assert isinstance(d, torch_compat.Parameter) and d.requires_grad is False and d.grad is None
    np.testing.assert_array_equal(d.numpy(), [1.0, 2.0])  # what torch's message says to write
    # a step replaces (donates) p's array; the detached copy keeps the value it had
    opt = optim.SGD([p], lr=1.0)
    p.grad = jnp.ones(2)
    opt.step()
    assert p.tolist() == [0.0, 1.0] and d.tolist() == [1.0, 2.0]
    out = d.numpy()
    out[0] = 9.0  # a writable copy
    assert d.tolist() == [1.0, 2.0]


def test_requires_grad_and_integer_parameters():
    p = torch_compat.Parameter(jnp.array([1, 2]), requires_grad=False)
    assert p.requires_grad is False and p.numpy().tolist() == [1, 2] and p.detach().tolist() == [1, 2]


@pytest.mark.parametrize(
    "call",
    [lambda p: jnp.sin(p), lambda p: jax.jit(lambda a: a * 2)(p), lambda p: jnp.sum(p)],
    ids=["jnp.sin", "jit", "jnp.sum"],
)
def test_jax_functions_refuse_a_parameter_saying_what_to_write(call):
    p = torch_compat.Parameter(jnp.ones(3))
    with pytest.raises(TypeError) as info:
        call(p)
    assert "use .data for the array" in str(info.value) and "not a valid JAX type" in str(info.value)
    assert np.all(np.isfinite(np.asarray(call(p.data))))  # what it says to write


def test_explicit_conversions_read_the_value():
    p = torch_compat.Parameter(jnp.array([1.0, 2.0]))
    assert jnp.asarray(p).tolist() == [1.0, 2.0] and np.asarray(p).tolist() == [1.0, 2.0]


def test_conveniences_match_torch_live():
    torch = pytest.importorskip("torch")
    values = np.arange(6.0).reshape(2, 3)
    ours, theirs = torch_compat.Parameter(jnp.asarray(values)), torch.nn.Parameter(torch.tensor(values))
    assert ours.tolist() == theirs.tolist()
    assert (ours.numel(), tuple(ours.size()), ours.size(0), ours.dim()) == (
        theirs.numel(), tuple(theirs.size()), theirs.size(0), theirs.dim())
    np.testing.assert_array_equal(ours.detach().numpy(), theirs.detach().numpy())
    assert ours.detach().requires_grad == theirs.detach().requires_grad
    for call in (lambda p: p.numpy(), lambda p: p.item()):
        with pytest.raises(RuntimeError) as mine:
            call(ours)
        with pytest.raises(RuntimeError) as torchs:
            call(theirs)
        assert str(mine.value) == str(torchs.value)
    one = np.array([3.25])
    assert torch_compat.Parameter(jnp.asarray(one)).item() == torch.nn.Parameter(torch.tensor(one)).item()

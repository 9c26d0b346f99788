"""Helpers for JAX users: pytrees of arrays as Parameters, and ``backward`` for them."""

from __future__ import annotations

import inspect
import weakref
from typing import Any, Callable

import jax
import jax.numpy as jnp

from torch_compat._parameter import Parameter


def _is_parameter(x) -> bool:
    return isinstance(x, Parameter)


def as_parameters(tree: Any) -> Any:
    """The same pytree with every array leaf wrapped in a :class:`Parameter`.

    This is the ``model`` of the torch world: pass ``parameters(tree)`` to an optimizer,
    then read the trained values back with :func:`values`.

    Example:
      >>> import jax.numpy as jnp
      >>> import torch_compat
      >>> model = torch_compat.as_parameters({"w": jnp.ones((2, 2)), "b": jnp.zeros(2)})
      >>> [name for name, _ in torch_compat.named_parameters(model)]
      ['b', 'w']
    """
    return jax.tree.map(lambda x: x if _is_parameter(x) else Parameter(x), tree, is_leaf=_is_parameter)


def parameters(tree: Any) -> list[Parameter]:
    """The Parameters of a tree, in ``jax.tree`` order: ``model.parameters()``."""
    return [p for p in jax.tree.leaves(tree, is_leaf=_is_parameter) if _is_parameter(p)]


def _name(path) -> str:
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return ".".join(parts)


def named_parameters(tree: Any) -> list[tuple[str, Parameter]]:
    """``(name, Parameter)`` pairs, named by their path (``"layers.0.w"``): ``model.named_parameters()``.

    The pairs can be given to an optimizer directly, as torch 2.x accepts.
    """
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_parameter)[0]
    return [(_name(path) or "param", p) for path, p in flat if _is_parameter(p)]


def values(tree: Any) -> Any:
    """The tree of current arrays (``.data``) of a tree of Parameters."""
    return jax.tree.map(lambda p: p.data if _is_parameter(p) else p, tree, is_leaf=_is_parameter)


# Compiled value-and-gradient functions, per loss function (per object and function for a
# bound method). Each holds its loss function weakly, so the cache keeps no loss function,
# nor what it refers to (a model, a batch), alive: an entry goes with its loss function.
_GRAD_FNS: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def _value_and_grad(loss_fn: Callable, has_aux: bool) -> Callable:
    if inspect.ismethod(loss_fn):  # a new bound-method object at each access: key on its parts
        owner, key, make_ref = loss_fn.__self__, (loss_fn.__func__, has_aux), weakref.WeakMethod
    else:
        owner, key, make_ref = loss_fn, has_aux, weakref.ref
    try:
        table = _GRAD_FNS.setdefault(owner, {})
    except TypeError:  # not weakly referenceable, or not hashable: compiled for this call only
        return jax.jit(jax.value_and_grad(loss_fn, has_aux=has_aux))
    if key not in table:
        ref = make_ref(loss_fn)

        def weak_loss_fn(*args, **kwargs):
            return ref()(*args, **kwargs)  # called while tracing, when loss_fn is alive

        table[key] = jax.jit(jax.value_and_grad(weak_loss_fn, has_aux=has_aux))
    return table[key]


def backward(loss_fn: Callable, tree: Any, *args, has_aux: bool = False, **kwargs):
    """Computes ``loss_fn(values(tree), *args)`` and accumulates its gradient into ``.grad``.

    This is ``loss.backward()``: gradients add to existing ``.grad`` values (call the
    optimizer's ``zero_grad()`` first, as in torch). For complex parameters the gradient
    is torch's (``df/dx + i df/dy``), the conjugate of what ``jax.grad`` returns. The value and gradient are computed
    by one jit-compiled ``jax.value_and_grad``, cached per ``loss_fn``.

    Args:
      loss_fn: ``loss_fn(params_tree, *args, **kwargs) -> scalar`` (or ``(scalar, aux)``
        with ``has_aux=True``).
      tree: the tree of Parameters (from :func:`as_parameters`).
      *args, **kwargs: passed to ``loss_fn`` (a batch, for instance).
      has_aux: ``loss_fn`` returns ``(loss, aux)``.

    Returns:
      The loss (a JAX scalar), or ``(loss, aux)``.

    Example:
      >>> import jax.numpy as jnp
      >>> import torch_compat
      >>> model = torch_compat.as_parameters({"w": jnp.array([1.0, 2.0])})
      >>> loss = torch_compat.backward(lambda p: jnp.sum(p["w"] ** 2), model)
      >>> float(loss), model["w"].grad.tolist()
      (5.0, [2.0, 4.0])
    """
    grad_fn = _value_and_grad(loss_fn, has_aux)
    out, grads = grad_fn(values(tree), *args, **kwargs)
    leaves = jax.tree.leaves(tree, is_leaf=_is_parameter)
    grad_leaves = jax.tree.structure(values(tree)).flatten_up_to(grads)
    for p, g in zip(leaves, grad_leaves):
        if jnp.iscomplexobj(g):
            g = jnp.conj(g)  # torch's convention: df/dx + i df/dy (jax.grad gives the conjugate)
        if _is_parameter(p) and p.requires_grad:
            p.grad = g if p.grad is None else p.grad + g
    return out

"""Hyperparameters that live in the optimizer state.

Every gradxform optimizer (``gradxform.adam(...)`` and the others) keeps its float
hyperparameters in its state as scalar arrays, in an :class:`InjectHyperparamsState`.
Changing them between steps (by hand with :func:`set_hyperparams`, or by a schedule)
therefore changes only array *values*: a jitted ``update`` is never recompiled.

A hyperparameter given as a callable is a schedule: it is called with the number of
updates done so far (an int32 array, 0 at the first update) and its value is written to
the state before the update uses it.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _numerics, _treecheck
from gradxform.base import GradientTransformation


class InjectHyperparamsState(NamedTuple):
    """State of a transformation built by :func:`inject_hyperparams`.

    Attributes:
      count: int32 ``[]``, the number of updates done so far (the schedules' step).
      hyperparams: ``dict[str, pytree]`` of float scalar arrays (``[]``, default float
        dtype), the values used by the most recent update (or by ``init``).
      inner_state: the state of the transformation built from them.
    """

    count: jax.Array
    hyperparams: dict[str, Any]
    inner_state: Any


def _is_schedule(leaf) -> bool:
    return callable(leaf)


def _check_scalar(value, what: str) -> None:
    # Checked while tracing (shapes are static): a value of shape (1,) would broadcast a
    # 0-d parameter's update to (1,), and apply_updates would reshape the parameter.
    if jnp.ndim(value) != 0:
        raise ValueError(
            f"{what} has shape {tuple(jnp.shape(value))}: a hyperparameter must be a scalar "
            "(shape ()); another shape would broadcast the updates, and so the parameters"
        )


def _value(leaf, count, name: str) -> jax.Array:
    if _is_schedule(leaf):
        leaf = leaf(count)
        _check_scalar(leaf, f"the value returned by the schedule of hyperparameter {name!r}")
    else:
        _check_scalar(leaf, f"hyperparameter {name!r}")
    # A copy: the state must not hold the caller's array (a learning rate given as an
    # array, or one a schedule returns), which donating the state would delete, and two
    # hyperparameters given the same array must not share a buffer.
    return jnp.array(leaf, dtype=_numerics.hyper_dtype(), copy=True)


def inject_hyperparams(
    build: Callable[..., GradientTransformation], /, **hyperparams: Any
) -> GradientTransformation:
    """Builds ``build(**hyperparams)`` with the hyperparameters held in the state.

    Args:
      build: a function of the hyperparameters that returns a transformation. It is
        called with scalar arrays (possibly traced), and must not depend on their
        values in Python control flow.
      **hyperparams: each a float, a scalar array, a schedule (``count -> value``,
        returning a scalar), or a tuple of those (``betas=(0.9, 0.999)``). ``None``
        leaves are passed through.

    Returns:
      A transformation with :class:`InjectHyperparamsState`. Its ``update`` refuses,
      with a ``ValueError`` naming the offending path, updates whose tree, shapes or
      dtype kinds differ from ``params`` (or, without ``params``, from the per-parameter
      buffers of the state); the check is made while tracing and costs nothing at run
      time.

    Raises:
      ValueError: for a hyperparameter that is not a scalar (shape ``()``): a constant
        at once, a schedule's value when ``init`` or ``update`` is traced, a value held
        in the state (a restored state) when ``update`` is traced. A value of shape
        ``(1,)`` would otherwise broadcast a 0-d parameter's update, and
        ``apply_updates`` would silently reshape the parameter.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform
      >>> tx = gradxform.inject_hyperparams(gradxform.scale, step_size=lambda n: -1.0 / (n + 1))
      >>> state = tx.init(jnp.zeros(1))
      >>> for _ in range(2):
      ...     u, state = tx.update(jnp.ones(1), state)
      >>> u.tolist(), float(state.hyperparams["step_size"])
      ([-0.5], -0.5)
    """
    spec = dict(hyperparams)
    for name, leaves in spec.items():  # the constants now; the schedules' values when traced
        for leaf in jax.tree.leaves(leaves):
            if not _is_schedule(leaf):
                _check_scalar(leaf, f"hyperparameter {name!r}")

    def current(count, stored=None):
        values = {}
        for name, leaves in spec.items():
            if stored is None:
                values[name] = jax.tree.map(lambda leaf: _value(leaf, count, name), leaves)
            else:
                _treecheck.check_scalars(stored[name], f"the state's hyperparameter {name!r}")
                values[name] = jax.tree.map(
                    lambda leaf, old: _value(leaf, count, name) if _is_schedule(leaf) else old,
                    leaves,
                    stored[name],
                )
        return values

    def init(params):
        count = jnp.zeros([], jnp.int32)
        values = current(count)
        # Scalars live where the parameters live (replicated over their devices).
        count, values = _numerics.replicate_over_params((count, values), params)
        return InjectHyperparamsState(count, values, build(**values).init(params))

    def update(updates, state, params=None, **extra_args):
        # Checked while tracing (structures, shapes and dtypes are static): free at run time.
        _treecheck.check_scalars(state.count, "the state's count")
        if params is not None:
            _treecheck.check_updates(updates, params)
        else:
            _treecheck.check_against_state(updates, state.inner_state)
        values = current(state.count, state.hyperparams)
        updates, inner_state = build(**values).update(
            updates, state.inner_state, params, **extra_args
        )
        count = state.count + jnp.ones([], state.count.dtype)
        return updates, InjectHyperparamsState(count, values, inner_state)

    return GradientTransformation(init, update)


def _find(state, path=()):
    """Yields ``(path, InjectHyperparamsState)`` pairs found in nested tuples/lists."""
    if isinstance(state, InjectHyperparamsState):
        yield path, state
    elif isinstance(state, (tuple, list)):
        for i, sub in enumerate(state):
            yield from _find(sub, path + (i,))


def _only(state) -> tuple[tuple, InjectHyperparamsState]:
    found = list(_find(state))
    if not found:
        raise ValueError(
            "this state holds no hyperparameters: build the transformation with a "
            "gradxform optimizer (gradxform.adam, ...) or gradxform.inject_hyperparams"
        )
    if len(found) > 1:
        raise ValueError(
            f"this state holds {len(found)} sets of hyperparameters (at positions "
            f"{[p for p, _ in found]}); pass the sub-state you mean"
        )
    return found[0]


def get_hyperparams(state) -> dict[str, Any]:
    """The hyperparameters of an optimizer state, as a ``dict`` of scalar arrays.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> state = gradxform.adam(1e-3).init(jnp.zeros(3))
      >>> float(gradxform.get_hyperparams(state)["learning_rate"])
      0.001
    """
    return dict(_only(state)[1].hyperparams)


def _replace_at(state, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    items = list(state)
    items[head] = _replace_at(items[head], rest, new)
    if isinstance(state, list):
        return items
    if hasattr(state, "_fields"):
        return type(state)(*items)
    return tuple(items)


def set_hyperparams(state, **values) -> Any:
    """Returns ``state`` with some hyperparameters replaced.

    Values keep the stored dtype and structure, so a jitted update is not recompiled.
    A hyperparameter that follows a schedule is recomputed at the next update.

    Raises:
      KeyError: for a name the optimizer does not have.
      ValueError: for a value whose structure differs (``betas`` needs two values).

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> state = gradxform.sgd(0.1).init(jnp.zeros(3))
      >>> state = gradxform.set_hyperparams(state, learning_rate=0.01)
      >>> float(gradxform.get_hyperparams(state)["learning_rate"])
      0.01
    """
    path, found = _only(state)
    hyperparams = dict(found.hyperparams)
    for name, value in values.items():
        if name not in hyperparams:
            raise KeyError(
                f"unknown hyperparameter {name!r}; this optimizer has {sorted(hyperparams)}"
            )
        old = hyperparams[name]
        old_leaves, treedef = jax.tree.flatten(old)
        new_leaves = jax.tree.leaves(value)
        if len(new_leaves) != len(old_leaves):
            raise ValueError(
                f"{name} has {len(old_leaves)} value(s), got {len(new_leaves)}: {value!r}"
            )
        hyperparams[name] = treedef.unflatten(
            [jnp.array(n, dtype=o.dtype, copy=True).reshape(o.shape) for n, o in zip(new_leaves, old_leaves)]
        )
    return _replace_at(state, path, found._replace(hyperparams=hyperparams))

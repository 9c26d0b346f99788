"""Core types of gradxform: ``GradientTransformation``, ``chain`` and ``apply_updates``.

A gradient transformation is a pair of pure functions:

* ``init(params) -> state`` builds the optimizer state for a pytree of parameters;
* ``update(updates, state, params=None, **extra_args) -> (updates, state)`` turns
  gradients (or the output of a previous transformation) into new updates.

The protocol is the one optax uses, so gradxform and optax transformations compose in
either direction.

Every gradxform transformation also guarantees, for the standard training step:

* **Empty trees.** Updates without leaves (``{}``, ``[]``, ``None``, ``{"a": None}``)
  come back as they are, with the state unchanged and no ``params`` needed, as in optax.
* **Donation.** No two leaves of a state share a buffer, and none is a buffer of the
  parameters or of an array passed in as a hyperparameter, so
  ``jax.jit(step, donate_argnums=(0, 1))`` can donate the parameters and the state.
* **Checked state.** A state buffer whose shape differs from its parameter's (a
  restored state of another model, say) is refused with a ``ValueError`` naming the path,
  when ``update`` is traced, instead of being broadcast into the parameter; so is a
  hyperparameter (given, restored or returned by a schedule) that is not a scalar.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

Params = Any
"""A pytree of arrays."""
Updates = Any
"""A pytree of arrays with the structure of ``Params``."""
OptState = Any
"""A pytree of arrays (usually NamedTuples) holding an optimizer's state."""
Schedule = Callable[[jax.Array], jax.Array]
"""A function from the step count (an integer array) to a value."""


class _InitUpdate(NamedTuple):
    """The two fields of a transformation (the base class where optax is not installed)."""

    init: Callable[[Params], OptState]
    update: Callable[..., tuple[Updates, OptState]]


try:  # optax is optional; where it is installed, gradxform speaks its extra-arguments protocol
    from optax import GradientTransformationExtraArgs as _Base
except ImportError:  # pragma: no cover - exercised in a venv without optax
    _Base = _InitUpdate


class GradientTransformation(_Base):
    """A pure ``(init, update)`` pair (a NamedTuple with the fields ``init`` and ``update``).

    Where optax is installed this class derives from ``optax.GradientTransformationExtraArgs``,
    so optax's combinators (``optax.chain``, ``multi_transform``, ``masked``,
    ``MultiSteps``, ``inject_hyperparams``) pass extra keyword arguments (``value=``,
    ``value_fn=``) down to gradxform's transformations instead of dropping them.

    Attributes:
      init: ``init(params) -> state``.
      update: ``update(updates, state, params=None, **extra_args) -> (updates, state)``.
        Extra keyword arguments (for example ``value=`` for reduce-on-plateau) are passed
        down a ``chain`` to every transformation that accepts them.

    Example:
      >>> import gradxform, optax
      >>> isinstance(gradxform.sgd(0.1), optax.GradientTransformationExtraArgs)
      True
    """

    __slots__ = ()


class EmptyState(NamedTuple):
    """The state of a stateless transformation."""


def identity() -> GradientTransformation:
    """A transformation that returns its updates unchanged."""

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        return updates, state

    return GradientTransformation(init, update)


def _negative_zero(u) -> jax.Array:
    # -0.0 is the additive identity of every float, -0.0 included (+0.0 would turn a -0.0
    # parameter into +0.0), so apply_updates leaves the parameters bit for bit unchanged.
    dtype = jnp.dtype(u.dtype)
    fill = complex(-0.0, -0.0) if jnp.issubdtype(dtype, jnp.complexfloating) else -0.0
    return jnp.full(jnp.shape(u), fill, dtype)


def _update_or_hold(run, inner: GradientTransformation, updates, inner_state, params, extra_args: dict,
                    prepare: Callable = lambda updates: updates):
    """``inner.update(prepare(updates), inner_state, params, **extra_args)`` where ``run``
    (a boolean scalar, possibly traced) holds; otherwise ``-0.0`` updates of the same
    structure and ``inner_state`` kept, cast to the dtypes the update would give. One
    ``lax.cond``: a held update runs neither ``prepare`` nor ``inner``.
    (``skip_non_finite`` and ``accumulate`` hold their inner transformation this way.)"""

    def apply(_):
        if _accepts_extra_args(inner.update):
            return inner.update(prepare(updates), inner_state, params, **extra_args)
        return inner.update(prepare(updates), inner_state, params)

    out_updates, out_inner = jax.eval_shape(apply, None)

    def hold(_):
        kept = jax.tree.map(lambda old, new: jnp.asarray(old).astype(new.dtype), inner_state, out_inner)
        return jax.tree.map(_negative_zero, out_updates), kept

    return jax.lax.cond(run, apply, hold, None)


def _accepts_extra_args(update: Callable) -> bool:
    """Whether ``update`` takes ``**extra_args`` (gradxform and optax's ExtraArgs do)."""
    try:
        signature = inspect.signature(update)
    except (TypeError, ValueError):
        return True
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Applies transformations one after the other.

    Any object with ``init`` and ``update`` attributes works, optax transformations
    included. Extra keyword arguments given to ``update`` reach the transformations whose
    ``update`` accepts ``**extra_args``; plain optax transformations are called without them.

    Args:
      *transforms: the transformations, applied left to right.

    Returns:
      A transformation whose state is the tuple of the inner states.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.chain(gradxform.scale(2.0), gradxform.scale(-0.5))
      >>> updates, _ = tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.zeros(2)}))
      >>> updates["w"].tolist()
      [-1.0, -1.0]
    """
    accepts = tuple(_accepts_extra_args(t.update) for t in transforms)

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(updates, state, params=None, **extra_args):
        if len(state) != len(transforms):
            raise ValueError(
                f"chain of {len(transforms)} transformations got a state with "
                f"{len(state)} entries"
            )
        new_state = []
        for transform, inner_state, takes_extra in zip(transforms, state, accepts):
            if takes_extra:
                updates, inner_state = transform.update(updates, inner_state, params, **extra_args)
            else:
                updates, inner_state = transform.update(updates, inner_state, params)
            new_state.append(inner_state)
        return updates, tuple(new_state)

    return GradientTransformation(init, update)


def apply_updates(params: Params, updates: Updates) -> Params:
    """Adds ``updates`` to ``params``, keeping each parameter's dtype.

    Updates of low-precision (bfloat16, float16) parameters are computed in float32 by
    gradxform's optimizers; the sum is rounded once, to the parameter's dtype.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> p = gradxform.apply_updates(jnp.ones(2, jnp.bfloat16), jnp.full(2, 0.5))
      >>> p.dtype, p.tolist()
      (dtype(bfloat16), [1.5, 1.5])
    """

    def apply(p, u):
        if p is None:
            return None
        p = jnp.asarray(p)
        return jnp.asarray(p + u).astype(p.dtype)

    return jax.tree.map(apply, params, updates, is_leaf=lambda x: x is None)

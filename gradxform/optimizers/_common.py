"""Pieces shared by the optimizer aliases: validation and the standard chain."""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import transforms
from gradxform.base import GradientTransformation, chain
from gradxform.hyperparams import inject_hyperparams


def concrete(value: Any) -> float | None:
    """``value`` as a float when it is known now (not a schedule, not traced), else None."""
    if callable(value) or value is None:
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if not (hasattr(value, "dtype") and hasattr(value, "shape")) or not jnp.issubdtype(value.dtype, jnp.number):
        return None  # not a number: check_hyperparams refuses it
    try:
        array = jnp.asarray(value)
        if array.size != 1:
            return None
        return float(array.reshape(()))
    except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def is_zero(value: Any) -> bool:
    """True when ``value`` is the Python number 0 (so a feature can be left out).

    Only a Python (or numpy scalar) number counts: an array is never "zero" here, even a
    concrete one. The same hyperparameter reaches a transformation as a concrete array at
    ``init`` and as a traced one under ``jax.jit`` (``optax.inject_hyperparams``, or
    :func:`gradxform.set_hyperparams` then an eager ``update``), and the state's structure
    must not depend on which.
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == 0


def without_zeros(hyperparams: dict[str, Any], *names: str) -> dict[str, Any]:
    """Drops the named hyperparameters whose value is the Python number 0.

    A feature whose coefficient is the number 0 (weight decay, momentum) is left out of
    the transformation, as torch skips it: ``update`` then needs no ``params`` and keeps
    no buffer for it. The hyperparameter is then not in the state, so
    ``set_hyperparams`` refuses it loudly rather than silently changing nothing. A value
    given as an array (a live hyperparameter, which may be traced) keeps the feature.
    """
    return {k: v for k, v in hyperparams.items() if not (k in names and is_zero(v))}


# Hyperparameters given as a fixed number of values; every other one is a single value.
SEQUENCES = {"betas": 2, "etas": 2, "step_sizes": 2, "ns_coefficients": 3}


def _checked_value(name: str, value: Any, nullable: bool = False) -> Any:
    """One hyperparameter value: a schedule, a traced value, a real number or a real
    1-element array (returned as a scalar array). Anything else is a ``ValueError``."""
    if callable(value) or isinstance(value, jax.core.Tracer):
        return value
    if value is None and nullable:
        return value
    if isinstance(value, numbers.Real):
        if math.isnan(value):
            raise ValueError(f"{name} is NaN")
        return value
    if hasattr(value, "dtype") and hasattr(value, "shape") and not isinstance(value, (str, bytes)):
        dtype = jnp.dtype(value.dtype)
        if (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)) and jnp.size(value) == 1:
            if math.isnan(float(np.asarray(value).reshape(()))):
                raise ValueError(f"{name} is NaN")
            return jnp.reshape(value, ())
    raise ValueError(
        f"{name} must be a real number, a real 1-element array or a schedule, got {value!r}"
    )


def check_sequence(value: Any, name: str, length: int) -> None:
    """Raises ``ValueError`` unless ``value`` is a tuple or list of ``length`` values."""
    if not isinstance(value, (tuple, list)) or len(value) != length:
        raise ValueError(f"{name} must be a sequence of {length} values, got {value!r}")


def check_hyperparams(hyperparams: dict[str, Any], sequences=None, nullable=()) -> dict[str, Any]:
    """Refuses hyperparameters of the wrong kind: strings, ``None``, complex numbers, a
    sequence where one value is expected (``eps=(1e-8, 1e-8)``) or a sequence of the wrong
    length (``betas=(0.9,)``). Values torch's own checks concern (``lr >= 0``, ...) are
    checked by each alias; this is the check of their form, shared by all of them.

    Args:
      hyperparams: name -> value.
      sequences: name -> length, for the alias's sequence options beyond
        :data:`SEQUENCES` (Adafactor's ``eps`` pair).
      nullable: the names (``"eps[0]"`` for an element) that may be ``None``.

    Returns the hyperparameters with 1-element arrays made scalars.
    """
    sequences = {**SEQUENCES, **(sequences or {})}
    out = {}
    for name, value in hyperparams.items():
        if name in sequences:
            check_sequence(value, name, sequences[name])
            out[name] = tuple(
                _checked_value(f"{name}[{i}]", v, nullable=f"{name}[{i}]" in nullable) for i, v in enumerate(value)
            )
        else:
            out[name] = _checked_value(name, value, nullable=name in nullable)
    return out


def inject(
    build, /, *, optional=("weight_decay",), sequences=None, nullable=(), **hyperparams
) -> GradientTransformation:
    """:func:`inject_hyperparams` after :func:`check_hyperparams` and :func:`without_zeros`
    of the ``optional`` ones."""
    hyperparams = check_hyperparams(hyperparams, sequences, nullable)
    return inject_hyperparams(build, **without_zeros(hyperparams, *optional))


def standard_chain(
    direction: GradientTransformation,
    *,
    learning_rate,
    weight_decay=None,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> GradientTransformation:
    """torch's usual shape of a step: maximize, L2 or decoupled decay, rule, ``-lr``."""
    parts = []
    if maximize:
        parts.append(transforms.negate())
    if weight_decay is not None and not is_zero(weight_decay) and not decoupled_weight_decay:
        parts.append(transforms.add_decayed_weights(weight_decay))
    parts.append(direction)
    if weight_decay is not None and not is_zero(weight_decay) and decoupled_weight_decay:
        parts.append(transforms.add_decayed_weights(weight_decay))
    parts.append(transforms.scale_by_learning_rate(learning_rate))
    return chain(*parts)


__all__ = ["check_hyperparams", "check_sequence", "inject", "without_zeros", "concrete", "inject_hyperparams", "is_zero", "standard_chain"]

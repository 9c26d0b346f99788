"""torch's eager checks shared by several torch_compat optimizers."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def is_tensor(value) -> bool:
    """Whether ``value`` is an array (what torch calls a Tensor) rather than a number."""
    return hasattr(value, "shape") and hasattr(value, "dtype")


def check_tensor_lr(lr) -> None:
    if is_tensor(lr) and int(np.prod(jnp.shape(lr))) != 1:
        raise ValueError("Tensor lr must be 1-element")


def check_fused(fused, foreach, differentiable) -> None:
    if fused:
        if differentiable:
            raise RuntimeError("`fused` does not support `differentiable`")
        if foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")


def scalar(value):
    """A 1-element array as a Python float (torch's ``_to_scalar``), numbers unchanged."""
    if is_tensor(value):
        return float(np.asarray(value).reshape(()))
    return value

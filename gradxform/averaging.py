r"""Averages of the parameters over training: EMA and SWA, as pure functions of a state.

These average the *parameters* (what ``torch.optim.swa_utils.AveragedModel`` keeps),
not the updates (what ``optax.ema`` averages). The state is an :class:`AverageState`;
one call ``state = ema_update(state, params)`` (or :func:`swa_update`) is one of torch's
``averaged_model.update_parameters(model)``, and jits, donates and shards like any
pytree::

    average = gradxform.average_init(params)
    for batch in batches:
        params, opt_state = train_step(params, opt_state, batch)
        average = gradxform.ema_update(average, params, decay=0.999)
    eval_params = average.average

The arithmetic is torch 2.13's (``torch/optim/swa_utils.py``), each form selectable:

* the first update copies the parameters (torch copies while ``n_averaged == 0``);
* :func:`ema_update` with ``lerp=True`` is ``get_ema_multi_avg_fn(decay)``:
  ``lerp(ema, param, 1 - decay)``; with ``lerp=False``, ``get_ema_avg_fn(decay)``:
  ``decay * ema + (1 - decay) * param``;
* :func:`swa_update` with ``lerp=False`` is ``get_swa_avg_fn()``, which
  ``AveragedModel`` uses by default on the CPU: ``avg + (param - avg) / (n + 1)``; with
  ``lerp=True``, ``get_swa_multi_avg_fn()``, its default on CUDA: ``lerp(avg, param, w)``
  with ``w = 1 / (n + 1)`` computed in float32 (for float64 parameters too, as torch
  does).

Integer leaves (buffers such as a batch norm's ``num_batches_tracked``, averaged by
``AveragedModel(use_buffers=True)``) are computed in float32 and truncated, as torch's
``copy_`` into an integer tensor does.

``torch_compat.optim.swa_utils`` (torch's ``AveragedModel`` and its averaging functions)
runs the same per-leaf arithmetic, ``_ema_leaf`` and ``_swa_leaf``.

The non-lerp forms agree with torch bit for bit (float32, float64, integer buffers).
The lerp forms agree to the last bit or so: torch's CPU ``lerp`` fuses its multiply-add
(one rounding) where XLA rounds twice; measured against ``AveragedModel`` (20 seeds x 20
updates of a 40x30 layer): float64 within 1e-15 relative (norm-wise), float32 within 1e-7.
16-bit float leaves are computed in float32 and rounded once (torch's non-lerp forms
round after each operation).
"""

from __future__ import annotations

import numbers

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _numerics, _paths
from gradxform.optimizers import _common


class AverageState(NamedTuple):
    """A running average of the parameters.

    Attributes:
      average: like params (same dtypes), the averaged parameters.
      count: int32 ``[]``, the number of parameter sets averaged so far (torch's
        ``n_averaged``); 0 until the first update, which copies the parameters.
    """

    average: Any
    count: jax.Array


def average_init(params) -> AverageState:
    """A fresh average: a copy of ``params`` (as torch's ``deepcopy(model)``), ``count`` 0.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> state = gradxform.average_init({"w": jnp.ones(2)})
      >>> int(state.count), state.average["w"].tolist()
      (0, [1.0, 1.0])
    """
    average = jax.tree.map(lambda p: jnp.array(p, copy=True), params)
    return AverageState(average, _numerics.replicate_over_params(jnp.zeros([], jnp.int32), params))


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _first_copy(state: AverageState, params, averaged) -> AverageState:
    """The new state: ``params`` on the first update, ``averaged`` after it."""
    first = state.count == 0
    average = jax.tree.map(
        lambda new, p, old: jnp.where(first, jnp.asarray(p).astype(jnp.result_type(old)), new).astype(
            jnp.result_type(old)
        ),
        averaged,
        params,
        state.average,
    )
    return AverageState(average, state.count + jnp.ones([], state.count.dtype))


def _integer(value_f32, like):
    """A float32 result written into an integer buffer: truncated, as torch's ``copy_``."""
    return jnp.trunc(value_f32).astype(jnp.result_type(like))


def _check_decay(decay) -> None:
    """Refuses a concrete ``decay`` outside ``[0, 1]`` with torch's ValueError (a traced
    one is not checked)."""
    number = _common.concrete(decay)  # None for a traced decay: not checked then
    if number is not None and not 0.0 <= number <= 1.0:
        shown = decay if isinstance(decay, numbers.Real) else number
        raise ValueError(f"Invalid decay value {shown} provided. Please provide a value in [0,1] range.")


def ema_update(state: AverageState, params, decay=0.999, *, lerp: bool = True) -> AverageState:
    r"""One EMA update of the averaged parameters: torch's ``get_ema_multi_avg_fn``.

    .. math::
       W^{\text{EMA}}_1 = W_1, \qquad
       W^{\text{EMA}}_{t+1} = \text{decay}\, W^{\text{EMA}}_t + (1 - \text{decay})\, W_{t+1}

    With ``lerp=True`` (the default, ``get_ema_multi_avg_fn``) this is torch's
    ``lerp(ema, param, 1 - decay)``; with ``lerp=False`` (``get_ema_avg_fn``) it is
    ``decay * ema + (1 - decay) * param``. They differ in the last bits.

    Args:
      state: the :class:`AverageState`.
      params: the current parameters (the tree of ``state.average``).
      decay: in ``[0, 1]``; a float, or a scalar array (traced: no recompilation).
      lerp: which of torch's two formulas.

    Returns:
      The new :class:`AverageState` (``count`` + 1).

    Raises:
      ValueError: for a ``decay`` outside ``[0, 1]`` (torch's message).

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> state = gradxform.average_init(jnp.zeros(1))
      >>> state = gradxform.ema_update(state, jnp.array([1.0]), decay=0.5)  # copies
      >>> state = gradxform.ema_update(state, jnp.array([3.0]), decay=0.5)
      >>> state.average.tolist(), int(state.count)
      ([2.0], 2)
    """
    _check_decay(decay)
    one_minus = 1 - decay  # a Python float stays one (rounded once, as torch's)
    return _first_copy(
        state, params, jax.tree.map(lambda a, p: _ema_leaf(a, p, decay, one_minus, lerp), state.average, params)
    )


def swa_update(state: AverageState, params, *, lerp: bool = False) -> AverageState:
    r"""One SWA update: the running mean of the parameters seen, torch's ``get_swa_avg_fn``.

    .. math::
       \bar W_1 = W_1, \qquad \bar W_{n+1} = \bar W_n + \frac{W_{n+1} - \bar W_n}{n + 1}

    with :math:`n` = ``state.count``. With ``lerp=False`` (the default) this is
    ``get_swa_avg_fn()``, what ``AveragedModel`` runs on the CPU; with ``lerp=True`` it is
    ``get_swa_multi_avg_fn()``, what it runs on CUDA: ``lerp(avg, param, w)`` with
    ``w = 1/(n+1)`` rounded to float32 (for float64 parameters too), which torch refuses
    for integer buffers (so does this).

    Args:
      state: the :class:`AverageState`.
      params: the current parameters.
      lerp: which of torch's two formulas.

    Returns:
      The new :class:`AverageState` (``count`` + 1).

    Raises:
      ValueError: with ``lerp=True``, for an integer leaf (torch's ``addcdiv`` fails there).

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> state = gradxform.average_init(jnp.zeros(1))
      >>> for value in (1.0, 2.0, 6.0):
      ...     state = gradxform.swa_update(state, jnp.array([value]))
      >>> state.average.tolist(), int(state.count)
      ([3.0], 3)
    """
    if lerp:
        for path, avg in jax.tree_util.tree_flatten_with_path(state.average)[0]:
            if not _is_float(avg):
                raise ValueError(
                    f"swa_update(lerp=True): the leaf at {_paths.path_string(path) or 'the root'!r} has "
                    f"integer dtype {jnp.result_type(avg)}, which torch's get_swa_multi_avg_fn refuses "
                    "(addcdiv); use lerp=False"
                )
    count = state.count
    return _first_copy(state, params, jax.tree.map(lambda a, p: _swa_leaf(a, p, count, lerp), state.average, params))


def _ema_leaf(avg, p, decay, one_minus, lerp: bool):
    """One leaf of :func:`ema_update` after the first copy (``one_minus`` is ``1 - decay``,
    computed by the caller: a Python float stays one, rounded once, as torch's)."""
    if not _is_float(avg):
        f32 = jnp.float32
        mixed = avg.astype(f32) * jnp.asarray(decay).astype(f32) + jnp.asarray(p).astype(f32) * jnp.asarray(
            one_minus
        ).astype(f32)
        return _integer(mixed, avg)
    dtype = _numerics.compute_dtype(jnp.result_type(avg))
    a = avg.astype(dtype)
    x = jnp.asarray(p).astype(dtype)
    if lerp:
        out = _numerics.lerp(a, x, one_minus)
    else:
        out = a * _numerics.scalar(decay, a) + x * _numerics.scalar(one_minus, a)
    return out.astype(jnp.result_type(avg))


def _swa_leaf(avg, p, count, lerp: bool):
    """One leaf of :func:`swa_update` after the first copy (``count``: the number averaged
    so far, an integer array). An integer leaf takes the non-lerp form."""
    if not _is_float(avg):
        f32 = jnp.float32
        diff = jnp.asarray(p).astype(jnp.result_type(avg)) - avg
        return _integer(avg.astype(f32) + diff.astype(f32) / (count + 1).astype(f32), avg)
    dtype = _numerics.compute_dtype(jnp.result_type(avg))
    a = avg.astype(dtype)
    x = jnp.asarray(p).astype(dtype)
    if lerp:
        weight = jnp.float32(1) / (count + 1).astype(jnp.float32)
        out = _numerics.lerp(a, x, weight)
    else:
        # XLA turns a division by a broadcast scalar into a multiplication by its
        # reciprocal (off by an ulp); dividing by a materialized array keeps torch's
        # correctly rounded division.
        divisor = jnp.broadcast_to((count + 1).astype(_numerics.real_dtype(dtype)), jnp.shape(a))
        out = a + (x - a) / jax.lax.optimization_barrier(divisor)
    return out.astype(jnp.result_type(avg))

"""Skipping updates whose gradients hold NaN or Inf.

:func:`skip_non_finite` wraps any transformation (a gradxform optimizer, an optax one,
a ``chain``): an update whose incoming gradients contain a NaN or an infinity is
dropped, and the wrapped state is kept as it was, as if the step had not happened.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _numerics, base


class SkipNonFiniteState(NamedTuple):
    """State of :func:`skip_non_finite`.

    Attributes:
      inner_state: the wrapped transformation's state, unchanged by a skipped update.
      total_skipped: int32 ``[]``, the number of updates skipped so far.
      consecutive_skipped: int32 ``[]``, the number of updates skipped in a row, up to
        the most recent one; a finite update resets it to 0.
    """

    inner_state: Any
    total_skipped: jax.Array
    consecutive_skipped: jax.Array


def all_finite(tree) -> jax.Array:
    """Whether every inexact leaf of ``tree`` is free of NaN and Inf (a bool ``[]`` array).

    Integer and boolean leaves are ignored; a complex leaf is finite when both its real
    and imaginary parts are.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> bool(gradxform.all_finite({"a": jnp.ones(2), "b": jnp.array([1.0, jnp.nan])}))
      False
    """
    flags = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    if not flags:
        return jnp.asarray(True)
    return jnp.all(jnp.stack(flags))


def _check_max_consecutive_skips(max_consecutive_skips) -> None:
    """Refuses a ``max_consecutive_skips`` that is not ``None`` or a non-negative int."""
    if max_consecutive_skips is None:
        return
    if isinstance(max_consecutive_skips, bool) or not isinstance(max_consecutive_skips, int):
        raise TypeError(
            f"max_consecutive_skips must be None or an int, got {type(max_consecutive_skips).__name__}"
        )
    if max_consecutive_skips < 0:
        raise ValueError(f"max_consecutive_skips must be >= 0, got {max_consecutive_skips}")


def _decide_skip(finite, total, consecutive, max_consecutive_skips):
    """Whether to skip an update, and the new ``(total, consecutive)`` skip counts.

    ``finite`` says whether the gradients are finite; ``max_consecutive_skips`` is
    ``None`` (no limit) or an int (a traced one too). A non-finite update is skipped
    while fewer than the limit have been skipped in a row; a finite one resets the run.
    """
    skip = jnp.logical_not(finite)
    if max_consecutive_skips is not None:
        skip = jnp.logical_and(skip, consecutive < max_consecutive_skips)
    one = skip.astype(jnp.int32)
    return skip, total + one, jnp.where(finite, 0, consecutive + one)


def skip_non_finite(
    inner: base.GradientTransformation, max_consecutive_skips: int | None = None
) -> base.GradientTransformation:
    """Skips updates whose incoming gradients hold a NaN or an Inf.

    When any leaf of the gradients given to ``update`` is non-finite, the update is
    skipped: the returned updates are ``-0.0`` everywhere (so :func:`apply_updates`
    leaves every parameter bit for bit unchanged, ``-0.0`` parameters included) and the
    wrapped state is returned unchanged (step counts, moments, schedules' counts and
    injected hyperparameters), and the skip is counted. A finite update goes through
    unchanged and resets the run count.

    With ``max_consecutive_skips=n``, at most ``n`` updates in a row are skipped: once
    ``n`` have been, the following non-finite updates are applied as they come
    (usually turning the parameters into NaN, which makes a persistent failure visible
    instead of silently freezing training), until a finite update arrives and resets
    the run count to 0; skipping then resumes. ``None`` (the default) skips every
    non-finite update; ``0`` never skips.

    The choice is a ``jax.lax.cond`` (a skipped update does not run the wrapped one).
    It is not free: on the CPU, for a 1M-parameter float32 Adam step with donated
    buffers, the finite path measured about 3x the bare step, because the decision
    needs a pass over every gradient before the update and the selection keeps XLA
    from updating the buffers in place; a ``jnp.where`` select of both results costs
    about the same (10% less). See ``benchmarks/skip_cost.py`` and
    ``docs/reliability.md``.

    Differences from ``optax.apply_if_finite``: the limit is optional (optax requires
    ``max_consecutive_errors``); a skipped update is ``-0.0`` rather than ``+0.0``;
    the counters are named for what they count and ``total_skipped`` counts only the
    updates actually skipped (optax's ``total_notfinite`` also counts non-finite updates
    it let through); there is no ``last_finite`` field. The limit means the same: optax's
    ``max_consecutive_errors=n`` skips ``n`` in a row, as ``max_consecutive_skips=n``.

    Args:
      inner: the transformation to protect (gradxform's, optax's, a chain).
      max_consecutive_skips: ``None``, or the largest number of updates skipped in a
        row (a non-negative int).

    Returns:
      A transformation whose state is a :class:`SkipNonFiniteState`.

    Raises:
      ValueError: if ``max_consecutive_skips`` is negative.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.skip_non_finite(gradxform.adam(0.1))
      >>> params = jnp.ones(2)
      >>> state = tx.init(params)
      >>> updates, state = tx.update(jnp.array([1.0, jnp.inf]), state, params)
      >>> gradxform.apply_updates(params, updates).tolist(), int(state.total_skipped)
      ([1.0, 1.0], 1)
    """
    _check_max_consecutive_skips(max_consecutive_skips)

    def init(params):
        # Two counters, two buffers (one shared buffer cannot be donated twice).
        total, consecutive = _numerics.replicate_over_params(
            (jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32)), params
        )
        return SkipNonFiniteState(inner.init(params), total, consecutive)

    def update(updates, state, params=None, **extra_args):
        finite = all_finite(updates)
        skip, total, consecutive = _decide_skip(
            finite, state.total_skipped, state.consecutive_skipped, max_consecutive_skips
        )

        new_updates, new_inner = base._update_or_hold(
            jnp.logical_not(skip), inner, updates, state.inner_state, params, extra_args
        )
        return new_updates, SkipNonFiniteState(new_inner, total, consecutive)

    return base.GradientTransformation(init, update)

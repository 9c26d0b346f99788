"""RAdam, rectified Adam (``torch.optim.RAdam``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradxform import _numerics, _treecheck
from gradxform.base import GradientTransformation
from gradxform.optimizers import _common
from gradxform.registry import SPECS
from gradxform.optimizers.adam import bias_corrections


class ScaleByRadamState(NamedTuple):
    """State of :func:`scale_by_radam`.

    Attributes:
      step: int32 ``[]``, the updates done: one scalar for all the leaves (what ``init``
        makes), or a tree of per-leaf scalars like params (torch's per-parameter
        ``step``, as torch_compat fills it); ``update`` keeps the form it is given.
      exp_avg: like params.
      exp_avg_sq: like params.
    """

    step: Any
    exp_avg: Any
    exp_avg_sq: Any


def _rho_t(textbook, beta2, t):
    """``rho_t``, free of the cancellation of its textbook form when scalars are float32.

    ``rho_inf - 2 t beta2^t / (1 - beta2^t)`` subtracts two numbers close to
    ``2 / (1 - beta2)``: torch evaluates it in Python doubles, where it keeps enough
    digits; in float32 (``jax_enable_x64`` off) it does not (``beta2 = 0.999999`` gives
    ``rho_4 = 7`` instead of 4, and rectification starts two steps early). With
    ``q = 1 - beta2``, ``L = -log(beta2)`` and ``x = t L`` the same number is
    ``2 (L - q) / (q L) - 1 + (2 / L) (1 - x / expm1(x))``, whose two small differences
    are taken from their series. Under x64 the textbook value (torch's formula) is kept.
    """
    if _numerics.hyper_dtype() == jnp.float64:
        return textbook
    q = 1 - beta2
    small = q < 0.1  # larger q: rho_inf is small and the textbook form is accurate
    q = jnp.where(small, q, 0.01)  # keeps the unused branch finite
    log_beta = -jnp.log1p(-q)
    log_excess = sum(q**k / k for k in range(2, 9))  # -log(1 - q) - q
    x = t * log_beta
    one_minus_b = jnp.where(
        x < 0.1, x / 2 - x**2 / 12 + x**4 / 720 - x**6 / 30240, 1 - x / jnp.expm1(x)
    )
    stable = 2 * log_excess / (q * log_beta) - 1 + (2 / log_beta) * one_minus_b
    return jnp.where(small, stable, textbook)


def scale_by_radam(beta1=0.9, beta2=0.999, eps=1e-8, *, state_dtype=None):
    r"""RAdam's direction, as in torch (rectify when :math:`\rho_t > 5`).

    .. math::
       \rho_\infty = \frac{2}{1-\beta_2} - 1, \quad
       \rho_t = \rho_\infty - \frac{2t\beta_2^t}{1-\beta_2^t}, \quad
       \hat m_t = \frac{m_t}{1-\beta_1^t}, \\
       d_t = \hat m_t \cdot \frac{\sqrt{1-\beta_2^t}}{\sqrt{v_t}+\epsilon} \cdot r_t
       \text{ if } \rho_t > 5 \text{ else } \hat m_t, \quad
       r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}

    optax uses threshold 5 too but puts eps differently; this follows torch.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.scale_by_radam()
      >>> d, _ = tx.update(jnp.array([0.5, -3.0]), tx.init(jnp.zeros(2)))
      >>> d.tolist()  # rho_1 = 1 <= 5: not rectified, the bias-corrected momentum m_hat = g
      [0.5, -3.0]
    """

    def init(params):
        zeros = lambda: _numerics.zeros_like_buffer(params, state_dtype)  # noqa: E731
        return ScaleByRadamState(_numerics.shared_step(params), zeros(), zeros())

    def scalars(step):
        """The new step, and this step's coefficients (a function of dtype)."""
        step = step + 1
        b1, b2 = jnp.asarray(beta1), jnp.asarray(beta2)
        t = step.astype(_numerics.hyper_dtype())
        bc1, bc2 = bias_corrections(b1, b2, step)
        rho_inf = 2 / (1 - b2) - 1
        rho_t = _rho_t(rho_inf - 2 * t * (b2**t) / bc2, b2, t)
        rectify = rho_t > 5.0
        safe_rho_t = jnp.where(rectify, rho_t, 5.0)
        rect = jnp.sqrt(
            (safe_rho_t - 4) * (safe_rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * safe_rho_t)
        )
        cast = _numerics.cast_once(b2, 1 - b2, bc1, jnp.sqrt(bc2), eps, rect)
        return (step,), _numerics.once_per_dtype(
            lambda real: (_numerics.lerp_weight(1 - b1, real), *cast(real), rectify)
        )

    def leaf(g, m, v, coefficients):
        dtype = _numerics.compute_dtype(g.dtype)
        g = g.astype(dtype)
        lerp_weight, b2, one_minus_b2, bc1, sqrt_bc2, eps_, rect, rectify = coefficients(dtype)
        m_new = _numerics.lerp(m.astype(dtype), g, lerp_weight)
        v_new = v.astype(dtype) * b2 + one_minus_b2 * g * g
        corrected = m_new / bc1
        adaptive = sqrt_bc2 / (jnp.sqrt(v_new) + eps_)
        direction = jnp.where(rectify, corrected * adaptive * rect, corrected)
        return direction, m_new.astype(m.dtype), v_new.astype(v.dtype)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        if _numerics.has_no_leaves(updates):
            return updates, state
        _treecheck.check_state(updates, state, like=("exp_avg", "exp_avg_sq"))
        coefficients, (step,) = _numerics.scalar_rule(scalars, updates, state.step)
        direction, m, v = _numerics.leafwise(
            leaf, updates, state.exp_avg, state.exp_avg_sq, num_outputs=3, per_leaf=coefficients
        )
        return direction, ScaleByRadamState(step, m, v)

    return GradientTransformation(init, update)


def radam(
    learning_rate=1e-3,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0.0,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
    state_dtype=None,
) -> GradientTransformation:
    r"""RAdam, number for number with ``torch.optim.RAdam``.

    :math:`\theta_t = \theta_{t-1}(1-\gamma\lambda \text{ if decoupled}) - \gamma d_t` with
    :math:`d_t` from :func:`scale_by_radam`.

    Args:
      learning_rate: :math:`\gamma`; a float, a scalar array or a schedule.
      betas: :math:`(\beta_1, \beta_2)`.
      eps: added to the denominator.
      weight_decay: :math:`\lambda`.
      decoupled_weight_decay: AdamW-style decay (RAdamW).
      maximize: maximize the objective.
      state_dtype: dtype of the moment buffers.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.radam(0.1)
      >>> updates, _ = tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))
      >>> round(updates.tolist()[0], 6)  # not rectified yet: -lr * m_hat
      -0.3

    Reference: Liu et al., 2020; ``torch.optim.RAdam``.
    """
    SPECS["radam"].check_core(learning_rate=learning_rate, betas=betas, eps=eps, weight_decay=weight_decay)

    def build(learning_rate, betas, eps, weight_decay=None):
        return _common.standard_chain(
            scale_by_radam(betas[0], betas[1], eps, state_dtype=state_dtype),
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
        )

    return _common.inject(
        build, learning_rate=learning_rate, betas=betas, eps=eps, weight_decay=weight_decay
    )

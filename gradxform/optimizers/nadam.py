"""NAdam, Adam with Nesterov momentum and a momentum-decay schedule (``torch.optim.NAdam``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradxform import _numerics, _treecheck
from gradxform.base import GradientTransformation
from gradxform.optimizers import _common
from gradxform.registry import SPECS


class ScaleByNadamState(NamedTuple):
    """State of :func:`scale_by_nadam`.

    Attributes:
      step: int32 ``[]``, the updates done: one scalar for all the leaves (what ``init``
        makes), or a tree of per-leaf scalars like params (torch's per-parameter
        ``step``, as torch_compat fills it); ``update`` keeps the form it is given.
      mu_product: float32 ``[]``, :math:`\\prod_{i \\le t} \\mu_i` (float32 as torch keeps it),
        in the form of ``step`` (shared, or per leaf).
      exp_avg: like params.
      exp_avg_sq: like params.
    """

    step: Any
    mu_product: Any
    exp_avg: Any
    exp_avg_sq: Any


def scale_by_nadam(beta1=0.9, beta2=0.999, eps=1e-8, momentum_decay=4e-3, *, state_dtype=None):
    r"""NAdam's direction, with torch's momentum-decay schedule.

    .. math::
       \mu_t = \beta_1 (1 - \tfrac12 \cdot 0.96^{t\psi}), \quad
       m_t = \mathrm{lerp}(m_{t-1}, g_t, 1-\beta_1), \quad
       v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \\
       d_t = \frac{1-\mu_t}{1-\prod_{i\le t}\mu_i}\frac{g_t}{D_t}
           + \frac{\mu_{t+1}}{1-\prod_{i\le t+1}\mu_i}\frac{m_t}{D_t}, \quad
       D_t = \sqrt{v_t / (1-\beta_2^t)} + \epsilon

    optax's nadam has no momentum-decay schedule (:math:`\psi`); torch's is reproduced here.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.scale_by_nadam()
      >>> d, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
      >>> round(d.tolist()[0], 4)  # 1 + 0.1 mu_2 / (1 - mu_1 mu_2), mu_t = 0.9 (1 - 0.96^(0.004 t) / 2)
      1.0565
    """

    def init(params):
        zeros = lambda: _numerics.zeros_like_buffer(params, state_dtype)  # noqa: E731
        return ScaleByNadamState(
            _numerics.shared_step(params), _numerics.shared_scalar(params, 1.0), zeros(), zeros()
        )

    def scalars(step, mu_product):
        """The new step and mu_product, and the step's coefficients (a function of dtype)."""
        step = step + 1
        t = step.astype(_numerics.hyper_dtype())
        b1, b2, psi = (jnp.asarray(x) for x in (beta1, beta2, momentum_decay))
        bias_correction2 = 1 - b2**t
        mu = b1 * (1.0 - 0.5 * (0.96 ** (t * psi)))
        mu_next = b1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * psi)))
        # torch multiplies its float32 mu_product tensor by the (double) mu in float32.
        mu_product = mu_product * mu.astype(mu_product.dtype)
        mu_product_next = mu_product.astype(t.dtype) * mu_next
        grad_coef = (1.0 - mu) / (1.0 - mu_product.astype(t.dtype))
        avg_coef = mu_next / (1.0 - mu_product_next)
        cast = _numerics.cast_once(b2, 1 - b2, bias_correction2, jnp.asarray(eps), grad_coef, avg_coef)
        return (step, mu_product), _numerics.once_per_dtype(
            lambda real: (_numerics.lerp_weight(1 - b1, real), *cast(real))
        )

    def leaf(g, m, v, coefficients):
        dtype = _numerics.compute_dtype(g.dtype)
        g = g.astype(dtype)
        lerp_weight, b2, one_minus_b2, bias_correction2, eps_, grad_coef, avg_coef = coefficients(dtype)
        m_new = _numerics.lerp(m.astype(dtype), g, lerp_weight)
        v_new = v.astype(dtype) * b2 + one_minus_b2 * g * g
        denom = jnp.sqrt(v_new / bias_correction2) + eps_
        direction = grad_coef * g / denom + avg_coef * m_new / denom
        return direction, m_new.astype(m.dtype), v_new.astype(v.dtype)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        if _numerics.has_no_leaves(updates):
            return updates, state
        _treecheck.check_state(updates, state, like=("exp_avg", "exp_avg_sq"), scalars=("step", "mu_product"))
        coefficients, (step, mu_product) = _numerics.scalar_rule(scalars, updates, state.step, state.mu_product)
        direction, m, v = _numerics.leafwise(
            leaf, updates, state.exp_avg, state.exp_avg_sq, num_outputs=3, per_leaf=coefficients
        )
        return direction, ScaleByNadamState(step, mu_product, m, v)

    return GradientTransformation(init, update)


def nadam(
    learning_rate=2e-3,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0.0,
    momentum_decay=4e-3,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
    state_dtype=None,
) -> GradientTransformation:
    r"""NAdam, number for number with ``torch.optim.NAdam``.

    :math:`\theta_t = \theta_{t-1}(1-\gamma\lambda \text{ if decoupled}) - \gamma d_t` with
    :math:`d_t` from :func:`scale_by_nadam` and the gradient
    :math:`\pm g_t + \lambda\theta_{t-1}` (L2, when not decoupled).

    Args:
      learning_rate: :math:`\gamma`; a float, a scalar array or a schedule.
      betas: :math:`(\beta_1, \beta_2)`.
      eps: added to the denominator.
      weight_decay: :math:`\lambda`.
      momentum_decay: :math:`\psi`.
      decoupled_weight_decay: AdamW-style decay (NAdamW).
      maximize: maximize the objective.
      state_dtype: dtype of the moment buffers.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.nadam(0.1)
      >>> updates, _ = tx.update(jnp.array([1.0]), tx.init(jnp.zeros(1)))
      >>> round(updates.tolist()[0], 4)
      -0.1

    Reference: Dozat, 2016; ``torch.optim.NAdam``.
    """
    SPECS["nadam"].check_core(
        learning_rate=learning_rate, betas=betas, eps=eps, weight_decay=weight_decay, momentum_decay=momentum_decay
    )

    def build(learning_rate, betas, eps, momentum_decay, weight_decay=None):
        return _common.standard_chain(
            scale_by_nadam(betas[0], betas[1], eps, momentum_decay, state_dtype=state_dtype),
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
        )

    return _common.inject(
        build,
        learning_rate=learning_rate,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        momentum_decay=momentum_decay,
    )

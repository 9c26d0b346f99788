"""Adam and AdamW, with AMSGrad (``torch.optim.Adam``, ``torch.optim.AdamW``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradxform import _numerics, _treecheck
from gradxform.base import GradientTransformation
from gradxform.optimizers import _common
from gradxform.registry import SPECS


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`.

    Attributes:
      step: int32 ``[]``, the updates done: one scalar for all the leaves (what ``init``
        makes), or a tree of per-leaf scalars like params (torch's per-parameter
        ``step``, as torch_compat fills it); ``update`` keeps the form it is given.
      exp_avg: like params, the first moment :math:`m_t`.
      exp_avg_sq: like params, the second moment :math:`v_t`.
      max_exp_avg_sq: like params with ``amsgrad``, else ``None``.
    """

    step: Any
    exp_avg: Any
    exp_avg_sq: Any
    max_exp_avg_sq: Any


def bias_corrections(beta1, beta2, step):
    """``1 - beta1**t`` and ``1 - beta2**t`` for the (int) step ``t``, in hyperparameter precision."""
    t = jnp.asarray(step).astype(_numerics.hyper_dtype())
    return 1 - jnp.asarray(beta1) ** t, 1 - jnp.asarray(beta2) ** t


def scale_by_adam(beta1=0.9, beta2=0.999, eps=1e-8, *, amsgrad: bool = False, state_dtype=None):
    r"""Adam's direction, as in torch (eps added after the bias-corrected square root).

    .. math::
       m_t = \mathrm{lerp}(m_{t-1}, g_t, 1-\beta_1), \quad
       v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad
       \hat v_t = \max(\hat v_{t-1}, v_t) \text{ (AMSGrad)}, \\
       d_t = \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t} / \sqrt{1-\beta_2^t} + \epsilon}

    AMSGrad keeps the maximum of the *raw* second moments, as torch does (optax keeps the
    maximum of the bias-corrected ones).

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.scale_by_adam()
      >>> d, _ = tx.update(jnp.array([0.5, -3.0]), tx.init(jnp.zeros(2)))
      >>> d.tolist()  # first step: m_hat / sqrt(v_hat) = sign(g)
      [1.0, -1.0]
    """

    def init(params):
        zeros = lambda: _numerics.zeros_like_buffer(params, state_dtype)  # noqa: E731
        return ScaleByAdamState(
            _numerics.shared_step(params), zeros(), zeros(), zeros() if amsgrad else None
        )

    def scalars(step):
        """The new step and the step's coefficients, a function of the compute dtype."""
        step = step + 1
        bc1, bc2 = bias_corrections(beta1, beta2, step)
        cast = _numerics.cast_once(jnp.asarray(beta2), 1 - jnp.asarray(beta2), jnp.asarray(eps), jnp.sqrt(bc2), 1 / bc1)
        return (step,), _numerics.once_per_dtype(
            lambda real: (_numerics.lerp_weight(1 - jnp.asarray(beta1), real), *cast(real))
        )

    def leaf(g, m, v, vmax, coefficients):
        dtype = _numerics.compute_dtype(g.dtype)
        g = g.astype(dtype)
        lerp_weight, beta2_, one_minus_beta2, eps_, sqrt_bc2, inv_bc1 = coefficients(dtype)
        m_new = _numerics.lerp(m.astype(dtype), g, lerp_weight)
        v_new = v.astype(dtype) * beta2_ + one_minus_beta2 * g * g
        if amsgrad:
            vmax = jnp.maximum(vmax.astype(dtype), v_new)
            second = vmax
        else:
            second = v_new
        denom = jnp.sqrt(second) / sqrt_bc2 + eps_
        direction = (m_new / denom) * inv_bc1
        return (
            direction,
            m_new.astype(m.dtype),
            v_new.astype(v.dtype),
            None if vmax is None else vmax.astype(v.dtype),
        )

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        if _numerics.has_no_leaves(updates):
            return updates, state
        _treecheck.check_state(updates, state, like=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"))
        coefficients, (step,) = _numerics.scalar_rule(scalars, updates, state.step)
        direction, m, v, vmax = _numerics.leafwise(
            leaf,
            updates,
            state.exp_avg,
            state.exp_avg_sq,
            state.max_exp_avg_sq,
            num_outputs=4,
            per_leaf=coefficients,
        )
        return direction, ScaleByAdamState(step, m, v, vmax)

    return GradientTransformation(init, update)


def adam(
    learning_rate=1e-3,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0.0,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
    state_dtype=None,
) -> GradientTransformation:
    r"""Adam, number for number with ``torch.optim.Adam``.

    .. math::
       g_t \leftarrow \pm g_t + \lambda\theta_{t-1} \text{ (L2)}, \quad
       \theta_t = \theta_{t-1}(1 - \gamma\lambda \text{ if decoupled}) - \gamma\, d_t

    with :math:`d_t` from :func:`scale_by_adam`.

    Args:
      learning_rate: :math:`\gamma`; a float, a scalar array or a schedule.
      betas: :math:`(\beta_1, \beta_2)`.
      eps: added to the denominator.
      weight_decay: :math:`\lambda`.
      amsgrad: use the AMSGrad maximum of second moments.
      maximize: maximize the objective.
      decoupled_weight_decay: AdamW's decay instead of an L2 penalty.
      state_dtype: dtype of the moment buffers (default: the parameter's).

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.adam(0.1)
      >>> params = jnp.array([1.0, -2.0])
      >>> updates, _ = tx.update(params, tx.init(params), params)
      >>> [round(u, 6) for u in updates.tolist()]
      [-0.1, 0.1]

    Reference: Kingma & Ba, 2015; Reddi et al., 2018 (AMSGrad); ``torch.optim.Adam``.
    """
    SPECS["adam"].check_core(learning_rate=learning_rate, betas=betas, eps=eps, weight_decay=weight_decay)

    def build(learning_rate, betas, eps, weight_decay=None):
        return _common.standard_chain(
            scale_by_adam(betas[0], betas[1], eps, amsgrad=amsgrad, state_dtype=state_dtype),
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
        )

    return _common.inject(
        build, learning_rate=learning_rate, betas=betas, eps=eps, weight_decay=weight_decay
    )


def adamw(
    learning_rate=1e-3,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    state_dtype=None,
) -> GradientTransformation:
    r"""AdamW: :func:`adam` with ``decoupled_weight_decay=True``, as ``torch.optim.AdamW``.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.adamw(0.1, weight_decay=0.5)
      >>> params = jnp.array([1.0])
      >>> updates, _ = tx.update(jnp.zeros(1), tx.init(params), params)
      >>> round(updates.tolist()[0], 6)  # only the decay: -lr * wd * param
      -0.05

    Reference: Loshchilov & Hutter, 2019; ``torch.optim.AdamW``.
    """
    return adam(
        learning_rate,
        betas,
        eps,
        weight_decay,
        amsgrad,
        maximize=maximize,
        decoupled_weight_decay=True,
        state_dtype=state_dtype,
    )

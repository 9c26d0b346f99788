"""Averaged stochastic gradient descent (``torch.optim.ASGD``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from gradxform import _numerics, _treecheck
from gradxform.base import GradientTransformation
from gradxform.optimizers import _common
from gradxform.registry import SPECS
from gradxform import transforms
from gradxform.base import chain


class ScaleByAsgdState(NamedTuple):
    """State of :func:`scale_by_asgd`.

    Attributes:
      step: int32 ``[]``, the updates done: one scalar for all the leaves (what ``init``
        makes), or a tree of per-leaf scalars like params (torch's per-parameter
        ``step``, as torch_compat fills it); ``update`` keeps the form it is given.
      eta: float32 ``[]``, the current step size (float32 as torch keeps it), in the
        form of ``step``.
      mu: float32 ``[]``, the averaging coefficient, in the form of ``step``.
      ax: like params, the averaged parameters (what ASGD returns as its solution).
    """

    step: Any
    eta: Any
    mu: Any
    ax: Any


def scale_by_asgd(learning_rate=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, *, state_dtype=None):
    r"""ASGD's step, as in torch. Returns descent updates (the learning rate is inside).

    .. math::
       \theta_t = \theta_{t-1}(1 - \lambda\eta_t) - \eta_t g_t, \quad
       \bar\theta_t = \bar\theta_{t-1} + \mu_t(\theta_t - \bar\theta_{t-1}), \\
       \eta_{t+1} = \frac{\gamma}{(1 + \lambda\gamma t)^\alpha}, \quad
       \mu_{t+1} = \frac{1}{\max(1, t - t_0)}

    with :math:`\eta_1 = \gamma`, :math:`\mu_1 = 1`. Needs ``params`` in ``update``.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.scale_by_asgd(learning_rate=0.1, lambd=0.0)
      >>> params = jnp.array([1.0])
      >>> u, state = tx.update(jnp.array([2.0]), tx.init(params), params)
      >>> u.tolist(), state.ax.tolist()  # -eta_1 g, and the average is the new point (mu_1 = 1)
      ([-0.2], [0.8])
    """

    def init(params):
        return ScaleByAsgdState(
            _numerics.shared_step(params),
            _numerics.shared_scalar(params, learning_rate),
            _numerics.shared_scalar(params, 1.0),
            _numerics.zeros_like_buffer(params, state_dtype),
        )

    def scalars(step, eta, mu):
        """The new step, eta and mu, and this step's coefficients (a function of dtype)."""
        step = step + 1
        eta_value = eta.astype(_numerics.hyper_dtype())
        t = step.astype(_numerics.hyper_dtype())
        lr = jnp.asarray(learning_rate)
        # torch builds the new values as float32 tensors, then copies them into eta and mu
        # (float64 after a load_state_dict casts them): round to float32 first.
        new_eta = lr / ((1 + jnp.asarray(lambd) * lr * t) ** jnp.asarray(alpha))
        new_mu = 1 / jnp.maximum(1, t - jnp.asarray(t0))
        new_eta = new_eta.astype(_numerics.TORCH_SCALAR_DTYPE).astype(eta.dtype)
        new_mu = new_mu.astype(_numerics.TORCH_SCALAR_DTYPE).astype(mu.dtype)

        def coefficients(real):
            decay, eta_, mu_ = (jnp.asarray(x).astype(real) for x in (1 - jnp.asarray(lambd) * eta_value, eta_value, mu))
            return decay, eta_, mu_, mu_ != 1

        return (step, new_eta, new_mu), _numerics.once_per_dtype(coefficients)

    def leaf(g, p, ax, coefficients):
        dtype = _numerics.compute_dtype(g.dtype)
        g, p = g.astype(dtype), p.astype(dtype)
        decay, eta, mu, averaging = coefficients(dtype)
        new_p = p * decay - eta * g
        ax_new = jnp.where(averaging, ax.astype(dtype) + (new_p - ax.astype(dtype)) * mu, new_p)
        return new_p - p, ax_new.astype(ax.dtype)

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if _numerics.has_no_leaves(updates):
            return updates, state
        _treecheck.check_state(updates, state, like=("ax",), scalars=("step", "eta", "mu"))
        if params is None:
            raise ValueError("scale_by_asgd needs the params argument of update")
        coefficients, (step, eta, mu) = _numerics.scalar_rule(scalars, updates, state.step, state.eta, state.mu)
        updates, ax = _numerics.leafwise(leaf, updates, params, state.ax, num_outputs=2, per_leaf=coefficients)
        return updates, ScaleByAsgdState(step, eta, mu, ax)

    return GradientTransformation(init, update)


def asgd(
    learning_rate=1e-2,
    lambd=1e-4,
    alpha=0.75,
    t0=1e6,
    weight_decay=0.0,
    maximize: bool = False,
    *,
    state_dtype=None,
) -> GradientTransformation:
    r"""Averaged SGD, number for number with ``torch.optim.ASGD``.

    The gradient is :math:`\pm g_t + w\theta_{t-1}`, then :func:`scale_by_asgd` applies.
    The averaged parameters are in the state's ``ax`` field.

    Args:
      learning_rate: :math:`\gamma`; a float, a scalar array or a schedule.
      lambd: decay term :math:`\lambda`.
      alpha: power for the :math:`\eta` update.
      t0: the step at which averaging starts.
      weight_decay: :math:`w`, an L2 penalty.
      maximize: maximize the objective.
      state_dtype: dtype of the ``ax`` buffer.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.asgd(0.1, lambd=0.0)
      >>> params = jnp.array([1.0])
      >>> updates, _ = tx.update(jnp.array([2.0]), tx.init(params), params)
      >>> round(updates.tolist()[0], 6)
      -0.2

    Reference: Polyak & Juditsky, 1992; ``torch.optim.ASGD``.
    """
    SPECS["asgd"].check_core(learning_rate=learning_rate, weight_decay=weight_decay, alpha=alpha)

    def build(learning_rate, lambd, alpha, t0, weight_decay=None):
        parts = [transforms.negate()] if maximize else []
        if weight_decay is not None:
            parts.append(transforms.add_decayed_weights(weight_decay))
        parts.append(scale_by_asgd(learning_rate, lambd, alpha, t0, state_dtype=state_dtype))
        return chain(*parts)

    return _common.inject(
        build, learning_rate=learning_rate, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay
    )

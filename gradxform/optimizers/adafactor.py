"""Adafactor with factored second moments (``torch.optim.Adafactor``)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _numerics, _treecheck, transforms
from gradxform.base import GradientTransformation, chain
from gradxform.optimizers import _common
from gradxform.registry import SPECS


class ScaleByAdafactorState(NamedTuple):
    """State of :func:`scale_by_adafactor`.

    Attributes:
      step: int32 ``[]``, the updates done: one scalar for all the leaves (what ``init``
        makes), or a tree of per-leaf scalars like params (torch's per-parameter
        ``step``, as torch_compat fills it); ``update`` keeps the form it is given.
      row_var: for leaves with ``ndim >= 2``, shape ``(..., R, 1)``; else ``None`` leaves.
        Sharded as the parameter's leading dimensions, replicated along the last.
      col_var: for leaves with ``ndim >= 2``, shape ``(..., 1, C)``; else ``None`` leaves.
        Sharded as the parameter's batch and last dimensions, replicated along ``R``.
      variance: for leaves with ``ndim < 2``, like the leaf; else ``None`` leaves.
    """

    step: Any
    row_var: Any
    col_var: Any
    variance: Any


def _row_shape(shape):
    return tuple(shape[:-1]) + (1,)


def _col_shape(shape):
    return tuple(shape[:-2]) + (1, shape[-1])


def check_state(updates, state: ScaleByAdafactorState) -> None:
    """Raises ``ValueError`` (at trace time) unless the factors match the updates' shapes."""
    _treecheck.check_state(updates, state)
    paths = jax.tree_util.tree_flatten_with_path(updates)[0]
    treedef = jax.tree.structure(updates)
    for name in ("row_var", "col_var", "variance"):
        try:
            buffers = treedef.flatten_up_to(getattr(state, name))
        except ValueError:
            _treecheck.check_state(updates, state, like=(name,), scalars=())  # the structure error
            raise
        for (path, g), buffer in zip(paths, buffers):
            shape = tuple(g.shape)
            factored = len(shape) >= 2
            expected = {
                "row_var": _row_shape(shape) if factored else None,
                "col_var": _col_shape(shape) if factored else None,
                "variance": None if factored else shape,
            }[name]
            if (buffer is None) != (expected is None) or (
                expected is not None and tuple(jnp.shape(buffer)) != tuple(expected)
            ):
                raise _treecheck.state_buffer_error(path, name, buffer, expected, g)


def _norm_sq_mean(g, axis):
    """torch's ``norm(g, dim=axis, keepdim=True).square_().div_(size)``."""
    return jnp.square(jnp.sqrt(jnp.sum(g * g, axis=axis, keepdims=True))) / g.shape[axis]


def scale_by_adafactor(
    learning_rate=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0, *, state_dtype=None
):
    r"""Adafactor's step, as torch computes it. Returns descent updates (lr inside).

    .. math::
       \hat\beta_t = t^{c}, \quad \rho_t = \min(\gamma, 1/\sqrt t), \quad
       \alpha_t = \max(\epsilon_2, \mathrm{RMS}(\theta_{t-1}))\,\rho_t, \\
       R_t = \mathrm{lerp}(R_{t-1}, \mathrm{mean}_{-1}(g^2), \hat\beta_t), \quad
       C_t = \mathrm{lerp}(C_{t-1}, \mathrm{mean}_{-2}(g^2), \hat\beta_t), \quad
       \hat V_t = \frac{R_t C_t}{\max(\mathrm{mean}_{-2} R_t, \epsilon_1)}, \\
       U_t = \frac{g_t}{\sqrt{\max(\hat V_t, \epsilon_1^2)}}, \quad
       \theta_t = \theta_{t-1}(1 - \gamma\lambda) - \frac{\alpha_t}{\max(1, \mathrm{RMS}(U_t)/d)} U_t

    Leaves with fewer than two dimensions keep a full ``variance`` instead of ``R, C``.
    ``eps[0] = None`` means the machine epsilon of the parameter's dtype.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.scale_by_adafactor(learning_rate=0.01)
      >>> params = jnp.full((2, 2), 2.0)
      >>> u, _ = tx.update(jnp.ones((2, 2)), tx.init(params), params)
      >>> u.tolist()  # -min(lr, 1) * RMS(params) * g / |g|
      [[-0.02, -0.02], [-0.02, -0.02]]
    """
    eps1, eps2 = eps

    def init(params):
        if any(jnp.iscomplexobj(p) for p in jax.tree.leaves(params)):
            raise ValueError(SPECS["adafactor"].complex_message)

        def buffers(p):
            shape, dtype = jnp.shape(p), _numerics.buffer_dtype(jnp.result_type(p), state_dtype)
            if len(shape) >= 2:  # the factors keep the sharding of the dimensions they keep
                return (
                    _numerics.reduced_like(_row_shape(shape), dtype, p, -1),
                    _numerics.reduced_like(_col_shape(shape), dtype, p, -2),
                    None,
                )
            return None, None, _numerics.like_param(jnp.zeros(shape, dtype), p)

        treedef = jax.tree.structure(params)
        rows, cols, variances = list(zip(*[buffers(p) for p in jax.tree.leaves(params)])) or ((), (), ())
        return ScaleByAdafactorState(
            _numerics.shared_step(params),
            treedef.unflatten(rows),
            treedef.unflatten(cols),
            treedef.unflatten(variances),
        )

    def scalars(step):
        """The new step, and this step's scalars: ``t``, ``rho`` (hyperparameter precision)
        and a function of dtype giving ``beta_hat``, the decay and whether it is zero."""
        step = step + 1
        t = step.astype(_numerics.hyper_dtype())
        lr = jnp.asarray(learning_rate)
        beta_hat = t ** jnp.asarray(beta2_decay)
        rho = jnp.minimum(lr, 1 / jnp.sqrt(t))
        weight_decay_ = jnp.asarray(weight_decay)
        # torch skips the decay when weight_decay == 0 (so lr = inf gives no inf * 0 = NaN).
        cast = _numerics.cast_once(beta_hat, jnp.where(weight_decay_ == 0, 0.0, lr * weight_decay_))

        def coefficients(real):
            beta_hat_, decay = cast(real)
            return _numerics.lerp_weight(beta_hat_, real), decay, decay == 0

        return (step,), (t, rho, _numerics.once_per_dtype(coefficients))

    def leaf(g, p, row, col, var, step_scalars):
        if jnp.iscomplexobj(g) or jnp.iscomplexobj(p):
            raise ValueError(SPECS["adafactor"].complex_message)
        t, rho, coefficients = step_scalars
        param_dtype = p.dtype
        dtype = _numerics.compute_dtype(g.dtype)
        g, p = g.astype(dtype), p.astype(dtype)
        beta_hat, decay, no_decay = coefficients(dtype)
        size = max(g.size, 1)
        param_rms = jnp.sqrt(jnp.sum(p * p)).astype(t.dtype) / math.sqrt(size)
        alpha = jnp.maximum(jnp.asarray(eps2), param_rms) * rho
        e1 = jnp.asarray(jnp.finfo(param_dtype).eps if eps1 is None else eps1)
        if g.ndim >= 2:
            row_new = _numerics.lerp(row.astype(dtype), _norm_sq_mean(g, -1), beta_hat)
            col_new = _numerics.lerp(col.astype(dtype), _norm_sq_mean(g, -2), beta_hat)
            row_mean = jnp.maximum(jnp.mean(row_new, axis=-2, keepdims=True), _numerics.scalar(e1, g))
            estimate = (row_new * col_new) / row_mean
            row, col = row_new.astype(row.dtype), col_new.astype(col.dtype)
        else:
            var_new = _numerics.lerp(var.astype(dtype), g * g, beta_hat)
            estimate = var_new
            var = var_new.astype(var.dtype)
        u = jax.lax.rsqrt(jnp.maximum(estimate, _numerics.scalar(e1 * e1, g))) * g
        u_rms = jnp.sqrt(jnp.sum(u * u)).astype(t.dtype) / (math.sqrt(size) * jnp.asarray(d))
        denom = jnp.maximum(1.0, u_rms)
        update = -_numerics.scalar(alpha / denom, g) * u
        update = jnp.where(no_decay, update, update - decay * p)
        return update, row, col, var

    def update(updates, state, params=None, **extra_args):
        del extra_args
        if _numerics.has_no_leaves(updates):
            return updates, state
        if params is None:
            raise ValueError("scale_by_adafactor needs the params argument of update")
        check_state(updates, state)
        treedef = jax.tree.structure(updates)
        step_scalars, (step,) = _numerics.scalar_rule(scalars, updates, state.step)
        columns = [
            treedef.flatten_up_to(tree)
            for tree in (updates, params, state.row_var, state.col_var, state.variance)
        ]
        outputs = [leaf(*args, c) for *args, c in zip(*columns, step_scalars)]
        new_updates, row, col, var = (treedef.unflatten(list(c)) for c in zip(*outputs))
        return new_updates, ScaleByAdafactorState(step, row, col, var)

    return GradientTransformation(init, update)


def adafactor(
    learning_rate=1e-2,
    beta2_decay=-0.8,
    eps=(None, 1e-3),
    d=1.0,
    weight_decay=0.0,
    *,
    maximize: bool = False,
    state_dtype=None,
) -> GradientTransformation:
    r"""Adafactor, number for number with ``torch.optim.Adafactor``.

    The gradient is negated when maximizing; decoupled weight decay
    :math:`\theta \leftarrow \theta(1-\gamma\lambda)` is applied beside the rule of
    :func:`scale_by_adafactor`.

    Args:
      learning_rate: :math:`\gamma`, caps the relative step :math:`\rho_t`.
      beta2_decay: :math:`c \le 0`, the decay rate of :math:`\hat\beta_t = t^c`.
      eps: :math:`(\epsilon_1, \epsilon_2)`; ``None`` for :math:`\epsilon_1` means the
        dtype's machine epsilon.
      d: :math:`d \ge 1`, the update clipping threshold.
      weight_decay: :math:`\lambda`, decoupled.
      maximize: maximize the objective.
      state_dtype: dtype of the factored buffers.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.adafactor(0.1)
      >>> params = jnp.ones((2, 3))
      >>> updates, _ = tx.update(jnp.ones((2, 3)), tx.init(params), params)
      >>> round(float(updates[0, 0]), 6)
      -0.1

    Reference: Shazeer & Stern, 2018; ``torch.optim.Adafactor``.
    """
    SPECS["adafactor"].check_core(
        learning_rate=learning_rate, beta2_decay=beta2_decay, eps=eps, d=d, weight_decay=weight_decay
    )

    def build(learning_rate, beta2_decay, eps, d, weight_decay):
        parts = [transforms.negate()] if maximize else []
        parts.append(
            scale_by_adafactor(learning_rate, beta2_decay, eps, d, weight_decay, state_dtype=state_dtype)
        )
        return chain(*parts)

    return _common.inject(
        build,
        optional=(),
        sequences={"eps": 2},
        nullable=("eps[0]",),
        learning_rate=learning_rate,
        beta2_decay=beta2_decay,
        eps=tuple(eps) if isinstance(eps, (tuple, list)) else eps,
        d=d,
        weight_decay=weight_decay,
    )


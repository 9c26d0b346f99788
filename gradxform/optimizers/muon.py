"""Muon: momentum orthogonalized by Newton–Schulz, for 2-D parameters (``torch.optim.Muon``)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _numerics, _treecheck
from gradxform.base import GradientTransformation
from gradxform.optimizers import _common
from gradxform import registry
from gradxform.registry import SPECS

DEFAULT_NS_COEFFICIENTS = SPECS["muon"].option("ns_coefficients").default  # torch's (3.4445, -4.775, 2.0315)


class ScaleByMuonState(NamedTuple):
    """State of :func:`scale_by_muon`.

    Attributes:
      step: int32 ``[]``, the updates done: one scalar for all the leaves (what ``init``
        makes), or a tree of per-leaf scalars like params (torch's per-parameter
        ``step``, as torch_compat fills it); ``update`` keeps the form it is given.
      momentum_buffer: like params.
    """

    step: Any
    momentum_buffer: Any


def _matmul(a, b):
    """A bfloat16 matrix product accumulated in float32."""
    return jnp.matmul(a, b, preferred_element_type=jnp.float32)


def _addmm_bf16(c, a, b, beta, alpha=1.0):
    """torch's CPU bfloat16 ``addmm``: ``bf16(fma(beta, c, f32(alpha * (a @ b))))``.

    The fused multiply-add is emulated in float64 (exact product, one rounding to
    float32) when ``jax_enable_x64`` is on; without it, in float32.
    """
    wide = _numerics.hyper_dtype()
    product = (jnp.asarray(alpha).astype(jnp.float32) * _matmul(a, b)).astype(wide)
    fused = jnp.asarray(beta).astype(jnp.float32).astype(wide) * c.astype(wide) + product
    return fused.astype(jnp.float32).astype(jnp.bfloat16)


def orthogonalize_via_newton_schulz(matrix, ns_coefficients=DEFAULT_NS_COEFFICIENTS, ns_steps=5, eps=1e-7):
    r"""torch's quintic Newton–Schulz iteration, in bfloat16 as torch runs it.

    .. math::
       X_0 = G / \max(\|G\|_F, \epsilon), \quad A = X X^\top, \quad
       X \leftarrow aX + (bA + cA^2) X

    The iteration runs on the wide orientation (transposed when rows > columns). Each
    matrix product accumulates in float32 and each ``addmm`` rounds once to bfloat16
    after a fused multiply-add, as torch's CPU kernels do; the result is bfloat16. The
    accumulation order inside a product is XLA's, so an entry can still round the other
    way than torch's now and then: Muon agrees with torch to about 1e-4 relative.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> x = gradxform.orthogonalize_via_newton_schulz(jnp.array([[3.0, 0.0], [0.0, 0.5]]))
      >>> x.dtype, [round(float(v), 1) for v in jnp.diag(x)]  # torch's _zeropower_via_newtonschulz gives the same
      (dtype(bfloat16), [0.7, 1.0])
    """
    SPECS["muon"].check_torch({"ns_steps": ns_steps}, "step")  # torch's checks, in its order
    if jnp.ndim(matrix) != 2:
        raise ValueError("Input tensor gradient must be a 2D matrix")
    SPECS["muon"].check_torch({"ns_coefficients": ns_coefficients}, "step")
    a, b, c = ns_coefficients
    bf16 = jnp.bfloat16
    x = jnp.asarray(matrix).astype(bf16)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)))).astype(bf16)
    norm = jnp.maximum(norm, jnp.asarray(eps).astype(bf16))
    x = (x.astype(jnp.float32) / norm.astype(jnp.float32)).astype(bf16)
    for _ in range(ns_steps):
        gram = _matmul(x, x.T).astype(bf16)
        gram_update = _addmm_bf16(gram, gram, gram, beta=b, alpha=c)
        x = _addmm_bf16(x, gram_update, x, beta=a)
    return x.T if tall else x


def adjusted_lr_ratio(shape, adjust_lr_fn: str | None) -> float:
    """torch's Muon learning-rate ratio for a ``(A, B)`` parameter."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return 1.0


def _check_2d(params):
    for path, p in jax.tree_util.tree_leaves_with_path(params):
        if jnp.ndim(p) != 2:
            raise ValueError(
                f"{registry.MUON_2D}{tuple(jnp.shape(p))} at {jax.tree_util.keystr(path) or 'the root'}"
            )
        if jnp.iscomplexobj(p):
            raise ValueError(SPECS["muon"].complex_message)


def scale_by_muon(
    momentum=0.95,
    nesterov: bool = True,
    ns_coefficients=DEFAULT_NS_COEFFICIENTS,
    eps=1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
    *,
    state_dtype=None,
):
    r"""Muon's direction for 2-D leaves.

    .. math::
       b_t = \mathrm{lerp}(b_{t-1}, g_t, 1-\mu), \quad
       u_t = \mathrm{lerp}(g_t, b_t, \mu) \text{ (Nesterov) or } b_t, \quad
       d_t = r \cdot \mathrm{NS}(u_t)

    with :math:`r` from ``adjust_lr_fn`` (:func:`adjusted_lr_ratio`).

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.scale_by_muon(nesterov=False)
      >>> d, _ = tx.update(jnp.eye(2), tx.init(jnp.zeros((2, 2))))
      >>> jnp.diag(d).tolist()  # b_1 = 0.05 g; NS(b_1) has singular values near 1
      [1.125, 1.125]
    """

    def init(params):
        _check_2d(params)
        return ScaleByMuonState(_numerics.shared_step(params), _numerics.zeros_like_buffer(params, state_dtype))

    def leaf(g, buf, coefficients):
        if jnp.ndim(g) != 2:
            raise ValueError("Param gradient must be a 2D matrix")
        dtype = _numerics.compute_dtype(g.dtype)
        g = g.astype(dtype)
        to_buffer, to_direction = coefficients(dtype)
        buf_new = _numerics.lerp(buf.astype(dtype), g, to_buffer)
        direction = _numerics.lerp(g, buf_new, to_direction) if nesterov else buf_new
        ortho = orthogonalize_via_newton_schulz(direction, ns_coefficients, ns_steps, eps)
        ratio = adjusted_lr_ratio(g.shape, adjust_lr_fn)
        return ortho.astype(dtype) * _numerics.scalar(ratio, g), buf_new.astype(buf.dtype)

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        if _numerics.has_no_leaves(updates):
            return updates, state
        _treecheck.check_state(updates, state, like=("momentum_buffer",))
        cast = _numerics.once_per_dtype(
            lambda real: (
                _numerics.lerp_weight(1 - jnp.asarray(momentum), real),
                _numerics.lerp_weight(momentum, real),
            )
        )
        coefficients, (step,) = _numerics.scalar_rule(lambda step: ((step + 1,), cast), updates, state.step)
        direction, buf = _numerics.leafwise(
            leaf, updates, state.momentum_buffer, num_outputs=2, per_leaf=coefficients
        )
        return direction, ScaleByMuonState(step, buf)

    return GradientTransformation(init, update)


def muon(
    learning_rate=1e-3,
    weight_decay=0.1,
    momentum=0.95,
    nesterov: bool = True,
    ns_coefficients=DEFAULT_NS_COEFFICIENTS,
    eps=1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
    *,
    state_dtype=None,
) -> GradientTransformation:
    r"""Muon, as ``torch.optim.Muon``: for 2-D parameters only.

    :math:`\theta_t = \theta_{t-1}(1 - \gamma\lambda) - \gamma d_t` with :math:`d_t` from
    :func:`scale_by_muon`. Newton–Schulz runs in bfloat16 as in torch, so results agree
    with torch to bfloat16 rounding, not to float32 precision.

    Args:
      learning_rate: :math:`\gamma`; a float, a scalar array or a schedule.
      weight_decay: :math:`\lambda`, decoupled.
      momentum: :math:`\mu`.
      nesterov: Nesterov-style momentum.
      ns_coefficients: :math:`(a, b, c)` of the quintic iteration.
      eps: floor of the Frobenius norm.
      ns_steps: iterations (< 100).
      adjust_lr_fn: ``None``/``"original"`` (:math:`\sqrt{\max(1, A/B)}`) or
        ``"match_rms_adamw"`` (:math:`0.2\sqrt{\max(A, B)}`).
      state_dtype: dtype of the momentum buffer.

    Raises:
      ValueError: at ``init``, for a parameter that is not 2-D (use
        ``optax.multi_transform`` or a mask to give those to another optimizer).

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.muon(0.1, weight_decay=0.0)
      >>> params = jnp.zeros((2, 2))
      >>> updates, _ = tx.update(jnp.eye(2), tx.init(params), params)
      >>> jnp.diag(updates).tolist()  # NS maps singular values near 1, not exactly to 1
      [-0.1125, -0.1125]

    Reference: Jordan et al., 2024; ``torch.optim.Muon``.
    """
    SPECS["muon"].check_core(
        learning_rate=learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
        adjust_lr_fn=adjust_lr_fn,
        ns_steps=ns_steps,
        ns_coefficients=ns_coefficients,
    )

    def build(learning_rate, momentum, ns_coefficients, eps, weight_decay=None):
        return _common.standard_chain(
            scale_by_muon(
                momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn, state_dtype=state_dtype
            ),
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            decoupled_weight_decay=True,
        )

    return _common.inject(
        build,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        momentum=momentum,
        ns_coefficients=ns_coefficients,
        eps=eps,
    )

"""SparseAdam: Adam that touches only the entries a gradient has (``torch.optim.SparseAdam``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _numerics, _treecheck
from gradxform.base import GradientTransformation, chain
from gradxform import transforms
from gradxform.optimizers import _common
from gradxform.registry import SPECS
from gradxform.optimizers.adam import bias_corrections


class ScaleBySparseAdamState(NamedTuple):
    """State of :func:`scale_by_sparse_adam`.

    Attributes:
      step: int32 ``[]``, the updates done (every update, touched or not, as torch): one
        scalar for all the leaves (what ``init`` makes), or a tree of per-leaf scalars
        like params (torch's per-parameter ``step``, as torch_compat fills it);
        ``update`` keeps the form it is given.
      exp_avg: like params.
      exp_avg_sq: like params.
    """

    step: Any
    exp_avg: Any
    exp_avg_sq: Any


def _is_bcoo(x) -> bool:
    return _treecheck.is_sparse(x, "BCOO")


def _dense_and_mask(g):
    """A gradient as (dense values, mask of the entries it has)."""
    if _is_bcoo(g):
        hits = type(g)((jnp.ones(g.data.shape, jnp.int32), g.indices), shape=g.shape)
        return g.todense(), hits.todense() > 0
    g = jnp.asarray(g)
    return g, g != 0


def scale_by_sparse_adam(beta1=0.9, beta2=0.999, eps=1e-8, *, maximize: bool = False, state_dtype=None):
    r"""SparseAdam's direction: Adam's moments updated only where the gradient has entries.

    A gradient leaf is either a ``jax.experimental.sparse.BCOO`` array (its stored
    entries are "touched", duplicates are summed as torch's ``coalesce``), or a dense
    array whose non-zero entries are touched. Elsewhere the moments and the parameter
    stay as they are. For touched entries:

    .. math::
       m \leftarrow m + (1-\beta_1)(g - m), \quad v \leftarrow v + (1-\beta_2)(g^2 - v), \quad
       d = \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t} \cdot \frac{m}{\sqrt{v} + \epsilon}

    ``maximize`` negates the gradient here (before densifying), so that sparse leaves are
    never passed through dense transformations.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.scale_by_sparse_adam()
      >>> d, _ = tx.update(jnp.array([0.5, 0.0]), tx.init(jnp.zeros(2)))
      >>> d.tolist()  # sign(g) where touched, 0 elsewhere
      [1.0, 0.0]
    """

    def init(params):
        complex_leaves = [
            jax.tree_util.keystr(path) or "the root"
            for path, p in jax.tree_util.tree_leaves_with_path(params)
            if jnp.iscomplexobj(p)
        ]
        if complex_leaves:
            raise ValueError(
                f"Complex params at {', '.join(complex_leaves)}: {SPECS['sparse_adam'].complex_message}"
            )
        zeros = lambda: _numerics.zeros_like_buffer(params, state_dtype)  # noqa: E731
        return ScaleBySparseAdamState(_numerics.shared_step(params), zeros(), zeros())

    def scalars(step):
        """The new step, and this step's coefficients (a function of dtype)."""
        step = step + 1
        bc1, bc2 = bias_corrections(beta1, beta2, step)
        return (step,), _numerics.cast_once(1 - jnp.asarray(beta1), 1 - jnp.asarray(beta2), eps, jnp.sqrt(bc2) / bc1)

    def leaf(gm, m, v, coefficients):
        g, mask = gm
        dtype = _numerics.compute_dtype(g.dtype)
        g = g.astype(dtype)
        if maximize:
            g = -g
        one_minus_beta1, one_minus_beta2, eps_, step_size = coefficients(dtype)
        m_old, v_old = m.astype(dtype), v.astype(dtype)
        m_delta = (g - m_old) * one_minus_beta1
        v_delta = (g * g - v_old) * one_minus_beta2
        m_new, v_new = m_delta + m_old, v_delta + v_old
        direction = (m_new / (jnp.sqrt(v_new) + eps_)) * step_size
        zero = jnp.zeros_like(direction)
        return (
            jnp.where(mask, direction, zero),
            jnp.where(mask, m_new, m_old).astype(m.dtype),
            jnp.where(mask, v_new, v_old).astype(v.dtype),
        )

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        if _numerics.has_no_leaves(updates):
            return updates, state
        _treecheck.check_state(updates, state, like=("exp_avg", "exp_avg_sq"))
        pairs = jax.tree.map(_dense_and_mask, updates, is_leaf=_is_bcoo)
        treedef = jax.tree.structure(state.exp_avg)
        pairs = treedef.flatten_up_to(pairs)
        # The moments' tree stands for the updates' (whose BCOO leaves are not leaves to jax.tree).
        coefficients, (step,) = _numerics.scalar_rule(scalars, state.exp_avg, state.step)
        outputs = [
            leaf(gm, m, v, c)
            for gm, m, v, c in zip(
                pairs,
                treedef.flatten_up_to(state.exp_avg),
                treedef.flatten_up_to(state.exp_avg_sq),
                coefficients,
            )
        ]
        direction, m, v = (treedef.unflatten(list(col)) for col in zip(*outputs))
        return direction, ScaleBySparseAdamState(step, m, v)

    return GradientTransformation(init, update)


def sparse_adam(
    learning_rate=1e-3,
    betas=(0.9, 0.999),
    eps=1e-8,
    maximize: bool = False,
    *,
    state_dtype=None,
) -> GradientTransformation:
    r"""SparseAdam, number for number with ``torch.optim.SparseAdam``.

    :math:`\theta \leftarrow \theta - \gamma d` on the touched entries, with :math:`d` from
    :func:`scale_by_sparse_adam`. Gradients may be ``BCOO`` arrays or dense arrays whose
    untouched entries are zero (embedding gradients, for example).

    Args:
      learning_rate: :math:`\gamma` (> 0); a float, a scalar array or a schedule.
      betas: :math:`(\beta_1, \beta_2)`.
      eps: added to the denominator (> 0).
      maximize: maximize the objective.
      state_dtype: dtype of the moment buffers.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> tx = gradxform.sparse_adam(0.1)
      >>> updates, _ = tx.update(jnp.array([2.0, 0.0]), tx.init(jnp.zeros(2)))
      >>> [round(u, 6) for u in updates.tolist()]
      [-0.1, 0.0]

    Reference: ``torch.optim.SparseAdam``.
    """
    SPECS["sparse_adam"].check_core(learning_rate=learning_rate, betas=betas, eps=eps)

    def build(learning_rate, betas, eps):
        return chain(
            scale_by_sparse_adam(betas[0], betas[1], eps, maximize=maximize, state_dtype=state_dtype),
            transforms.scale_by_learning_rate(learning_rate),
        )

    return _common.inject(build, optional=(), learning_rate=learning_rate, betas=betas, eps=eps)

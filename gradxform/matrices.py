"""Running a matrix optimizer (Muon) on parameters of more than 2 dimensions."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradxform import base


def _as_matrix(x):
    """``(d0, d1, ..., dk)`` as ``(d0, d1 * ... * dk)``; arrays of at most 2 dims unchanged."""
    if x is None or jnp.ndim(x) <= 2:
        return x
    return jnp.reshape(x, (jnp.shape(x)[0], -1))


def as_matrices(inner: base.GradientTransformation) -> base.GradientTransformation:
    r"""Runs ``inner`` with every leaf of more than 2 dimensions seen as a matrix.

    A leaf of shape :math:`(d_0, d_1, \ldots, d_k)` is reshaped to
    :math:`(d_0, d_1 \cdots d_k)` (the first axis stays, the trailing ones are flattened)
    before ``inner`` sees it, and its update is reshaped back; leaves of at most 2
    dimensions pass unchanged. ``inner``'s state holds the matrices.

    This is the opt-in way to run :func:`gradxform.muon` on convolution kernels and other
    >2-D parameters (``gradxform.as_matrices(gradxform.muon(0.02))``), as Keller
    Jordan's reference implementation does with ``g.view(len(g), -1)``. ``torch.optim.Muon``
    refuses such parameters, and so does :func:`gradxform.muon` on its own: the
    torch-exact default is unchanged. Note which axis is kept: a conv kernel laid out
    ``(out, in, h, w)`` as in torch becomes ``(out, in*h*w)``; flax's ``(h, w, in, out)``
    would become ``(h, w*in*out)``, so transpose such kernels' layout first if the output
    channels should be the rows.

    Args:
      inner: the transformation to run on the matrices.

    Returns:
      A transformation with ``inner``'s state (over the reshaped leaves).

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> kernel = jnp.ones((4, 2, 3, 3))  # (out, in, h, w)
      >>> tx = gradxform.as_matrices(gradxform.muon(0.02))
      >>> state = tx.init(kernel)
      >>> state.inner_state[0].momentum_buffer.shape
      (4, 18)
      >>> updates, state = tx.update(kernel, state, kernel)
      >>> updates.shape
      (4, 2, 3, 3)
    """

    def matrices(tree):
        return jax.tree.map(_as_matrix, tree)

    def init(params):
        return inner.init(matrices(params))

    takes_extra = base._accepts_extra_args(inner.update)

    def update(updates, state, params=None, **extra_args):
        kwargs = extra_args if takes_extra else {}
        new, state = inner.update(matrices(updates), state, None if params is None else matrices(params), **kwargs)
        return jax.tree.map(lambda u, old: jnp.reshape(u, jnp.shape(old)), new, updates), state

    return base.GradientTransformation(init, update)

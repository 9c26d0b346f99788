"""``RMSprop``: torch.optim.RMSprop on :func:`gradxform.rmsprop`."""

from __future__ import annotations

from torch_compat.optim._from_spec import SpecOptimizer


class RMSprop(SpecOptimizer, alias="rmsprop"):
    """RMSprop, as ``torch.optim.RMSprop`` (see :func:`gradxform.rmsprop`).

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> w = torch_compat.Parameter(jnp.array([1.0, -2.0]))
      >>> optimizer = optim.RMSprop([w], lr=0.01)
      >>> w.grad = jnp.array([0.5, -0.5])
      >>> optimizer.step()
      >>> w.data.tolist()  # first step: w - 10 * lr * sign(grad)
      [0.9, -1.9]
    """

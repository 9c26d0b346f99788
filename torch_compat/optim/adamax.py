"""``Adamax``: torch.optim.Adamax on :func:`gradxform.adamax`."""

from __future__ import annotations

from torch_compat.optim._from_spec import SpecOptimizer


class Adamax(SpecOptimizer, alias="adamax"):
    """Adamax, as ``torch.optim.Adamax`` (see :func:`gradxform.adamax`).

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> w = torch_compat.Parameter(jnp.array([1.0, -2.0]))
      >>> optimizer = optim.Adamax([w], lr=0.1)
      >>> w.grad = jnp.array([0.5, -0.5])
      >>> optimizer.step()
      >>> w.data.tolist()  # first step: w - lr * sign(grad)
      [0.9, -1.9]
    """

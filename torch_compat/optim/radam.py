"""``RAdam``: torch.optim.RAdam on :func:`gradxform.radam`."""

from __future__ import annotations

from torch_compat.optim._from_spec import SpecOptimizer


class RAdam(SpecOptimizer, alias="radam"):
    """RAdam, as ``torch.optim.RAdam`` (see :func:`gradxform.radam`).

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> w = torch_compat.Parameter(jnp.array([1.0, -2.0]))
      >>> optimizer = optim.RAdam([w], lr=0.1)
      >>> w.grad = jnp.array([0.5, -0.5])
      >>> optimizer.step()
      >>> w.data.tolist()  # not rectified yet: w - lr * grad
      [0.95, -1.95]
    """

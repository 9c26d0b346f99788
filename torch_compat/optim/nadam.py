"""``NAdam``: torch.optim.NAdam on :func:`gradxform.nadam`."""

from __future__ import annotations

from torch_compat.optim._from_spec import SpecOptimizer


class NAdam(SpecOptimizer, alias="nadam"):
    """NAdam, as ``torch.optim.NAdam`` (see :func:`gradxform.nadam`).

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> w = torch_compat.Parameter(jnp.array([1.0, -2.0]))
      >>> optimizer = optim.NAdam([w], lr=0.1)
      >>> w.grad = jnp.array([0.5, -0.5])
      >>> optimizer.step()
      >>> w.data.tolist()
      [0.89435, -1.8944]
    """

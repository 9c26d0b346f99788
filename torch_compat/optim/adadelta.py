"""``Adadelta``: torch.optim.Adadelta on :func:`gradxform.adadelta`."""

from __future__ import annotations

from torch_compat.optim._from_spec import SpecOptimizer


class Adadelta(SpecOptimizer, alias="adadelta"):
    """Adadelta, as ``torch.optim.Adadelta`` (see :func:`gradxform.adadelta`).

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> w = torch_compat.Parameter(jnp.array([1.0, -2.0]))
      >>> optimizer = optim.Adadelta([w], lr=1.0)
      >>> w.grad = jnp.array([0.5, -0.5])
      >>> optimizer.step()
      >>> w.data.tolist()
      [0.99684, -1.9968]
    """

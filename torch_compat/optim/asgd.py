"""``ASGD``: torch.optim.ASGD on :func:`gradxform.asgd`."""

from __future__ import annotations

from torch_compat.optim._from_spec import SpecOptimizer


class ASGD(SpecOptimizer, alias="asgd"):
    """Averaged SGD, as ``torch.optim.ASGD`` (see :func:`gradxform.asgd`).

    The averaged parameters are ``optimizer.state[p]["ax"]``.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> w = torch_compat.Parameter(jnp.array([1.0, -2.0]))
      >>> optimizer = optim.ASGD([w], lr=0.1)
      >>> w.grad = jnp.array([0.5, -0.5])
      >>> optimizer.step()
      >>> w.data.tolist()  # w * (1 - lambd * lr) - lr * grad
      [0.94999, -1.95]
    """

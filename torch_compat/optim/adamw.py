"""``AdamW``: torch.optim.AdamW on :func:`gradxform.adamw`."""

from __future__ import annotations

from torch_compat.optim.adam import Adam


class AdamW(Adam, alias="adamw"):
    """AdamW, as ``torch.optim.AdamW``: :class:`Adam` with decoupled weight decay.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> w = torch_compat.Parameter(jnp.array([1.0, -2.0]))
      >>> optimizer = optim.AdamW([w], lr=0.1, weight_decay=0.5)
      >>> w.grad = jnp.array([0.5, -0.5])
      >>> optimizer.step()
      >>> w.data.tolist()  # w * (1 - lr * weight_decay) - lr * sign(grad)
      [0.85, -1.8]
    """

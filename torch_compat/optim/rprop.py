"""``Rprop``: torch.optim.Rprop on :func:`gradxform.rprop`."""

from __future__ import annotations

from torch_compat.optim._from_spec import SpecOptimizer
from torch_compat.optim.optimizer import _shape_mismatch_message


class Rprop(SpecOptimizer, alias="rprop"):
    """Rprop, as ``torch.optim.Rprop`` (see :func:`gradxform.rprop`).

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> w = torch_compat.Parameter(jnp.array([1.0, -2.0]))
      >>> optimizer = optim.Rprop([w], lr=0.1)
      >>> w.grad = jnp.array([0.5, -0.5])
      >>> optimizer.step()
      >>> w.data.tolist()  # first step: w - lr * sign(grad)
      [0.9, -1.9]
    """

    @classmethod
    def _state_shape_error(cls, key, shape, expected):
        if key == "prev" and expected:  # torch multiplies grad.mul(prev): the buffer is tensor b
            return RuntimeError(_shape_mismatch_message(shape, expected, buffer_first=False))
        return super()._state_shape_error(key, shape, expected)

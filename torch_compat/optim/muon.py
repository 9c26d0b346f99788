"""``Muon``: torch.optim.Muon on :func:`gradxform.muon`."""

from __future__ import annotations

from gradxform import _internal
from torch_compat.optim._from_spec import SpecOptimizer


class Muon(SpecOptimizer, alias="muon"):
    """Muon, as ``torch.optim.Muon`` (see :func:`gradxform.muon`): 2-D parameters only.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> w = torch_compat.Parameter(jnp.zeros((2, 2)))
      >>> optimizer = optim.Muon([w], lr=0.1, weight_decay=0.0)
      >>> w.grad = jnp.eye(2)
      >>> optimizer.step()
      >>> [round(v, 4) for v in jnp.diag(w.data).tolist()]  # Newton-Schulz maps singular values near 1
      [-0.1125, -0.1125]
    """

    def _after_groups(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"{_internal.MUON_2D}torch.Size({list(p.shape)})")

    def _grad_for_step(self, param, group):
        if param.is_complex():
            raise RuntimeError(self._spec.complex_message)
        return super()._grad_for_step(param, group)

    @classmethod
    def _state_shape_error(cls, key, shape, expected):
        ndim = max(len(shape), len(expected))
        a = (1,) * (ndim - len(shape)) + tuple(shape)
        b = (1,) * (ndim - len(expected)) + tuple(expected)
        broadcasts = all(x == y or 1 in (x, y) for x, y in zip(a, b))
        if broadcasts and ndim != 2:  # the buffer's shape reaches torch's Newton-Schulz iteration
            return ValueError("Input tensor gradient must be a 2D matrix")
        return super()._state_shape_error(key, shape, expected)

    def _check_group_with_grads(self, group):
        super()._check_group_with_grads(group)  # ns_steps < 100, 3 coefficients
        range(group["ns_steps"])  # torch iterates range(ns_steps): a float is a TypeError

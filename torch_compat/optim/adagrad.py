"""``Adagrad``: torch.optim.Adagrad on :func:`gradxform.adagrad`."""

from __future__ import annotations

import jax.numpy as jnp
from jax.experimental import sparse

from gradxform import _internal
from torch_compat.optim._from_spec import SpecOptimizer, scalar


class Adagrad(SpecOptimizer, alias="adagrad"):
    """Adagrad, as ``torch.optim.Adagrad`` (see :func:`gradxform.adagrad`).

    As in torch, the state (``step``, ``sum``) of the constructor's parameters is created
    by the constructor. Sparse (BCOO) gradients are accepted when ``weight_decay == 0``.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> w = torch_compat.Parameter(jnp.array([1.0, -2.0]))
      >>> optimizer = optim.Adagrad([w], lr=0.1)
      >>> w.grad = jnp.array([0.5, -0.5])
      >>> optimizer.step()
      >>> w.data.tolist()  # first step: w - lr * sign(grad)
      [0.9, -1.9]
    """

    def _after_groups(self):
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["step"] = jnp.zeros([], jnp.float32)
                self.state[p]["sum"] = _internal.full_like_buffer(p.data, self.defaults["initial_accumulator_value"])

    def _grad_for_step(self, param, group):
        if isinstance(param.grad, sparse.BCOO) and scalar(group["weight_decay"]) != 0:
            raise RuntimeError("weight_decay option is not compatible with sparse gradients")
        return super()._grad_for_step(param, group)

    def _structure(self, group):
        # torch creates a later parameter's sum from the constructor's value.
        return {"initial_accumulator_value": self.defaults["initial_accumulator_value"]}

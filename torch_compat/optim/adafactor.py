"""``Adafactor``: torch.optim.Adafactor on :func:`gradxform.adafactor`."""

from __future__ import annotations

from torch_compat.optim._from_spec import SpecOptimizer


class Adafactor(SpecOptimizer, alias="adafactor"):
    """Adafactor, as ``torch.optim.Adafactor`` (see :func:`gradxform.adafactor`).

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> w = torch_compat.Parameter(jnp.array([1.0, -2.0]))
      >>> optimizer = optim.Adafactor([w], lr=0.01)
      >>> w.grad = jnp.array([0.5, -0.5])
      >>> optimizer.step()
      >>> w.data.tolist()  # w - lr * RMS(w) * sign(grad)
      [0.98419, -1.9842]
    """

    def _grad_for_step(self, param, group):
        if param.is_complex():
            raise RuntimeError(self._spec.complex_message)
        return super()._grad_for_step(param, group)

    @classmethod
    def _missing_state_error(cls, key):
        # torch reads these with state.get and asserts in its update.
        if key in ("row_var", "col_var"):
            return AssertionError("row_var and col_var should be defined when grad is multidimensional")
        if key == "variance":
            return AssertionError("variance should be defined when grad is a vector")
        return super()._missing_state_error(key)

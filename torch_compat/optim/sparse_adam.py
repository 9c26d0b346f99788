"""``SparseAdam``: torch.optim.SparseAdam on :func:`gradxform.sparse_adam`."""

from __future__ import annotations

from torch_compat.optim._from_spec import SpecOptimizer


class SparseAdam(SpecOptimizer, alias="sparse_adam"):
    """SparseAdam, as ``torch.optim.SparseAdam`` (see :func:`gradxform.sparse_adam`).

    A gradient is either a ``jax.experimental.sparse.BCOO`` array, whose stored entries
    play the role of a torch sparse gradient's indices, or a dense array (what
    ``jax.grad`` gives) whose untouched entries are exactly zero: its nonzero entries are
    treated as torch treats the indices of a sparse gradient. ``state[p]["step"]`` is a
    Python int, as in torch.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> w = torch_compat.Parameter(jnp.array([1.0, -2.0]))
      >>> optimizer = optim.SparseAdam([w], lr=0.1)
      >>> w.grad = jnp.array([0.5, 0.0])
      >>> optimizer.step()
      >>> w.data.tolist()  # only the entry with a gradient moves
      [0.9, -2.0]
    """

    def _after_groups(self):
        complex_params = [
            [i, j] for i, group in enumerate(self.param_groups) for j, p in enumerate(group["params"]) if p.is_complex()
        ]
        if complex_params:
            raise ValueError(f"Complex params at indices {complex_params}: {self._spec.complex_message}")

    def _grad_for_step(self, param, group):
        return param.grad  # BCOO, or dense with zeros where untouched

    def _export_step(self, step):
        return int(step)

    @classmethod
    def _state_shape_error(cls, key, shape, expected):
        if expected:  # torch masks the buffer with the sparse gradient first
            return RuntimeError(
                f"sparse_mask(): operands have incompatible sizes; self has size {list(shape)} "
                f"but mask has size {list(expected)}"
            )
        return super()._state_shape_error(key, shape, expected)

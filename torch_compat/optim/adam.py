"""``Adam``: torch.optim.Adam on :func:`gradxform.adam`."""

from __future__ import annotations

from torch_compat.optim._from_spec import SpecOptimizer, scalar


class Adam(SpecOptimizer, alias="adam"):
    """Adam, as ``torch.optim.Adam`` (see :func:`gradxform.adam`).

    ``foreach`` and ``fused`` are accepted and select nothing. ``capturable=True`` changes
    nothing (the state stays on the device) but is refused for CPU parameters without
    ``fused=True``, as torch refuses it; ``differentiable=True`` has no effect and warns once
    (differentiate through :func:`gradxform.adam` with ``jax.grad`` instead).

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> w = torch_compat.Parameter(jnp.array([1.0, -2.0]))
      >>> optimizer = optim.Adam([w], lr=0.1)
      >>> w.grad = jnp.array([0.5, -0.5])
      >>> optimizer.step()
      >>> w.data.tolist()  # first step: w - lr * sign(grad)
      [0.9, -1.9]
    """

    def _prepare(self, options):
        # torch keeps betas given as 1-element tensors as Python floats.
        return {**options, "betas": tuple(float(scalar(b)) for b in options["betas"])}

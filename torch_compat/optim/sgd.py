"""``SGD``: torch.optim.SGD on :func:`gradxform.sgd`."""

from __future__ import annotations

from torch_compat.optim._from_spec import SpecOptimizer


class SGD(SpecOptimizer, alias="sgd"):
    """Stochastic gradient descent with momentum, as ``torch.optim.SGD`` (see :func:`gradxform.sgd`).

    ``foreach`` and ``fused`` are accepted and select nothing: every step is one compiled
    call. ``differentiable=True`` has no effect and warns once (differentiate through
    :func:`gradxform.sgd` with ``jax.grad`` instead). Sparse (BCOO) gradients are accepted, as torch accepts
    sparse gradients, and give the same numbers as their dense form.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> w = torch_compat.Parameter(jnp.array([1.0, -2.0]))
      >>> optimizer = optim.SGD([w], lr=0.1, momentum=0.9)
      >>> w.grad = jnp.array([0.5, -0.5])
      >>> optimizer.step()
      >>> w.data.tolist()  # first step: w - lr * grad
      [0.95, -1.95]
    """

    _repeats_see_initial_state = True

    @classmethod
    def _core_kwargs(cls, options):
        kwargs = super()._core_kwargs(options)
        if "momentum" in options["zero_options"]:
            # Unused without momentum (torch never reads them then, whatever they hold).
            kwargs.update(dampening=0.0, nesterov=False)
        return kwargs

"""``SGD``: torch.optim.SGD on gradxform.sgd."""

from __future__ import annotations

import gradxform
from torch_compat.optim import _validation
from torch_compat.optim.optimizer import GradxformOptimizer


class SGD(GradxformOptimizer):
    """Stochastic gradient descent with momentum, as ``torch.optim.SGD`` (see :func:`gradxform.sgd`).

    ``foreach``, ``differentiable`` and ``fused`` are accepted and have no effect: every
    step is one compiled call. Sparse (BCOO) gradients are accepted, as torch accepts
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

    _state_keys = ("momentum_buffer",)
    _recreated_state_keys = ("momentum_buffer",)  # torch: state.get("momentum_buffer"), None -> a copy of grad
    _keys_read_on_load = ()
    _hyperparams = ("lr", "momentum", "dampening", "weight_decay")
    _zero_options = ("weight_decay", "momentum")
    _repeats_see_initial_state = True

    def __init__(
        self,
        params,
        lr=1e-3,
        momentum=0,
        dampening=0,
        weight_decay=0,
        nesterov=False,
        *,
        maximize=False,
        foreach=None,
        differentiable=False,
        fused=None,
    ):
        _validation.check_tensor_lr(lr)
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, defaults)
        _validation.check_fused(fused, foreach, differentiable)

    def _group_defaults_on_load(self):
        return dict(nesterov=False, maximize=False, foreach=None, differentiable=False, fused=False)

    @staticmethod
    def _make_transform(o):
        return gradxform.sgd(
            o["lr"],
            o["momentum"],
            # Unused without momentum (torch never reads it then, whatever it holds).
            o["dampening"] if "momentum" not in o["zero_options"] else 0.0,
            o["weight_decay"],
            o["nesterov"] and "momentum" not in o["zero_options"],
            maximize=o["maximize"],
        )

"""``ASGD`` and ``Rprop``: torch.optim.ASGD / Rprop on gradxform.asgd / gradxform.rprop."""

from __future__ import annotations

import gradxform
from torch_compat.optim import _validation
from torch_compat.optim.optimizer import GradxformOptimizer, _shape_mismatch_message


class ASGD(GradxformOptimizer):
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

    _state_keys = ("step", "eta", "mu", "ax")
    _keys_read_on_load = ("step", "eta", "mu")
    _hyperparams = ("lr", "lambd", "alpha", "t0", "weight_decay")
    _sparse_grad_message = "ASGD does not support sparse gradients"

    def __init__(
        self,
        params,
        lr=1e-2,
        lambd=1e-4,
        alpha=0.75,
        t0=1e6,
        weight_decay=0,
        foreach=None,
        maximize=False,
        differentiable=False,
        capturable=False,
    ):
        _validation.check_tensor_lr(lr)
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(
            lr=lr,
            lambd=lambd,
            alpha=alpha,
            t0=t0,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            capturable=capturable,
        )
        super().__init__(params, defaults)

    def _group_defaults_on_load(self):
        return dict(foreach=None, maximize=False, differentiable=False, capturable=False)

    @staticmethod
    def _make_transform(o):
        return gradxform.asgd(o["lr"], o["lambd"], o["alpha"], o["t0"], o["weight_decay"], o["maximize"])


class Rprop(GradxformOptimizer):
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

    _state_keys = ("step", "prev", "step_size")
    _hyperparams = ("lr", "etas", "step_sizes")
    _unpacked_pairs = ("etas", "step_sizes")
    _sparse_grad_message = "Rprop does not support sparse gradients"

    def __init__(
        self,
        params,
        lr=1e-2,
        etas=(0.5, 1.2),
        step_sizes=(1e-6, 50),
        *,
        capturable=False,
        foreach=None,
        maximize=False,
        differentiable=False,
    ):
        _validation.check_tensor_lr(lr)
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 < etas[0] < 1.0 < etas[1]:
            raise ValueError(f"Invalid eta values: {etas[0]}, {etas[1]}")
        defaults = dict(
            lr=lr,
            etas=etas,
            step_sizes=step_sizes,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            capturable=capturable,
        )
        super().__init__(params, defaults)

    def _group_defaults_on_load(self):
        return dict(foreach=None, maximize=False, differentiable=False, capturable=False)

    @classmethod
    def _state_shape_error(cls, key, shape, expected):
        if key == "prev" and expected:  # torch multiplies grad.mul(prev): the buffer is tensor b
            return RuntimeError(_shape_mismatch_message(shape, expected, buffer_first=False))
        return super()._state_shape_error(key, shape, expected)

    @staticmethod
    def _make_transform(o):
        return gradxform.rprop(o["lr"], o["etas"], o["step_sizes"], maximize=o["maximize"])

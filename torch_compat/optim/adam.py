"""``Adam`` and ``AdamW``: torch.optim.Adam / AdamW on gradxform.adam."""

from __future__ import annotations

import gradxform
from torch_compat.optim import _validation
from torch_compat.optim.optimizer import GradxformOptimizer


class Adam(GradxformOptimizer):
    """Adam, as ``torch.optim.Adam`` (see :func:`gradxform.adam`).

    ``foreach``, ``capturable``, ``differentiable`` and ``fused`` are accepted and have no
    effect here.

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

    _state_keys = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _hyperparams = ("lr", "betas", "eps", "weight_decay")
    _sparse_grad_message = "Adam does not support sparse gradients, please consider SparseAdam instead"
    _unpacked_pairs = ("betas",)

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        amsgrad=False,
        *,
        foreach=None,
        maximize=False,
        capturable=False,
        differentiable=False,
        fused=None,
        decoupled_weight_decay=False,
    ):
        if _validation.is_tensor(lr):
            if foreach and not capturable:
                raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
            _validation.check_tensor_lr(lr)
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        floats = all(isinstance(b, float) for b in betas)
        tensors = all(_validation.is_tensor(b) for b in betas)
        if not (floats or tensors):
            raise ValueError("betas must be either both floats or both Tensors")
        for index, beta in enumerate(betas):
            if _validation.is_tensor(beta):
                if not capturable and foreach:
                    raise ValueError(
                        f"betas[{index}] as a Tensor is not supported for capturable=False and foreach=True"
                    )
                if int(beta.size) != 1:
                    raise ValueError(f"Tensor betas[{index}] must be 1-element")
        betas = tuple(float(_validation.scalar(b)) for b in betas)
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)
        _validation.check_fused(fused, foreach, differentiable)

    def _group_defaults_on_load(self):
        return dict(
            amsgrad=False,
            maximize=False,
            foreach=None,
            capturable=False,
            differentiable=False,
            decoupled_weight_decay=False,
            fused=None,
        )

    @staticmethod
    def _make_transform(o):
        return gradxform.adam(
            o["lr"],
            o["betas"],
            o["eps"],
            o["weight_decay"],
            o["amsgrad"],
            maximize=o["maximize"],
            decoupled_weight_decay=o["decoupled_weight_decay"],
        )


class AdamW(Adam):
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

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=1e-2,
        amsgrad=False,
        *,
        maximize=False,
        foreach=None,
        capturable=False,
        differentiable=False,
        fused=None,
    ):
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )

    def _group_defaults_on_load(self):
        return {**super()._group_defaults_on_load(), "decoupled_weight_decay": True}

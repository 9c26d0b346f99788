"""Adagrad, Adadelta, RMSprop, Adamax, NAdam and RAdam on their gradxform aliases."""

from __future__ import annotations

import jax.numpy as jnp

import gradxform
from gradxform import _numerics
from torch_compat.optim import _validation
from torch_compat.optim.optimizer import GradxformOptimizer


def _check_betas(lr, betas, eps, weight_decay):
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


class Adagrad(GradxformOptimizer):
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

    _state_keys = ("step", "sum")
    _hyperparams = ("lr", "lr_decay", "eps", "weight_decay")

    def __init__(
        self,
        params,
        lr=1e-2,
        lr_decay=0,
        weight_decay=0,
        initial_accumulator_value=0,
        eps=1e-10,
        foreach=None,
        *,
        maximize=False,
        differentiable=False,
        fused=None,
    ):
        _validation.check_tensor_lr(lr)
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= lr_decay:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= initial_accumulator_value:
            raise ValueError(f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            eps=eps,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)
        _validation.check_fused(fused, foreach, differentiable)
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["step"] = jnp.zeros([], jnp.float32)
                self.state[p]["sum"] = _numerics.full_like_buffer(p.data, initial_accumulator_value)

    def _group_defaults_on_load(self):
        return dict(foreach=None, maximize=False, differentiable=False, fused=None)

    def _grad_for_step(self, param, group):
        from jax.experimental import sparse

        if isinstance(param.grad, sparse.BCOO) and _validation.scalar(group["weight_decay"]) != 0:
            raise RuntimeError("weight_decay option is not compatible with sparse gradients")
        return super()._grad_for_step(param, group)

    def _structure(self, group):
        # torch creates a later parameter's sum from the constructor's value.
        return {"initial_accumulator_value": self.defaults["initial_accumulator_value"]}

    @staticmethod
    def _make_transform(o):
        return gradxform.adagrad(
            o["lr"], o["lr_decay"], o["weight_decay"], o["initial_accumulator_value"], o["eps"], maximize=o["maximize"]
        )


class Adadelta(GradxformOptimizer):
    """Adadelta, as ``torch.optim.Adadelta`` (see :func:`gradxform.adadelta`).

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> w = torch_compat.Parameter(jnp.array([1.0, -2.0]))
      >>> optimizer = optim.Adadelta([w], lr=1.0)
      >>> w.grad = jnp.array([0.5, -0.5])
      >>> optimizer.step()
      >>> w.data.tolist()
      [0.99684, -1.9968]
    """

    _state_keys = ("step", "square_avg", "acc_delta")
    _hyperparams = ("lr", "rho", "eps", "weight_decay")
    _sparse_grad_message = "Adadelta does not support sparse gradients"

    def __init__(
        self,
        params,
        lr=1.0,
        rho=0.9,
        eps=1e-6,
        weight_decay=0,
        foreach=None,
        *,
        capturable=False,
        maximize=False,
        differentiable=False,
    ):
        _validation.check_tensor_lr(lr)
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(
            lr=lr,
            rho=rho,
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
            capturable=capturable,
            foreach=foreach,
            differentiable=differentiable,
        )
        super().__init__(params, defaults)

    def _group_defaults_on_load(self):
        return dict(foreach=None, maximize=False, differentiable=False, capturable=False)

    @staticmethod
    def _make_transform(o):
        return gradxform.adadelta(o["lr"], o["rho"], o["eps"], o["weight_decay"], maximize=o["maximize"])


class RMSprop(GradxformOptimizer):
    """RMSprop, as ``torch.optim.RMSprop`` (see :func:`gradxform.rmsprop`).

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> w = torch_compat.Parameter(jnp.array([1.0, -2.0]))
      >>> optimizer = optim.RMSprop([w], lr=0.01)
      >>> w.grad = jnp.array([0.5, -0.5])
      >>> optimizer.step()
      >>> w.data.tolist()  # first step: w - 10 * lr * sign(grad)
      [0.9, -1.9]
    """

    _state_keys = ("step", "square_avg", "momentum_buffer", "grad_avg")
    _hyperparams = ("lr", "momentum", "alpha", "eps", "weight_decay")
    _sparse_grad_message = "RMSprop does not support sparse gradients"
    _zero_options = ("weight_decay", "momentum")

    def __init__(
        self,
        params,
        lr=1e-2,
        alpha=0.99,
        eps=1e-8,
        weight_decay=0,
        momentum=0,
        centered=False,
        capturable=False,
        foreach=None,
        maximize=False,
        differentiable=False,
    ):
        _validation.check_tensor_lr(lr)
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= momentum:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= alpha:
            raise ValueError(f"Invalid alpha value: {alpha}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            alpha=alpha,
            eps=eps,
            centered=centered,
            weight_decay=weight_decay,
            capturable=capturable,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
        )
        super().__init__(params, defaults)

    def _group_defaults_on_load(self):
        return dict(
            momentum=0, centered=False, foreach=None, maximize=False, differentiable=False, capturable=False
        )

    @staticmethod
    def _make_transform(o):
        return gradxform.rmsprop(
            o["lr"],
            o["alpha"],
            o["eps"],
            o["weight_decay"],
            o["momentum"],
            o["centered"],
            maximize=o["maximize"],
        )


class Adamax(GradxformOptimizer):
    """Adamax, as ``torch.optim.Adamax`` (see :func:`gradxform.adamax`).

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> w = torch_compat.Parameter(jnp.array([1.0, -2.0]))
      >>> optimizer = optim.Adamax([w], lr=0.1)
      >>> w.grad = jnp.array([0.5, -0.5])
      >>> optimizer.step()
      >>> w.data.tolist()  # first step: w - lr * sign(grad)
      [0.9, -1.9]
    """

    _state_keys = ("step", "exp_avg", "exp_inf")
    _hyperparams = ("lr", "betas", "eps", "weight_decay")
    _sparse_grad_message = "Adamax does not support sparse gradients"
    _unpacked_pairs = ("betas",)

    def __init__(
        self,
        params,
        lr=2e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        foreach=None,
        *,
        maximize=False,
        differentiable=False,
        capturable=False,
    ):
        _check_betas(lr, betas, eps, weight_decay)
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
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
        return gradxform.adamax(o["lr"], o["betas"], o["eps"], o["weight_decay"], maximize=o["maximize"])


class NAdam(GradxformOptimizer):
    """NAdam, as ``torch.optim.NAdam`` (see :func:`gradxform.nadam`).

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> w = torch_compat.Parameter(jnp.array([1.0, -2.0]))
      >>> optimizer = optim.NAdam([w], lr=0.1)
      >>> w.grad = jnp.array([0.5, -0.5])
      >>> optimizer.step()
      >>> w.data.tolist()
      [0.89435, -1.8944]
    """

    _state_keys = ("step", "mu_product", "exp_avg", "exp_avg_sq")
    _keys_read_on_load = ("step", "mu_product")
    _hyperparams = ("lr", "betas", "eps", "weight_decay", "momentum_decay")
    _sparse_grad_message = "NAdam does not support sparse gradients"
    _unpacked_pairs = ("betas",)

    def __init__(
        self,
        params,
        lr=2e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        momentum_decay=4e-3,
        decoupled_weight_decay=False,
        *,
        foreach=None,
        maximize=False,
        capturable=False,
        differentiable=False,
    ):
        _check_betas(lr, betas, eps, weight_decay)
        if not 0.0 <= momentum_decay:
            raise ValueError(f"Invalid momentum_decay value: {momentum_decay}")
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
        )
        super().__init__(params, defaults)

    def _group_defaults_on_load(self):
        return dict(
            maximize=False, foreach=None, capturable=False, differentiable=False, decoupled_weight_decay=False
        )

    @staticmethod
    def _make_transform(o):
        return gradxform.nadam(
            o["lr"],
            o["betas"],
            o["eps"],
            o["weight_decay"],
            o["momentum_decay"],
            o["decoupled_weight_decay"],
            maximize=o["maximize"],
        )


class RAdam(GradxformOptimizer):
    """RAdam, as ``torch.optim.RAdam`` (see :func:`gradxform.radam`).

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> w = torch_compat.Parameter(jnp.array([1.0, -2.0]))
      >>> optimizer = optim.RAdam([w], lr=0.1)
      >>> w.grad = jnp.array([0.5, -0.5])
      >>> optimizer.step()
      >>> w.data.tolist()  # not rectified yet: w - lr * grad
      [0.95, -1.95]
    """

    _state_keys = ("step", "exp_avg", "exp_avg_sq")
    _hyperparams = ("lr", "betas", "eps", "weight_decay")
    _sparse_grad_message = "RAdam does not support sparse gradients"
    _unpacked_pairs = ("betas",)

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        decoupled_weight_decay=False,
        *,
        foreach=None,
        maximize=False,
        capturable=False,
        differentiable=False,
    ):
        _check_betas(lr, betas, eps, weight_decay)
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            decoupled_weight_decay=decoupled_weight_decay,
            differentiable=differentiable,
        )
        super().__init__(params, defaults)

    def _group_defaults_on_load(self):
        return dict(
            foreach=None, maximize=False, differentiable=False, capturable=False, decoupled_weight_decay=False
        )

    @staticmethod
    def _make_transform(o):
        return gradxform.radam(
            o["lr"], o["betas"], o["eps"], o["weight_decay"], o["decoupled_weight_decay"], maximize=o["maximize"]
        )

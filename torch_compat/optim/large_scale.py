"""``SparseAdam``, ``Adafactor`` and ``Muon`` on their gradxform aliases."""

from __future__ import annotations


import gradxform
from torch_compat.optim import _validation
from torch_compat.optim.optimizer import GradxformOptimizer


class SparseAdam(GradxformOptimizer):
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

    _state_keys = ("step", "exp_avg", "exp_avg_sq")
    _hyperparams = ("lr", "betas", "eps")
    _keys_read_on_load = ()  # torch's SparseAdam has no __setstate__: a missing key fails at step()
    _unpacked_pairs = ("betas",)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize=False):
        _validation.check_tensor_lr(lr)
        if not 0.0 < lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 < eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, maximize=maximize))
        complex_params = [
            [i, j] for i, group in enumerate(self.param_groups) for j, p in enumerate(group["params"]) if p.is_complex()
        ]
        if complex_params:
            raise ValueError(
                f"Complex params at indices {complex_params}: SparseAdam does not support complex parameters"
            )

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

    @staticmethod
    def _make_transform(o):
        return gradxform.sparse_adam(o["lr"], o["betas"], o["eps"], o["maximize"])


class Adafactor(GradxformOptimizer):
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

    _state_keys = ("step", "row_var", "col_var", "variance")
    _hyperparams = ("lr", "beta2_decay", "eps", "d", "weight_decay")
    _sparse_grad_message = "Adafactor does not support sparse gradients"
    _unpacked_pairs = ("eps",)

    def __init__(
        self,
        params,
        lr=1e-2,
        beta2_decay=-0.8,
        eps=(None, 1e-3),
        d=1.0,
        weight_decay=0.0,
        *,
        foreach=None,
        maximize=False,
    ):
        _validation.check_tensor_lr(lr)
        if not 0.0 <= lr:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not 0.0 >= beta2_decay:
            raise ValueError(f"beta2_decay should be <= 0 but is: {beta2_decay}")
        if eps[0] is not None and not 0.0 <= eps[0]:
            raise ValueError(f"epsilon1 should be >= 0 but is: {eps[0]}")
        if not 0.0 <= eps[1]:
            raise ValueError(f"epsilon2 should be >= 0 but is: {eps[1]}")
        if not 1.0 <= d:
            raise ValueError(f"Clipping threshold d should be >= 1 but is: {d}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"weight_decay should be >= 0 but is: {weight_decay}")
        defaults = dict(
            lr=lr, beta2_decay=beta2_decay, eps=eps, d=d, weight_decay=weight_decay, foreach=foreach, maximize=maximize
        )
        super().__init__(params, defaults)

    def _grad_for_step(self, param, group):
        if param.is_complex():
            raise RuntimeError("Adafactor does not support complex parameters")
        return super()._grad_for_step(param, group)

    @classmethod
    def _missing_state_error(cls, key):
        # torch reads these with state.get and asserts in its update.
        if key in ("row_var", "col_var"):
            return AssertionError("row_var and col_var should be defined when grad is multidimensional")
        if key == "variance":
            return AssertionError("variance should be defined when grad is a vector")
        return super()._missing_state_error(key)

    @staticmethod
    def _make_transform(o):
        return gradxform.adafactor(o["lr"], o["beta2_decay"], o["eps"], o["d"], o["weight_decay"], maximize=o["maximize"])


class Muon(GradxformOptimizer):
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

    _state_keys = ("momentum_buffer",)
    _recreated_state_keys = ("momentum_buffer",)  # torch: zeros when "momentum_buffer" not in state
    _keys_read_on_load = ()
    _hyperparams = ("lr", "weight_decay", "momentum", "ns_coefficients", "eps")
    _sparse_grad_message = "Muon does not support sparse gradients"

    def __init__(
        self,
        params,
        lr=1e-3,
        weight_decay=0.1,
        momentum=0.95,
        nesterov=True,
        ns_coefficients=gradxform.optimizers.muon.DEFAULT_NS_COEFFICIENTS,
        eps=1e-7,
        ns_steps=5,
        adjust_lr_fn=None,
    ):
        _validation.check_tensor_lr(lr)
        if not 0.0 <= lr:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not 0.0 <= momentum:
            raise ValueError(f"momentum should be >= 0 but is: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"weight decay should be >= 0 but is: {weight_decay}")
        if adjust_lr_fn is not None and adjust_lr_fn not in ["original", "match_rms_adamw"]:
            raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_coefficients=ns_coefficients,
            eps=eps,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(
                        "Muon only supports 2D parameters whereas we found a parameter with size: "
                        f"torch.Size({list(p.shape)})"
                    )

    def _grad_for_step(self, param, group):
        if param.is_complex():
            raise RuntimeError("Muon does not support complex parameters")
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
        # torch checks these in its Newton-Schulz iteration, at the first step.
        if group["ns_steps"] >= 100:
            raise ValueError("Number of steps must be less than 100 for computational efficiency")
        if len(group["ns_coefficients"]) != 3:
            raise ValueError("Coefficients must be a tuple of exactly 3 values")
        range(group["ns_steps"])  # torch iterates range(ns_steps): a float is a TypeError

    @staticmethod
    def _make_transform(o):
        return gradxform.muon(
            o["lr"], o["weight_decay"], o["momentum"], o["nesterov"], o["ns_coefficients"], o["eps"], o["ns_steps"], o["adjust_lr_fn"]
        )



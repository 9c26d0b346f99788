r"""``torch_compat.optim.lr_scheduler``: torch 2.13's learning-rate schedulers.

Every class of ``torch.optim.lr_scheduler`` is here, with torch's constructor, ``step()``,
``get_last_lr()``, ``last_epoch``, ``state_dict()`` / ``load_state_dict()`` and warnings.
A scheduler drives a torch_compat optimizer (:class:`~torch_compat.optim.Optimizer`): it
writes Python floats into ``optimizer.param_groups[i]["lr"]`` (and ``"momentum"`` or
``"betas"`` for :class:`CyclicLR` and :class:`OneCycleLR`), which the optimizer reads as
traced values, so no step is ever recompiled for a new learning rate.

The arithmetic is torch's, operation for operation, in Python floats: the learning rates
are torch's to the last bit, epoch by epoch, also when schedulers are chained (several
stepping one optimizer, :class:`ChainedScheduler`, :class:`SequentialLR`), when an
``lr`` is changed by hand between steps, and when training resumes from a state dict
(ours or torch's: the layouts are the same).

*Chainable* schedulers (``StepLR``, ``ExponentialLR``, ``CosineAnnealingLR``, ...) compute
each learning rate from the group's current one, so they compose with anything else that
changes it; those recursions are torch's, and live here. Given an ``epoch``, the
deprecated ``step(epoch)`` uses their closed form instead. The closed forms, the phases
of ``CyclicLR`` and ``OneCycleLR`` and the rules of ``ReduceLROnPlateau`` are written once,
in ``gradxform._schedule_math``, and evaluated here on Python floats, as torch computes
them; :mod:`gradxform.schedules` and :func:`gradxform.reduce_on_plateau` evaluate the same
functions on JAX arrays.

Example:
  >>> import jax.numpy as jnp, torch_compat
  >>> from torch_compat import optim
  >>> from torch_compat.optim import lr_scheduler
  >>> opt = optim.SGD([torch_compat.Parameter(jnp.zeros(2))], lr=0.1)
  >>> scheduler = lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
  >>> lrs = []
  >>> for epoch in range(5):
  ...     lrs.append(opt.param_groups[0]["lr"])
  ...     opt.step()  # after computing gradients
  ...     scheduler.step()
  >>> lrs
  [0.1, 0.1, 0.05, 0.05, 0.025]
"""

from __future__ import annotations

import functools
import math
import types
import warnings
import weakref
from bisect import bisect_right
from collections import Counter
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gradxform._internal import schedule_math as formulas
from torch_compat.optim.optimizer import Optimizer

__all__ = [
    "ChainedScheduler",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "ExponentialLR",
    "LRScheduler",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "MultiplicativeLR",
    "OneCycleLR",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
    "sample_lrs",
]

# torch's texts, word for word: user code and tests match on them.
EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being "
    "deprecated where possible. Please use `scheduler.step()` to step the "
    "scheduler. During the deprecation, if epoch is different from None, the "
    "closed form is used instead of the new chainable form, where available. "
    "Please open an issue if you are unable to replicate your use case: "
    "https://github.com/pytorch/pytorch/issues/new/choose."
)
_STEP_OVERRIDDEN_WARNING = (
    "Seems like `optimizer.step()` has been overridden after learning rate scheduler "
    "initialization. Please, make sure to call `optimizer.step()` before "
    "`lr_scheduler.step()`. See more details at "
    "https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate"
)
_STEP_ORDER_WARNING = (
    "Detected call of `lr_scheduler.step()` before `optimizer.step()`. "
    "In PyTorch 1.1.0 and later, you should call them in the opposite order: "
    "`optimizer.step()` before `lr_scheduler.step()`.  Failure to do this "
    "will result in PyTorch skipping the first value of the learning rate schedule. "
    "See more details at "
    "https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate"
)
_GET_LR_WARNING = "To get the last learning rate computed by the scheduler, please use `get_last_lr()`."
_NO_MOMENTUM_MESSAGE = "optimizer must support momentum or beta1 with `cycle_momentum` option enabled"


# -- group values ------------------------------------------------------------------------
#
# A group's "lr" is normally a Python float; it may also be an array (torch's tensor lr).
# Arrays are never shared between the scheduler and the groups: JAX arrays are immutable,
# numpy ones are copied.


def _is_array(value) -> bool:
    return isinstance(value, (jax.Array, np.ndarray))


def _detached(value):
    return value.copy() if isinstance(value, np.ndarray) else value


def _per_group(name: str, optimizer: Optimizer, value) -> list:
    """``value`` repeated for every group, or checked to have one entry per group."""
    groups = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != groups:
            raise ValueError(
                f"{name} must have the same length as optimizer.param_groups. "
                f"{name} has {len(value)} values, param_groups has {groups}."
            )
        return [_detached(v) for v in value]
    return [_detached(value)] * groups


def _group_values(optimizer: Optimizer, key: str) -> list:
    """``group[key]`` of every group (KeyError when a group lacks it)."""
    return [_detached(group[key]) for group in optimizer.param_groups]


def _set_group_value(group: dict, key: str, value) -> None:
    """Writes ``value`` to ``group[key]``; an array keeps its dtype and shape."""
    current = group[key]
    if isinstance(current, np.ndarray):
        current[...] = np.asarray(value).reshape(())
    elif isinstance(current, jax.Array):
        group[key] = jnp.full(current.shape, jnp.asarray(value).reshape(()), current.dtype)
    else:
        group[key] = value


def _check_optimizer(optimizer) -> None:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")


def _mark_optimizer_steps(optimizer: Optimizer) -> None:
    """Makes ``optimizer.step`` record that it ran (``optimizer._opt_called``).

    The first ``scheduler.step()`` checks the flag to warn about the wrong order. The
    wrapper is set on the instance once, whatever the number of schedulers, and is
    marked ``_wrapped_by_lr_sched`` as torch marks its own.
    """
    current = optimizer.step
    if hasattr(current, "_wrapped_by_lr_sched"):
        return
    method = getattr(current, "__func__", None)
    owner = weakref.ref(optimizer)
    # Set on the optimizer, the wrapper must not hold it: a bound method would (a cycle
    # that only the garbage collector frees), so it calls the function with owner().
    other = current if method is None else None

    def counted_step(*args, **kwargs):
        opt = owner()
        opt._opt_called = True
        if method is None:
            return other(*args, **kwargs)
        return method(opt, *args, **kwargs)

    if method is not None:
        counted_step = functools.wraps(method)(counted_step)
    counted_step._wrapped_by_lr_sched = True  # type: ignore[attr-defined]
    optimizer.step = counted_step  # type: ignore[method-assign]


class _Flag:
    """Sets ``obj.<name> = True`` for the duration of a ``with`` block."""

    def __init__(self, obj, name: str):
        self.obj, self.name = obj, name

    def __enter__(self):
        setattr(self.obj, self.name, True)

    def __exit__(self, *exc):
        setattr(self.obj, self.name, False)


# -- the base class ----------------------------------------------------------------------


class LRScheduler:
    r"""Base class of the schedulers.

    Building a scheduler records each group's ``initial_lr`` (when ``last_epoch == -1``)
    in ``base_lrs`` and makes its first step, to epoch 0, which writes the first learning
    rates into the groups. Each ``step()`` then advances ``last_epoch`` by one and writes
    the learning rates of that epoch. Subclasses define :meth:`get_lr` (and, for the
    deprecated ``step(epoch)``, ``_get_closed_form_lr``).

    Args:
      optimizer: a torch_compat optimizer.
      last_epoch: the index of the last epoch done; ``-1`` to start. Another value resumes
        a schedule and needs ``initial_lr`` in every group.

    As in torch, build the scheduler *before* loading an optimizer's state dict when
    resuming, or the loaded learning rates are overwritten.
    """

    _get_lr_called_within_step: bool = False
    _is_initial: bool = False

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", _detached(group["lr"]))
        else:
            for index, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param 'initial_lr' is not specified in param_groups[{index}] when resuming scheduler with last_epoch >= 0.\n"
                        "This typically happens when:\n"
                        "1. You're trying to resume training from a checkpoint but haven't properly loaded the optimizer state\n"
                        "2. You're using last_epoch >= 0 for a fresh training run (not recommended)"
                    )
        self.base_lrs: list = _group_values(optimizer, "initial_lr")
        self.last_epoch = last_epoch
        _mark_optimizer_steps(optimizer)
        self._initial_step()

    def _initial_step(self) -> None:
        """Resets the step counter and makes the step done at construction."""
        self._step_count = 0
        with _Flag(self, "_is_initial"):
            self.step()

    # -- saving ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Every attribute but the optimizer, under torch's names (so torch loads it)."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the attributes saved by :meth:`state_dict` (ours or torch's)."""
        self.__dict__.update(state_dict)

    # -- learning rates -------------------------------------------------------------------

    def get_last_lr(self) -> list:
        """The learning rates the last step wrote, one per group."""
        return self._last_lr

    def get_lr(self) -> list:
        """The learning rates of epoch ``last_epoch``, one per group (used by ``step``)."""
        raise NotImplementedError

    def _warn_if_called_outside_step(self) -> None:
        if not self._get_lr_called_within_step:
            warnings.warn(_GET_LR_WARNING, UserWarning, stacklevel=3)

    def step(self, epoch: int | None = None) -> None:
        """Advances to the next epoch and writes its learning rates into the groups.

        Args:
          epoch: deprecated (and warned about, as in torch): jump to this epoch and use
            the closed form where the scheduler has one.

        Call it after ``optimizer.step()``. On the first call after construction, torch's
        warnings about ``optimizer.step`` being replaced, or not yet called, are given.
        """
        if self._step_count == 1:
            if not hasattr(self.optimizer.step, "_wrapped_by_lr_sched"):
                warnings.warn(_STEP_OVERRIDDEN_WARNING, UserWarning, stacklevel=2)
            elif not getattr(self.optimizer, "_opt_called", False):
                warnings.warn(_STEP_ORDER_WARNING, UserWarning, stacklevel=2)
        self._step_count += 1
        if epoch is not None:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None = None) -> None:
        with _Flag(self, "_get_lr_called_within_step"):
            if epoch is None:
                self.last_epoch += 1
                lrs = self.get_lr()
            else:
                self.last_epoch = epoch
                closed_form = getattr(self, "_get_closed_form_lr", None)
                lrs = closed_form() if closed_form is not None else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            _set_group_value(group, "lr", lr)
        self._last_lr: list = _group_values(self.optimizer, "lr")


# -- schedulers defined by a function ------------------------------------------------------


def _lambdas_for(optimizer: Optimizer, lr_lambda) -> list:
    groups = len(optimizer.param_groups)
    if isinstance(lr_lambda, (list, tuple)):
        if len(lr_lambda) != groups:
            raise ValueError(f"Expected {groups} lr_lambdas, but got {len(lr_lambda)}")
        return list(lr_lambda)
    return [lr_lambda] * groups


class _SavesLambdas(LRScheduler):
    """Saves ``lr_lambdas`` as torch does: the attributes of callable objects, else None."""

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}
        state["lr_lambdas"] = [
            None if isinstance(fn, types.FunctionType) else fn.__dict__.copy() for fn in self.lr_lambdas
        ]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        saved = state.pop("lr_lambdas")
        self.__dict__.update(state)
        for fn, attributes in zip(self.lr_lambdas, saved):
            if attributes is not None:
                fn.__dict__.update(attributes)


class LambdaLR(_SavesLambdas):
    """``lr = initial_lr * lr_lambda(epoch)``, with one function or one per group.

    Args:
      optimizer: the optimizer.
      lr_lambda: a function of the epoch (an int) giving a multiplier, or a list with one
        per group.
      last_epoch: see :class:`LRScheduler`.

    Plain functions are not saved by :meth:`state_dict` (``None`` in their place);
    callable objects have their ``__dict__`` saved.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> from torch_compat.optim import lr_scheduler
      >>> opt = optim.SGD([torch_compat.Parameter(jnp.zeros(1))], lr=0.1, momentum=0.9)
      >>> scheduler = lr_scheduler.LambdaLR(opt, lambda epoch: 1 / (epoch + 1))
      >>> lrs = []
      >>> for epoch in range(5):
      ...     lrs.append(round(opt.param_groups[0]["lr"], 6))
      ...     opt.step()
      ...     scheduler.step()
      >>> lrs
      [0.1, 0.05, 0.033333, 0.025, 0.02]
    """

    def __init__(self, optimizer: Optimizer, lr_lambda, last_epoch: int = -1) -> None:
        self.optimizer = optimizer
        self.lr_lambdas: list[Callable[[int], float]] = _lambdas_for(optimizer, lr_lambda)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        self._warn_if_called_outside_step()
        return [base * fn(self.last_epoch) for fn, base in zip(self.lr_lambdas, self.base_lrs, strict=True)]


class MultiplicativeLR(_SavesLambdas):
    """Multiplies each group's current ``lr`` by ``lr_lambda(epoch)`` at every step (not at
    construction).

    Args:
      optimizer: the optimizer.
      lr_lambda: a function of the epoch giving a multiplier, or a list with one per group.
      last_epoch: see :class:`LRScheduler`.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> from torch_compat.optim import lr_scheduler
      >>> opt = optim.SGD([torch_compat.Parameter(jnp.zeros(1))], lr=0.1, momentum=0.9)
      >>> scheduler = lr_scheduler.MultiplicativeLR(opt, lambda epoch: 0.5)
      >>> lrs = []
      >>> for epoch in range(5):
      ...     lrs.append(round(opt.param_groups[0]["lr"], 6))
      ...     opt.step()
      ...     scheduler.step()
      >>> lrs
      [0.1, 0.05, 0.025, 0.0125, 0.00625]
    """

    def __init__(self, optimizer: Optimizer, lr_lambda, last_epoch: int = -1) -> None:
        self.optimizer = optimizer
        self.lr_lambdas: list[Callable[[int], float]] = _lambdas_for(optimizer, lr_lambda)
        for fn in self.lr_lambdas:
            if not callable(fn):
                raise TypeError(f"lr_lambda should be a function, but got {type(fn).__name__}")
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        self._warn_if_called_outside_step()
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        return [
            group["lr"] * fn(self.last_epoch)
            for fn, group in zip(self.lr_lambdas, self.optimizer.param_groups, strict=True)
        ]


# -- chainable decays ----------------------------------------------------------------------


class StepLR(LRScheduler):
    r"""Multiplies the ``lr`` by ``gamma`` every ``step_size`` epochs (chainable).

    Closed form: :math:`\text{lr}_t = \text{lr}_0\,\gamma^{\lfloor t/\text{step\_size}\rfloor}`
    (:func:`gradxform.schedules.step`).

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> from torch_compat.optim import lr_scheduler
      >>> opt = optim.SGD([torch_compat.Parameter(jnp.zeros(1))], lr=0.1, momentum=0.9)
      >>> scheduler = lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
      >>> lrs = []
      >>> for epoch in range(6):
      ...     lrs.append(round(opt.param_groups[0]["lr"], 6))
      ...     opt.step()
      ...     scheduler.step()
      >>> lrs
      [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1) -> None:
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        self._warn_if_called_outside_step()
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list:
        decays = self.last_epoch // self.step_size
        return [formulas.decay(formulas.FLOATS, base, self.gamma, decays) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    r"""Multiplies the ``lr`` by ``gamma`` at each milestone epoch (chainable).

    A milestone given twice multiplies by :math:`\gamma^2`. Closed form:
    :func:`gradxform.schedules.multistep`.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> from torch_compat.optim import lr_scheduler
      >>> opt = optim.SGD([torch_compat.Parameter(jnp.zeros(1))], lr=0.1, momentum=0.9)
      >>> scheduler = lr_scheduler.MultiStepLR(opt, milestones=[1, 4], gamma=0.1)
      >>> lrs = []
      >>> for epoch in range(6):
      ...     lrs.append(round(opt.param_groups[0]["lr"], 6))
      ...     opt.step()
      ...     scheduler.step()
      >>> lrs
      [0.1, 0.01, 0.01, 0.01, 0.001, 0.001]
    """

    def __init__(self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1, last_epoch: int = -1) -> None:
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        self._warn_if_called_outside_step()
        if self.last_epoch not in self.milestones:
            return _group_values(self.optimizer, "lr")
        factor = self.gamma ** self.milestones[self.last_epoch]
        return [group["lr"] * factor for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list:
        passed = bisect_right(sorted(self.milestones.elements()), self.last_epoch)
        return [formulas.decay(formulas.FLOATS, base, self.gamma, passed) for base in self.base_lrs]


class ConstantLR(LRScheduler):
    r"""Multiplies the ``lr`` by ``factor`` until epoch ``total_iters`` (chainable).

    Closed form: :func:`gradxform.schedules.constant`.

    Raises:
      ValueError: unless ``0 <= factor <= 1``.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> from torch_compat.optim import lr_scheduler
      >>> opt = optim.SGD([torch_compat.Parameter(jnp.zeros(1))], lr=0.1, momentum=0.9)
      >>> scheduler = lr_scheduler.ConstantLR(opt, factor=0.5, total_iters=3)
      >>> lrs = []
      >>> for epoch in range(5):
      ...     lrs.append(round(opt.param_groups[0]["lr"], 6))
      ...     opt.step()
      ...     scheduler.step()
      >>> lrs
      [0.05, 0.05, 0.05, 0.1, 0.1]
    """

    def __init__(self, optimizer: Optimizer, factor: float = 1.0 / 3, total_iters: int = 5, last_epoch: int = -1) -> None:
        if factor > 1.0 or factor < 0:
            raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")
        self.factor = factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        self._warn_if_called_outside_step()
        if self.last_epoch == 0:
            return [group["lr"] * self.factor for group in self.optimizer.param_groups]
        if self.last_epoch == self.total_iters:
            return [group["lr"] * (1.0 / self.factor) for group in self.optimizer.param_groups]
        return _group_values(self.optimizer, "lr")

    def _get_closed_form_lr(self) -> list:
        t, factor, total_iters = self.last_epoch, self.factor, self.total_iters
        return [formulas.constant(formulas.FLOATS, base, factor, t, total_iters) for base in self.base_lrs]


class LinearLR(LRScheduler):
    r"""Ramps the ``lr`` multiplier linearly from ``start_factor`` to ``end_factor`` over
    ``total_iters`` epochs (chainable).

    Closed form: :func:`gradxform.schedules.linear`.

    Raises:
      ValueError: unless ``0 < start_factor <= 1`` and ``0 <= end_factor <= 1``.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> from torch_compat.optim import lr_scheduler
      >>> opt = optim.SGD([torch_compat.Parameter(jnp.zeros(1))], lr=0.1, momentum=0.9)
      >>> scheduler = lr_scheduler.LinearLR(opt, start_factor=0.25, total_iters=3)
      >>> lrs = []
      >>> for epoch in range(5):
      ...     lrs.append(round(opt.param_groups[0]["lr"], 6))
      ...     opt.step()
      ...     scheduler.step()
      >>> lrs
      [0.025, 0.05, 0.075, 0.1, 0.1]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        if start_factor > 1.0 or start_factor <= 0:
            raise ValueError(
                "Starting multiplicative factor expected to be greater than 0 and less or equal to 1."
            )
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        self._warn_if_called_outside_step()
        if self.last_epoch == 0:
            return [group["lr"] * self.start_factor for group in self.optimizer.param_groups]
        if self._is_initial or self.last_epoch > self.total_iters:
            return _group_values(self.optimizer, "lr")
        slope = self.end_factor - self.start_factor
        # The ratio of the multipliers of this epoch and the previous one.
        ratio = 1.0 + slope / (self.total_iters * self.start_factor + (self.last_epoch - 1) * slope)
        return [group["lr"] * ratio for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list:
        factors = (self.start_factor, self.end_factor, self.last_epoch, self.total_iters)
        return [formulas.linear(formulas.FLOATS, base, *factors) for base in self.base_lrs]


class ExponentialLR(LRScheduler):
    r"""Multiplies the ``lr`` by ``gamma`` every epoch (chainable).

    Closed form: :math:`\text{lr}_0\gamma^t` (:func:`gradxform.schedules.exponential`).

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> from torch_compat.optim import lr_scheduler
      >>> opt = optim.SGD([torch_compat.Parameter(jnp.zeros(1))], lr=0.1, momentum=0.9)
      >>> scheduler = lr_scheduler.ExponentialLR(opt, gamma=0.5)
      >>> lrs = []
      >>> for epoch in range(5):
      ...     lrs.append(round(opt.param_groups[0]["lr"], 6))
      ...     opt.step()
      ...     scheduler.step()
      >>> lrs
      [0.1, 0.05, 0.025, 0.0125, 0.00625]
    """

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        self._warn_if_called_outside_step()
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list:
        return [formulas.decay(formulas.FLOATS, base, self.gamma, self.last_epoch) for base in self.base_lrs]


class PolynomialLR(LRScheduler):
    r"""Decays the ``lr`` polynomially to 0 in ``total_iters`` epochs (chainable).

    Closed form: :math:`\text{lr}_0 (1 - \min(t, T)/T)^{p}`
    (:func:`gradxform.schedules.polynomial`).

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> from torch_compat.optim import lr_scheduler
      >>> opt = optim.SGD([torch_compat.Parameter(jnp.zeros(1))], lr=0.1, momentum=0.9)
      >>> scheduler = lr_scheduler.PolynomialLR(opt, total_iters=4, power=2.0)
      >>> lrs = []
      >>> for epoch in range(6):
      ...     lrs.append(round(opt.param_groups[0]["lr"], 6))
      ...     opt.step()
      ...     scheduler.step()
      >>> lrs
      [0.1, 0.05625, 0.025, 0.00625, 0.0, 0.0]
    """

    def __init__(self, optimizer: Optimizer, total_iters: int = 5, power: float = 1.0, last_epoch: int = -1) -> None:
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        self._warn_if_called_outside_step()
        if self._is_initial or self.last_epoch > self.total_iters:
            return _group_values(self.optimizer, "lr")
        now = 1.0 - self.last_epoch / self.total_iters
        before = 1.0 - (self.last_epoch - 1) / self.total_iters
        ratio = (now / before) ** self.power
        return [group["lr"] * ratio for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list:
        t, total_iters, power = self.last_epoch, self.total_iters, self.power
        return [formulas.polynomial(formulas.FLOATS, base, t, total_iters, power) for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    r"""Cosine annealing from the initial ``lr`` to ``eta_min`` in ``T_max`` epochs (chainable).

    Each step moves the current ``lr`` by the ratio of consecutive values of

    .. math::
       \eta_t = \eta_{min} + \tfrac12(\eta_{max} - \eta_{min})\left(1 + \cos\frac{\pi t}{T_{max}}\right),

    the closed form (:func:`gradxform.schedules.cosine_annealing`), which it follows
    when nothing else changes the ``lr``. Past ``T_max`` the cosine goes back up.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> from torch_compat.optim import lr_scheduler
      >>> opt = optim.SGD([torch_compat.Parameter(jnp.zeros(1))], lr=0.1, momentum=0.9)
      >>> scheduler = lr_scheduler.CosineAnnealingLR(opt, T_max=4)
      >>> lrs = []
      >>> for epoch in range(6):
      ...     lrs.append(round(opt.param_groups[0]["lr"], 6))
      ...     opt.step()
      ...     scheduler.step()
      >>> lrs
      [0.1, 0.085355, 0.05, 0.014645, 0.0, 0.014645]
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:  # noqa: N803
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        self._warn_if_called_outside_step()
        groups = self.optimizer.param_groups
        t, period, low = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        if self._step_count == 1 and t > 0:
            return [formulas.cosine(formulas.FLOATS, base, low, t, period) for base in self.base_lrs]
        if (t - 1 - period) % (2 * period) == 0:
            # Leaving the minimum: the ratio form would divide by 1 + cos(pi) = 0.
            return [
                group["lr"] + (base - low) * (1 - math.cos(math.pi / period)) / 2
                for base, group in zip(self.base_lrs, groups, strict=True)
            ]
        ratio = (1 + math.cos(math.pi * t / period)) / (1 + math.cos(math.pi * (t - 1) / period))
        return [ratio * (group["lr"] - low) + low for group in groups]

    def _get_closed_form_lr(self) -> list:
        t, low, period = self.last_epoch, self.eta_min, self.T_max
        return [formulas.cosine(formulas.FLOATS, base, low, t, period) for base in self.base_lrs]


# -- schedulers of schedulers ----------------------------------------------------------------


def _check_members(owner: str, optimizer, schedulers: Sequence[LRScheduler]) -> None:
    for index, scheduler in enumerate(schedulers):
        if not hasattr(scheduler, "optimizer"):
            raise TypeError(f"{owner} at index {index} should have `optimizer` as its attribute.")
        if isinstance(scheduler, ReduceLROnPlateau):
            raise ValueError(
                f"{owner} does not support `ReduceLROnPlateau` scheduler as it "
                "requires additional kwargs to be specified when calling `step`, "
                f"but got one at index {index} in the given schedulers sequence."
            )
        if optimizer != scheduler.optimizer:
            raise ValueError(
                f"{owner} expects all schedulers to belong to the same optimizer, but "
                f"got scheduler {scheduler.__class__.__name__} at index {index} has {scheduler.optimizer}, "
                f"which is different from {optimizer.__class__.__name__}."
            )


class _SavesMembers(LRScheduler):
    """Saves the member schedulers' state dicts under ``_schedulers``."""

    _schedulers: list

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [member.state_dict() for member in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        members = state.pop("_schedulers")
        self.__dict__.update(state)
        for member, saved in zip(self._schedulers, members):
            member.load_state_dict(saved)


class SequentialLR(_SavesMembers):
    """Hands the optimizer to one scheduler after another, at the ``milestones``.

    From epoch ``milestones[i-1]`` on, ``schedulers[i]`` drives the learning rate; it
    starts at its epoch 0, computed with its closed form where it has one (from the
    group's ``initial_lr``). Building a SequentialLR resets the ``lr`` to ``initial_lr``,
    takes back the construction step of every member, and redoes it for the first.
    The functional twin is :func:`gradxform.schedules.join`.

    Args:
      optimizer: the optimizer the schedulers belong to.
      schedulers: the schedulers, in order (not ReduceLROnPlateau).
      milestones: ``len(schedulers) - 1`` increasing epochs.
      last_epoch: see :class:`LRScheduler`.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> from torch_compat.optim import lr_scheduler
      >>> opt = optim.SGD([torch_compat.Parameter(jnp.zeros(1))], lr=0.1, momentum=0.9)
      >>> scheduler = lr_scheduler.SequentialLR(opt, [lr_scheduler.ConstantLR(opt, factor=0.1, total_iters=2), lr_scheduler.ExponentialLR(opt, gamma=0.5)], milestones=[2])
      >>> lrs = []
      >>> for epoch in range(6):
      ...     lrs.append(round(opt.param_groups[0]["lr"], 6))
      ...     opt.step()
      ...     scheduler.step()
      >>> lrs
      [0.01, 0.01, 0.1, 0.05, 0.025, 0.0125]
    """

    def __init__(self, optimizer: Optimizer, schedulers: list[LRScheduler], milestones: list[int], last_epoch: int = -1) -> None:
        name = type(self).__name__
        if len(schedulers) < 1:
            raise ValueError(f"{name} expects at least one scheduler, but got no scheduler.")
        _check_members(name, optimizer, schedulers)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                "Sequential Schedulers expects number of schedulers provided to be one more "
                f"than the number of milestone points, but got number of schedulers {len(schedulers)} and the "
                f"number of milestones to be equal to {len(milestones)}"
            )
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            _set_group_value(group, "lr", group["initial_lr"])
        self.recursive_undo()
        first = self._schedulers[bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    def recursive_undo(self, sched=None) -> None:
        """Takes one epoch back from every scheduler inside (the steps of their construction)."""
        target = self if sched is None else sched
        if hasattr(target, "_schedulers"):
            for member in target._schedulers:
                self.recursive_undo(member)
        elif hasattr(target, "last_epoch"):
            target.last_epoch -= 1

    def step(self) -> None:  # type: ignore[override]
        """Advances one epoch, with the scheduler in charge of it."""
        self.last_epoch += 1
        index = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[index]
        if index > 0 and self._milestones[index - 1] == self.last_epoch:
            scheduler._update_lr(0)  # the scheduler's epoch 0, from its closed form
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()


class ChainedScheduler(_SavesMembers):
    """Steps several schedulers of one optimizer together: ``step()`` steps each in turn.

    Args:
      schedulers: the schedulers (chainable ones: each builds on the ``lr`` the previous
        one wrote; not ReduceLROnPlateau).
      optimizer: the optimizer; default: the first scheduler's.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> from torch_compat.optim import lr_scheduler
      >>> opt = optim.SGD([torch_compat.Parameter(jnp.zeros(1))], lr=0.1, momentum=0.9)
      >>> scheduler = lr_scheduler.ChainedScheduler([lr_scheduler.ConstantLR(opt, factor=0.1, total_iters=2), lr_scheduler.ExponentialLR(opt, gamma=0.5)])
      >>> lrs = []
      >>> for epoch in range(5):
      ...     lrs.append(round(opt.param_groups[0]["lr"], 6))
      ...     opt.step()
      ...     scheduler.step()
      >>> lrs
      [0.01, 0.005, 0.025, 0.0125, 0.00625]
    """

    def __init__(self, schedulers: Sequence[LRScheduler], optimizer: Optimizer | None = None) -> None:
        name = type(self).__name__
        if len(schedulers) < 1:
            raise ValueError(f"{name} expects at least one scheduler to be chained, but got no scheduler.")
        optimizer = optimizer or schedulers[0].optimizer
        _check_members(name, optimizer, schedulers)
        self._schedulers = schedulers
        self.optimizer = optimizer
        self._last_lr = _group_values(self._schedulers[-1].optimizer, "lr")

    def step(self) -> None:  # type: ignore[override]
        """Steps every scheduler, in order."""
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = _group_values(self._schedulers[-1].optimizer, "lr")


# -- metric-driven -----------------------------------------------------------------------------


class ReduceLROnPlateau(LRScheduler):
    """Divides the ``lr`` by ``1 / factor`` when a metric stops improving.

    ``step(metrics)`` is called once per epoch with the metric. A metric improves on the
    best so far when it beats it by ``threshold`` (relative or absolute, in the direction
    of ``mode``). After more than ``patience`` epochs in a row without improvement, each
    group's ``lr`` becomes ``max(lr * factor, min_lr)``, unless that lowers it by ``eps``
    or less, and the next ``cooldown`` epochs are not counted. The functional twin is
    :func:`gradxform.reduce_on_plateau`.

    Args:
      optimizer: the optimizer.
      mode: ``"min"`` or ``"max"``.
      factor: the multiplier of a reduction, < 1.
      patience: bad epochs tolerated.
      threshold: the margin of an improvement.
      threshold_mode: ``"rel"`` or ``"abs"``.
      cooldown: epochs ignored after a reduction.
      min_lr: a lower bound on the learning rates, one for all groups or a list.
      eps: reductions of ``eps`` or less are skipped.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> from torch_compat.optim import lr_scheduler
      >>> opt = optim.SGD([torch_compat.Parameter(jnp.zeros(1))], lr=0.1, momentum=0.9)
      >>> scheduler = lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1)
      >>> lrs = []
      >>> for validation_loss in [1.0, 0.9, 0.9, 0.9, 0.9, 0.9]:
      ...     opt.step()
      ...     scheduler.step(validation_loss)
      ...     lrs.append(round(opt.param_groups[0]["lr"], 6))
      >>> lrs
      [0.1, 0.1, 0.1, 0.05, 0.05, 0.025]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: list[float] | float = 0,
        eps: float = 1e-8,
    ) -> None:
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        self.factor = factor
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(optimizer.param_groups):
                raise ValueError(f"expected {len(optimizer.param_groups)} min_lrs, got {len(min_lr)}")
            self.default_min_lr = None
            self.min_lrs = list(min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * len(optimizer.param_groups)
        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = _group_values(self.optimizer, "lr")
        self._init_is_better(mode=mode, threshold=threshold, threshold_mode=threshold_mode)
        self._reset()

    def _reset(self) -> None:
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def _init_is_better(self, mode, threshold, threshold_mode) -> None:
        if mode not in {"min", "max"}:
            raise ValueError("mode " + mode + " is unknown!")
        if threshold_mode not in {"rel", "abs"}:
            raise ValueError("threshold mode " + threshold_mode + " is unknown!")
        self.mode_worse = formulas.worst_metric(mode)
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    def _is_better(self, a, best) -> bool:
        return formulas.improves(a, best, self.mode, self.threshold, self.threshold_mode)

    def step(self, metrics, epoch=None) -> None:  # type: ignore[override]
        """Takes the epoch's metric (a number or a 1-element array) into account."""
        current = float(np.asarray(metrics).reshape(())) if _is_array(metrics) else float(metrics)
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self.last_epoch = epoch
        self.best, self.num_bad_epochs, self.cooldown_counter = formulas.count_bad_epochs(
            formulas.FLOATS, self._is_better(current, self.best), current, self.best, self.num_bad_epochs, self.cooldown_counter
        )
        if self.num_bad_epochs > self.patience:
            self._reduce_lr(epoch)
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = _group_values(self.optimizer, "lr")

    def _reduce_lr(self, epoch) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(
                    "The number of param groups in the `optimizer` "
                    f"({len(groups)}) differs "
                    f"from when `ReduceLROnPlateau` was initialized "
                    f"({len(self.min_lrs)}), usually due to a new "
                    "param group being added to the optimizer. Please "
                    "modify the `min_lrs` field to match the length "
                    "of the `optimizer` param groups."
                )
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, min_lr in zip(groups, self.min_lrs):
            old = float(np.asarray(group["lr"]).reshape(())) if _is_array(group["lr"]) else float(group["lr"])
            new, lowers = formulas.reduced(formulas.FLOATS, old, self.factor, min_lr, self.eps)
            if lowers:
                _set_group_value(group, "lr", new)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._init_is_better(mode=self.mode, threshold=self.threshold, threshold_mode=self.threshold_mode)


# -- cycles -------------------------------------------------------------------------------------


def _momentum_setup(scheduler, optimizer: Optimizer, base_momentum, max_momentum, last_epoch: int, *, base_first: bool):
    """Checks that the optimizer has a momentum and starts it at ``max_momentum``.

    Returns ``(base_momentums, max_momentums)``; sets ``scheduler.use_beta1``.
    ``base_first`` says which list is checked first (CyclicLR and OneCycleLR differ).
    """
    if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
        raise ValueError(_NO_MOMENTUM_MESSAGE)
    scheduler.use_beta1 = "betas" in optimizer.defaults
    if base_first:
        base_momentums = _per_group("base_momentum", optimizer, base_momentum)
    max_momentums = _per_group("max_momentum", optimizer, max_momentum)
    if not base_first:
        base_momentums = _per_group("base_momentum", optimizer, base_momentum)
    if last_epoch == -1:
        for top, bottom, group in zip(max_momentums, base_momentums, optimizer.param_groups, strict=True):
            _write_momentum(scheduler, group, top)
            group["max_momentum"] = top
            group["base_momentum"] = bottom
    return base_momentums, max_momentums


def _write_momentum(scheduler, group: dict, value) -> None:
    if scheduler.use_beta1:
        group["betas"] = (value, *group["betas"][1:])
    else:
        group["momentum"] = value


class CyclicLR(LRScheduler):
    r"""The cyclical learning rate policy (CLR), stepped after every batch.

    The ``lr`` goes from ``base_lr`` up to ``max_lr`` in ``step_size_up`` steps and back
    in ``step_size_down``, its amplitude scaled per ``mode`` (``"triangular"``: 1,
    ``"triangular2"``: halved every cycle, ``"exp_range"``: :math:`\gamma^{t}`) or by
    ``scale_fn``. With ``cycle_momentum``, the optimizer's ``momentum`` (or ``betas[0]``)
    goes the opposite way between ``max_momentum`` and ``base_momentum``. The closed form
    is :func:`gradxform.schedules.cyclic`; Smith, 2017.

    The arguments are those of ``torch.optim.lr_scheduler.CyclicLR``: ``base_lr``,
    ``max_lr``, ``base_momentum``, ``max_momentum`` (each a number or a list per group),
    ``step_size_up``, ``step_size_down``, ``mode``, ``gamma``, ``scale_fn``,
    ``scale_mode``, ``cycle_momentum``, ``last_epoch``.

    Raises:
      ValueError: for an unknown ``mode`` without ``scale_fn``, or with
        ``cycle_momentum`` for an optimizer that has neither ``momentum`` nor ``betas``.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> from torch_compat.optim import lr_scheduler
      >>> opt = optim.SGD([torch_compat.Parameter(jnp.zeros(1))], lr=0.1, momentum=0.9)
      >>> scheduler = lr_scheduler.CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=2)
      >>> lrs = []
      >>> for epoch in range(7):
      ...     lrs.append(round(opt.param_groups[0]["lr"], 6))
      ...     opt.step()
      ...     scheduler.step()
      >>> lrs
      [0.01, 0.055, 0.1, 0.055, 0.01, 0.055, 0.1]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        base_lr: float | list[float],
        max_lr: float | list[float],
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: str = "triangular",
        gamma: float = 1.0,
        scale_fn: Callable[[float], float] | None = None,
        scale_mode: str = "cycle",
        cycle_momentum: bool = True,
        base_momentum: float = 0.8,
        max_momentum: float = 0.9,
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        base_lrs = _per_group("base_lr", optimizer, base_lr)
        if last_epoch == -1:
            for lr, group in zip(base_lrs, optimizer.param_groups, strict=True):
                _set_group_value(group, "lr", lr)
        self.max_lrs = _per_group("max_lr", optimizer, max_lr)
        self.total_size, self.step_ratio = formulas.cyclic_sizes(step_size_up, step_size_down)
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise ValueError("mode is invalid and scale_fn is None")
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        self._init_scale_fn()
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.base_momentums, self.max_momentums = _momentum_setup(
                self, optimizer, base_momentum, max_momentum, last_epoch, base_first=True
            )
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def _init_scale_fn(self) -> None:
        """The built-in modes decide what their scale is a function of."""
        if self._scale_fn_custom is None:
            self.scale_mode = formulas.cyclic_scale_mode(self.mode)

    def scale_fn(self, x) -> float:
        """The amplitude scale at cycle (or step) ``x``."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        return formulas.cyclic_scale(self.mode, self.gamma, x)

    def get_lr(self) -> list:
        self._warn_if_called_outside_step()
        t = self.last_epoch
        cycle, height = formulas.cyclic_position(formulas.FLOATS, t, self.total_size, self.step_ratio)
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else t)
        lrs = [formulas.cyclic(base, top, height, scale) for base, top in zip(self.base_lrs, self.max_lrs, strict=True)]
        if self.cycle_momentum:
            groups = self.optimizer.param_groups
            for group, bottom, top in zip(groups, self.base_momentums, self.max_momentums, strict=True):
                # From max_momentum towards base_momentum, against the rate.
                _write_momentum(self, group, formulas.cyclic(top, bottom, height, scale))
        return lrs

    def state_dict(self) -> dict[str, Any]:
        """As the base class; a custom ``scale_fn`` is saved as its ``__dict__`` if it is a
        callable object, and as None if it is a function."""
        state = super().state_dict()
        fn = state.pop("_scale_fn_custom")
        state["_scale_fn_custom"] = (
            None if fn is None or isinstance(fn, types.FunctionType) else fn.__dict__.copy()
        )
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        attributes = state.pop("_scale_fn_custom")
        super().load_state_dict(state)
        if attributes is not None:
            self._scale_fn_custom.__dict__.update(attributes)
        self._init_scale_fn()


class CosineAnnealingWarmRestarts(LRScheduler):
    r"""Cosine annealing (SGDR) restarted every ``T_i`` epochs, ``T_i`` growing by ``T_mult``.

    .. math::
       \eta_t = \eta_{min} + \tfrac12(\eta_{max} - \eta_{min})\left(1 + \cos\frac{\pi T_{cur}}{T_i}\right)

    ``step()`` may be given a fractional epoch (``scheduler.step(epoch + i / iters)``) to
    anneal within an epoch; that path takes no deprecation warning here, as in torch.
    The closed form is :func:`gradxform.schedules.cosine_annealing_warm_restarts`.

    Raises:
      ValueError: for a ``T_0`` that is not a positive int, a ``T_mult`` that is not an
        int >= 1, a non-numeric ``eta_min``, or a negative ``epoch``.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> from torch_compat.optim import lr_scheduler
      >>> opt = optim.SGD([torch_compat.Parameter(jnp.zeros(1))], lr=0.1, momentum=0.9)
      >>> scheduler = lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=3)
      >>> lrs = []
      >>> for epoch in range(7):
      ...     lrs.append(round(opt.param_groups[0]["lr"], 6))
      ...     opt.step()
      ...     scheduler.step()
      >>> lrs
      [0.1, 0.075, 0.025, 0.1, 0.075, 0.025, 0.1]
    """

    def __init__(self, optimizer: Optimizer, T_0: int, T_mult: int = 1, eta_min: float = 0.0, last_epoch: int = -1) -> None:  # noqa: N803
        if T_0 <= 0 or not isinstance(T_0, int):
            raise ValueError(f"Expected positive integer T_0, but got {T_0}")
        if T_mult < 1 or not isinstance(T_mult, int):
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        if not isinstance(eta_min, (float, int)):
            raise ValueError(f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}")
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list:
        self._warn_if_called_outside_step()
        t, low, period = self.T_cur, self.eta_min, self.T_i
        return [formulas.cosine(formulas.FLOATS, base, low, t, period) for base in self.base_lrs]

    def step(self, epoch=None) -> None:
        """Advances one epoch, or jumps to ``epoch`` (which may be fractional)."""
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur += 1
            if self.T_cur >= self.T_i:
                self.T_cur %= self.T_i
                self.T_i *= self.T_mult
        elif epoch < 0:
            raise ValueError(f"Expected non-negative epoch, but got {epoch}")
        elif epoch < self.T_0:
            self.T_i = self.T_0
            self.T_cur = epoch
        elif self.T_mult == 1:
            self.T_cur = epoch % self.T_0
        else:
            restarts = int(math.log(epoch / self.T_0 * (self.T_mult - 1) + 1, self.T_mult))
            self.T_cur = epoch - self.T_0 * (self.T_mult**restarts - 1) / (self.T_mult - 1)
            self.T_i = self.T_0 * self.T_mult**restarts
        self.last_epoch = math.floor(epoch)
        with _Flag(self, "_get_lr_called_within_step"):
            lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            _set_group_value(group, "lr", lr)
        self._last_lr = _group_values(self.optimizer, "lr")


class OneCycleLR(LRScheduler):
    r"""The 1cycle policy, stepped after every batch.

    The ``lr`` rises from ``max_lr / div_factor`` to ``max_lr`` over the first
    ``pct_start`` of ``total_steps``, then falls to ``max_lr / div_factor /
    final_div_factor`` (``three_phase``: first back to the start, then down), annealed by
    cosine or linearly. The momentum (or ``betas[0]``) cycles the other way between
    ``max_momentum`` and ``base_momentum``. Not chainable: it overwrites ``lr``. Stepping
    past ``total_steps`` raises. The closed forms are
    :func:`gradxform.schedules.one_cycle` and :func:`gradxform.schedules.one_cycle_momentum`;
    Smith & Topin, 2018.

    The arguments are those of ``torch.optim.lr_scheduler.OneCycleLR``; give
    ``total_steps``, or ``epochs`` and ``steps_per_epoch``.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> from torch_compat.optim import lr_scheduler
      >>> opt = optim.SGD([torch_compat.Parameter(jnp.zeros(1))], lr=0.1, momentum=0.9)
      >>> scheduler = lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=6)
      >>> lrs = []
      >>> for epoch in range(6):
      ...     lrs.append(round(opt.param_groups[0]["lr"], 6))
      ...     opt.step()
      ...     scheduler.step()
      >>> lrs
      [0.004, 0.099442, 0.081175, 0.046264, 0.013348, 0.0]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | list[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.85,
        max_momentum: float | list[float] = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if total_steps is not None:
            if total_steps <= 0 or not isinstance(total_steps, int):
                raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            if not isinstance(epochs, int) or epochs <= 0:
                raise ValueError(f"Expected positive integer epochs, but got {epochs}")
            if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
                raise ValueError(f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}")
            self.total_steps = epochs * steps_per_epoch
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
        self._schedule_phases = self._phases(pct_start, three_phase)
        if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
        formulas.check_anneal_strategy(anneal_strategy)
        self._anneal_func_type = anneal_strategy
        max_lrs = _per_group("max_lr", optimizer, max_lr)
        if last_epoch == -1:
            for peak, group in zip(max_lrs, optimizer.param_groups):
                group["initial_lr"] = peak / div_factor
                group["max_lr"] = peak
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            _momentum_setup(self, optimizer, base_momentum, max_momentum, last_epoch, base_first=False)
        super().__init__(optimizer, last_epoch)

    def _phases(self, pct_start, three_phase) -> list[dict[str, Any]]:
        """torch's phase table: the last step of each phase and the group keys of its ends."""
        phases = functools.partial(formulas.one_cycle_phases, self.total_steps, pct_start, three_phase)
        lrs = phases("initial_lr", "max_lr", "min_lr")
        momenta = phases("max_momentum", "base_momentum", "max_momentum")
        return [
            {"end_step": end, "start_lr": lr_from, "end_lr": lr_to, "start_momentum": m_from, "end_momentum": m_to}
            for (end, lr_from, lr_to), (_, m_from, m_to) in zip(lrs, momenta, strict=True)
        ]

    @staticmethod
    def _annealing_cos(start, end, pct):
        """From ``start`` (pct 0) to ``end`` (pct 1) along half a cosine."""
        return formulas.anneal_cos(formulas.FLOATS, start, end, pct)

    @staticmethod
    def _annealing_linear(start, end, pct):
        """From ``start`` (pct 0) to ``end`` (pct 1) along a line."""
        return formulas.anneal_linear(start, end, pct)

    def _anneal_func(self, start, end, pct):
        if self._anneal_func_type == "cos":
            return self._annealing_cos(start, end, pct)
        if self._anneal_func_type == "linear":
            return self._annealing_linear(start, end, pct)
        raise ValueError(f"Unknown _anneal_func_type: {self._anneal_func_type}")

    def get_lr(self) -> list:
        self._warn_if_called_outside_step()
        t = self.last_epoch
        if t > self.total_steps:
            raise ValueError(
                f"Tried to step {t} times. The specified number of total steps is {self.total_steps}"
            )
        lr_phases = [(p["end_step"], p["start_lr"], p["end_lr"]) for p in self._schedule_phases]
        momentum_phases = [(p["end_step"], p["start_momentum"], p["end_momentum"]) for p in self._schedule_phases]
        lrs = []
        for group in self.optimizer.param_groups:

            def value(first_key, last_key, pct, group=group):
                return self._anneal_func(group[first_key], group[last_key], pct)

            lrs.append(formulas.one_cycle(formulas.FLOATS, t, lr_phases, value))
            if self.cycle_momentum:
                _write_momentum(self, group, formulas.one_cycle(formulas.FLOATS, t, momentum_phases, value))
        return lrs


# -- sampling ----------------------------------------------------------------------------------


def sample_lrs(
    scheduler_factory: Callable[[Optimizer], Any],
    num_steps: int,
    *,
    optimizer: Optimizer | None = None,
    lr: float = 0.1,
    metrics: Sequence[float] | None = None,
    key: str | Callable[[dict], Any] = "lr",
) -> np.ndarray:
    """The learning rate of every group for ``num_steps`` successive optimizer steps.

    Runs the training loop torch's documentation prescribes, without gradients: read the
    groups, ``optimizer.step()``, ``scheduler.step()`` (``scheduler.step(metrics[k])``
    when ``metrics`` is given, for :class:`ReduceLROnPlateau`).

    Args:
      scheduler_factory: ``optimizer -> scheduler`` (a ``lambda opt: StepLR(opt, 10)``).
      num_steps: the number of steps.
      optimizer: the optimizer to drive; by default a fresh ``SGD`` with one group, the
        given ``lr`` and ``momentum=0.9`` (so that momentum cycling works).
      lr: the default optimizer's learning rate.
      metrics: one metric per step, for schedulers whose ``step`` takes one.
      key: the group entry to record (``"lr"``, ``"momentum"``) or a function of the group
        (``lambda g: g["betas"][0]``).

    Returns:
      A float64 array ``[num_steps, len(optimizer.param_groups)]``: row ``k`` holds what
      the ``k``-th optimizer step (from 0) uses, the twin of
      :func:`gradxform.schedules.sample` for the same schedule.

    Example:
      >>> from torch_compat.optim import lr_scheduler
      >>> lr_scheduler.sample_lrs(lambda opt: lr_scheduler.ExponentialLR(opt, 0.5), 3, lr=1.0)[:, 0].tolist()
      [1.0, 0.5, 0.25]
    """
    if optimizer is None:
        from torch_compat._parameter import Parameter
        from torch_compat.optim.sgd import SGD

        optimizer = SGD([Parameter(jnp.zeros(()))], lr=lr, momentum=0.9)
    read = key if callable(key) else (lambda group: group[key])
    scheduler = scheduler_factory(optimizer)
    rows = []
    for index in range(num_steps):
        rows.append([float(np.asarray(read(group))) for group in optimizer.param_groups])
        optimizer.step()  # no gradients: nothing moves, but the order is torch's
        if index == num_steps - 1:
            break
        if metrics is None:
            scheduler.step()
        else:
            scheduler.step(metrics[index])
    return np.asarray(rows, dtype=np.float64).reshape(num_steps, len(optimizer.param_groups))

"""``torch_compat.amp.GradScaler``: torch 2.13's dynamic loss scaling on JAX arrays."""

from __future__ import annotations

import warnings
from collections import abc, defaultdict
from enum import Enum
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _internal
from torch_compat.optim.optimizer import GradxformOptimizer, Optimizer

__all__ = ["GradScaler", "OptState"]


class OptState(Enum):
    """Where an optimizer stands in the scaler's iteration (torch's ``OptState``)."""

    READY = 0
    UNSCALED = 1
    STEPPED = 2


def _refresh_per_optimizer_state() -> dict[str, Any]:
    return {"stage": OptState.READY, "found_inf": None}


# One compiled call each; the factors and interval are traced (set_growth_factor and
# friends never recompile).
_unscale = jax.jit(_internal.unscale)
_update_scale = jax.jit(_internal.update_loss_scale)


def _gpu_available() -> bool:
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


class _StepRan:
    """``optimizer._opt_called`` after a scaler step: true unless the step was skipped.

    torch's scheduler reads the flag on its first ``step()`` to warn that
    ``optimizer.step()`` did not run (as happens when the scaler skips the first step).
    The step's decision stays on the device until the scheduler asks (one read, then).
    """

    def __init__(self, found_inf: jax.Array, before: Any) -> None:
        self._found_inf = found_inf
        self._before = before

    def __bool__(self) -> bool:
        return bool(self._before) or not bool(self._found_inf)


class GradScaler:
    """Dynamic loss scaling for float16 training, with the API of ``torch.amp.GradScaler``.

    Multiply the loss by the scale (:meth:`scale`) before taking its gradient; then
    :meth:`step` unscales the gradients, checks them for Inf and NaN and runs
    ``optimizer.step()`` unless they hold any; :meth:`update` then grows the scale after
    ``growth_interval`` finite steps in a row or multiplies it by ``backoff_factor``
    after a non-finite one. The sequence of scales is torch 2.13's for the same
    gradients (the arithmetic is :func:`gradxform.loss_scaled`'s).

    No host synchronization: the scale, the growth tracker and ``found_inf`` are device
    arrays, and for the torch_compat optimizers (all but LBFGS) the choice to skip is
    made inside the optimizer's compiled step. Only :meth:`get_scale` and
    :meth:`state_dict` read the scale back, as in torch, and a step in which some
    parameter has no state yet reads whether it was skipped (to create the state or not).

    What differs from torch:

    * ``device``: the scale lives on JAX's default device (uncommitted, so it follows
      the arrays it meets). ``"cuda"`` (the default, as in torch) means that JAX must
      have a GPU: without one the scaler disables itself with torch's warning. Any
      other name (``"cpu"``, ``"tpu"``, ...) is accepted and kept, as torch keeps it.
    * A skipped step of a torch_compat optimizer still calls ``optimizer.step()``, which
      changes nothing (no parameter, no state, no ``step`` count), but its step hooks
      run. A learning-rate scheduler stepped after a skipped first step still gives
      torch's "Detected call of `lr_scheduler.step()` before `optimizer.step()`"
      warning. For any other :class:`~torch_compat.optim.Optimizer` (LBFGS, your own
      subclass) the scaler reads ``found_inf`` back and skips ``step()``, as torch.
    * :meth:`scale` refuses traced values (inside ``jax.jit``, ``jax.grad`` or
      :func:`torch_compat.backward`, which compiles its loss function): the compiled
      function would keep the scale it was traced with. Pass the scale in as an
      argument instead: ``scaler.scale(jnp.ones(()))`` is the current scale as an array.
    * The factors multiply the scale in float64 under ``jax_enable_x64``, as torch; without
      it, in two float32 parts: the same scales for factors float32 holds (the defaults)
      and most others, but a factor such as 1.1 may rarely give a scale one float32 step
      apart (``docs/mixed-precision.md``).
    * ``new_scale`` in :meth:`update` may be a float or a one-element array (JAX or
      NumPy); arrays carry no device or ``requires_grad`` to check.

    Args:
      device: see above.
      init_scale: the first scale.
      growth_factor: the factor the scale grows by (``> 1``).
      backoff_factor: the factor the scale shrinks by (``< 1``).
      growth_interval: finite steps in a row before the scale grows.
      enabled: ``False`` makes every method a no-op and :meth:`step` a plain
        ``optimizer.step()``.

    Raises:
      AssertionError: torch's, for ``growth_factor <= 1`` or ``backoff_factor >= 1``.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> from torch_compat.amp import GradScaler
      >>> w = torch_compat.Parameter(jnp.array([1.0, 2.0]))
      >>> opt = optim.SGD([w], lr=0.1)
      >>> scaler = GradScaler("cpu", init_scale=1024.0)
      >>> def loss_fn(params, scale):
      ...     return jnp.sum(params[0] ** 2) * scale
      >>> scaled = torch_compat.backward(loss_fn, [w], scaler.scale(jnp.ones(())))
      >>> scaler.step(opt)
      >>> scaler.update()
      >>> [round(v, 6) for v in w.data.tolist()], scaler.get_scale()
      ([0.8, 1.6], 1024.0)
    """

    def __init__(
        self,
        device: str = "cuda",
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        self._device = device
        self._enabled = enabled
        if self._device == "cuda" and enabled and not _gpu_available():
            warnings.warn(
                "torch.cuda.amp.GradScaler is enabled, but CUDA is not available.  Disabling.",
                stacklevel=2,
            )
            self._enabled = False
        if self._enabled:
            _internal.check_loss_scale_factors(growth_factor, backoff_factor)
            self._init_scale = init_scale
            self._scale: jax.Array | None = None
            self._growth_factor = growth_factor
            self._backoff_factor = backoff_factor
            self._growth_interval = growth_interval
            self._init_growth_tracker = 0
            self._growth_tracker: jax.Array | None = None
            self._per_optimizer_states: dict[int, dict[str, Any]] = defaultdict(_refresh_per_optimizer_state)

    # -- the scale ---------------------------------------------------------------------

    def _check_scale_growth_tracker(self, funcname: str) -> tuple[jax.Array, jax.Array]:
        fix = "This may indicate your script did not use scaler.scale(loss or outputs) earlier in the iteration."
        if self._scale is None:
            raise AssertionError(f"Attempted {funcname} but _scale is None.  " + fix)
        if self._growth_tracker is None:
            raise AssertionError(f"Attempted {funcname} but _growth_tracker is None.  " + fix)
        return self._scale, self._growth_tracker

    def _lazy_init_scale_growth_tracker(self) -> None:
        with jax.ensure_compile_time_eval():
            self._scale = jnp.full((), self._init_scale, jnp.float32)
            self._growth_tracker = jnp.full((), self._init_growth_tracker, jnp.int32)

    def scale(self, outputs):
        """Multiplies ``outputs`` by the scale (unchanged when the scaler is disabled).

        ``outputs`` is an array or a (nested) list, tuple or dict of arrays; a list,
        tuple or dict comes back as one, any other iterable as a lazy ``map``, as in
        torch. An array with dimensions keeps its dtype (a float16 one is multiplied in
        float32 and rounded once); a 0-d one promotes with the float32 scale.

        Raises:
          ValueError: torch's, for something that is neither an array nor an iterable.
          TypeError: for a traced value (see the class notes).
        """
        if not self._enabled:
            return outputs

        def apply_scale(val):
            if isinstance(val, (jax.Array, np.ndarray)):
                if isinstance(val, jax.core.Tracer):
                    raise TypeError(
                        "GradScaler.scale() got a traced value (inside jax.jit, jax.grad or "
                        "torch_compat.backward): the compiled function would keep the current "
                        "scale. Pass the scale in as an argument, e.g. scaler.scale(jnp.ones(())), "
                        "and multiply the loss by it inside the function."
                    )
                if self._scale is None:
                    self._lazy_init_scale_growth_tracker()
                return _internal.scale_outputs(val, self._scale)
            if isinstance(val, dict):
                return type(val)((k, apply_scale(v)) for k, v in val.items())
            if isinstance(val, abc.Iterable):
                iterable = map(apply_scale, val)
                if isinstance(val, (list, tuple)):
                    return type(val)(iterable)
                return iterable
            raise ValueError("outputs must be a Tensor or an iterable of Tensors")

        return apply_scale(outputs)

    # -- unscaling and stepping ----------------------------------------------------------

    def _unscale_grads_(self, optimizer: Optimizer, scale: jax.Array) -> jax.Array | None:
        """Unscales every ``.grad`` of ``optimizer`` in one compiled call; returns
        ``found_inf`` (None when no parameter has a gradient)."""
        params, seen = [], set()
        for group in optimizer.param_groups:
            for param in group["params"]:
                if param.grad is None or id(param) in seen:
                    continue
                if jnp.dtype(param.grad.dtype) == jnp.float16:
                    raise ValueError("Attempting to unscale FP16 gradients.")
                seen.add(id(param))
                params.append(param)
        if not params:
            return None
        grads, found_inf = _unscale([p.grad for p in params], scale)
        for param, grad in zip(params, grads):
            param.grad = grad
        return found_inf

    def unscale_(self, optimizer: Optimizer) -> None:
        """Divides the gradients of ``optimizer``'s parameters by the scale (in place).

        Optional: call it to see or change the true gradients (clip them, say) before
        :meth:`step`. At most once per optimizer between two :meth:`update` calls, and
        not after :meth:`step`. The Inf/NaN check it makes is what :meth:`step` uses.
        No host synchronization.

        Raises:
          RuntimeError: torch's, when called twice or after :meth:`step`.
          ValueError: torch's, for a float16 gradient ("Attempting to unscale FP16
            gradients.").
        """
        if not self._enabled:
            return
        self._check_scale_growth_tracker("unscale_")
        optimizer_state = self._per_optimizer_states[id(optimizer)]
        if optimizer_state["stage"] is OptState.UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        if optimizer_state["stage"] is OptState.STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        optimizer_state["found_inf"] = self._unscale_grads_(optimizer, self._scale)
        optimizer_state["stage"] = OptState.UNSCALED

    def step(self, optimizer: Optimizer, *args: Any, **kwargs: Any):
        """Unscales the gradients (unless :meth:`unscale_` did) and steps unless they hold Inf/NaN.

        ``*args`` and ``**kwargs`` go to ``optimizer.step()``, whose return value is
        returned (``None`` for a skipped step of an optimizer outside torch_compat's
        compiled ones). A closure is refused, as in torch.

        Raises:
          RuntimeError: torch's, for a ``closure`` keyword or a second call before
            :meth:`update`.
          AssertionError: torch's, when no gradient was checked ("No inf checks were
            recorded for this optimizer.").
        """
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        self._check_scale_growth_tracker("step")
        optimizer_state = self._per_optimizer_states[id(optimizer)]
        if optimizer_state["stage"] is OptState.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if optimizer_state["stage"] is OptState.READY:
            self.unscale_(optimizer)
        found_inf = optimizer_state["found_inf"]
        if found_inf is None:
            raise AssertionError("No inf checks were recorded for this optimizer.")
        retval = None
        if isinstance(optimizer, GradxformOptimizer):
            before = getattr(optimizer, "_opt_called", False)
            optimizer._forced_skip = found_inf
            try:
                retval = optimizer.step(*args, **kwargs)
            finally:
                optimizer._forced_skip = None
            if getattr(optimizer, "_opt_called", False) is True and before is not True:
                # A scheduler watches this optimizer: the step counts only if not skipped.
                optimizer._opt_called = _StepRan(found_inf, before)
        elif not bool(found_inf):
            retval = optimizer.step(*args, **kwargs)
        optimizer_state["stage"] = OptState.STEPPED
        return retval

    def update(self, new_scale: float | jax.Array | None = None) -> None:
        """Updates the scale, from this iteration's checks or to ``new_scale``.

        After any non-finite step (over all optimizers stepped since the last update) the
        scale is multiplied by ``backoff_factor``; after ``growth_interval`` finite
        iterations in a row, by ``growth_factor``. Call it once per iteration, after
        :meth:`step` for every optimizer. One compiled call, no host synchronization.

        Args:
          new_scale: optional; a float or a one-element array to set the scale to.

        Raises:
          AssertionError: torch's, when nothing was checked since the last update ("No
            inf checks were recorded prior to update."), or for a ``new_scale`` array of
            more than one element.
        """
        if not self._enabled:
            return
        scale, growth_tracker = self._check_scale_growth_tracker("update")
        if new_scale is not None:
            if isinstance(new_scale, float):
                self._scale = jnp.full((), new_scale, jnp.float32)
            else:
                if not isinstance(new_scale, (jax.Array, np.ndarray)):
                    raise AttributeError(f"'{type(new_scale).__name__}' object has no attribute 'device'")
                if np.size(new_scale) != 1:
                    raise AssertionError(
                        "new_scale should be a float or a 1-element torch.cuda.FloatTensor or "
                        "torch.FloatTensor with requires_grad=False."
                    )
                self._scale = jnp.asarray(new_scale, jnp.float32).reshape(())
        else:
            found_infs = [
                state["found_inf"] for state in self._per_optimizer_states.values() if state["found_inf"] is not None
            ]
            if not found_infs:
                raise AssertionError("No inf checks were recorded prior to update.")
            found_inf = jnp.any(jnp.stack(found_infs)) if len(found_infs) > 1 else found_infs[0]
            self._scale, self._growth_tracker = _update_scale(
                scale,
                growth_tracker,
                found_inf,
                _internal.split_loss_scale_factor(self._growth_factor),
                _internal.split_loss_scale_factor(self._backoff_factor),
                np.int32(self._growth_interval),
            )
        self._per_optimizer_states = defaultdict(_refresh_per_optimizer_state)

    # -- reading and setting the options ---------------------------------------------------

    def get_scale(self) -> float:
        """The current scale as a Python float (1.0 when disabled); reads it from the device."""
        if self._enabled:
            return float(self._init_scale) if self._scale is None else float(self._scale)
        return 1.0

    def get_growth_factor(self) -> float:
        """The growth factor."""
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        """Sets the growth factor (unchecked, as in torch)."""
        self._growth_factor = new_factor

    def get_backoff_factor(self) -> float:
        """The backoff factor."""
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        """Sets the backoff factor (unchecked, as in torch)."""
        self._backoff_factor = new_factor

    def get_growth_interval(self) -> int:
        """The growth interval."""
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        """Sets the growth interval."""
        self._growth_interval = new_interval

    def _get_growth_tracker(self) -> int:
        if self._enabled:
            return self._init_growth_tracker if self._growth_tracker is None else int(self._growth_tracker)
        return 0

    def is_enabled(self) -> bool:
        """Whether the scaler is enabled."""
        return self._enabled

    # -- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """torch's five entries: ``scale``, ``growth_factor``, ``backoff_factor``,
        ``growth_interval`` and ``_growth_tracker`` (Python numbers); ``{}`` when disabled.
        Call it after :meth:`update`."""
        if self._enabled:
            return {
                "scale": self.get_scale(),
                "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor,
                "growth_interval": self._growth_interval,
                "_growth_tracker": self._get_growth_tracker(),
            }
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads a :meth:`state_dict` (torch's too); a no-op when disabled.

        Raises:
          RuntimeError: torch's, for an empty state dict (saved by a disabled scaler).
        """
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError(
                "The source state dict is empty, possibly because it was saved "
                "from a disabled instance of GradScaler."
            )
        self._init_scale = float(state_dict["scale"])
        if self._scale is not None:
            self._scale = jnp.full((), self._init_scale, jnp.float32)
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._init_growth_tracker = int(state_dict["_growth_tracker"])
        if self._growth_tracker is not None:
            self._growth_tracker = jnp.full((), self._init_growth_tracker, jnp.int32)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._enabled:
            if len(self._per_optimizer_states) != 0:
                raise AssertionError(
                    "A GradScaler instance may only be pickled at the beginning "
                    "of an iteration, or at the end after scaler.update()."
                )
            state["_init_scale"] = self.get_scale()
            state["_init_growth_tracker"] = self._get_growth_tracker()
            state["_scale"] = None
            state["_growth_tracker"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

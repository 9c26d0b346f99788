"""``Optimizer``: torch.optim's base class, on JAX arrays.

The bookkeeping (param groups, state keyed by parameter, hooks, ``state_dict``) follows
torch 2.13 line by line. The math does not live here: :class:`GradxformOptimizer` runs one
gradxform transformation per param group, all groups in one jit-compiled call, and writes
the results back into ``Parameter.data`` and ``state``.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import warnings
from collections import OrderedDict, defaultdict
from collections.abc import Hashable, Mapping
from typing import Any, Callable, ClassVar, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import gradxform
from gradxform import _internal
from torch_compat._parameter import ARRAYS_HINT, Parameter, typename
from torch_compat.optim._types import (  # noqa: F401  (torch.optim.optimizer's public aliases)
    Args,
    DeviceDict,
    DeviceDtypeDict,
    GlobalOptimizerPostHook,
    GlobalOptimizerPreHook,
    Indices,
    Kwargs,
    ParamsT,
    R,
    StateDict,
    T,
    TensorListList,
)


class _RequiredParameter:
    """Singleton marking a required optimizer option."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()


class RemovableHandle:
    """Returned by the ``register_*_hook`` methods; ``remove()`` unregisters the hook."""

    _next_id = itertools.count()

    def __init__(self, hooks_dict: dict):
        self._hooks_dict = hooks_dict
        self.id = next(RemovableHandle._next_id)

    def remove(self) -> None:
        self._hooks_dict.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


_global_optimizer_pre_hooks: OrderedDict[int, Callable] = OrderedDict()
_global_optimizer_post_hooks: OrderedDict[int, Callable] = OrderedDict()


def register_optimizer_step_pre_hook(hook: Callable) -> RemovableHandle:
    """Registers ``hook(optimizer, args, kwargs) -> None | (args, kwargs)`` for every optimizer."""
    handle = RemovableHandle(_global_optimizer_pre_hooks)
    _global_optimizer_pre_hooks[handle.id] = hook
    return handle


def register_optimizer_step_post_hook(hook: Callable) -> RemovableHandle:
    """Registers ``hook(optimizer, args, kwargs) -> None`` for every optimizer."""
    handle = RemovableHandle(_global_optimizer_post_hooks)
    _global_optimizer_post_hooks[handle.id] = hook
    return handle


def _with_step_hooks(step: Callable) -> Callable:
    """Wraps a subclass's ``step`` with the global and per-optimizer step hooks, as torch does."""

    @functools.wraps(step)
    def wrapper(*args, **kwargs):
        self = args[0]
        for pre_hook in itertools.chain(
            _global_optimizer_pre_hooks.values(), self._optimizer_step_pre_hooks.values()
        ):
            result = pre_hook(self, args, kwargs)
            if result is not None:
                if isinstance(result, tuple) and len(result) == 2:
                    args, kwargs = result
                else:
                    raise RuntimeError(
                        f"<function {type(self).__qualname__}.step at {hex(id(step))}> must return "
                        f"None or a tuple of (new_args, new_kwargs), but got {result}."
                    )
        out = step(*args, **kwargs)
        for post_hook in itertools.chain(
            self._optimizer_step_post_hooks.values(), _global_optimizer_post_hooks.values()
        ):
            post_hook(self, args, kwargs)
        return out

    wrapper._hooked = True  # type: ignore[attr-defined]
    return wrapper


class Optimizer:
    """Base class of all optimizers, with torch 2.13's API.

    Args:
      params: an iterable of :class:`~torch_compat.Parameter`, of ``(name, Parameter)``
        pairs, or of dicts (param groups) holding ``"params"`` and per-group options.
      defaults: default values of the options, used where a group does not set them.

    Subclasses implement ``step``; it is wrapped with the step hooks automatically.
    """

    # Keys torch's ``__setstate__`` reads from every non-empty loaded per-parameter state
    # (a missing one is its KeyError at load_state_dict).
    _keys_read_on_load: ClassVar[tuple[str, ...]] = ()
    # While load_state_dict runs: the scalar state arrays loaded so far, by value and
    # placement (see _load_value).
    _loaded_scalars: dict | None = None

    # torch's hook type aliases (the hook receives the optimizer, args and kwargs).
    OptimizerPreHook = Callable[[Any, Args, Kwargs], Optional[tuple[Args, Kwargs]]]
    OptimizerPostHook = Callable[[Any, Args, Kwargs], None]

    @staticmethod
    def profile_hook_step(func: Callable) -> Callable:
        """Wraps a ``step`` function with the step hooks, in a profiler range named as torch's.

        torch wraps every subclass's ``step`` with it (so do we, without the range, when a
        subclass is defined). The wrapper runs the global and per-optimizer pre-hooks,
        ``func``, then the post-hooks, inside ``jax.profiler.TraceAnnotation(
        "Optimizer.step#<Class>.step")``, which a JAX profiler trace shows.
        """
        hooked = _with_step_hooks(func)

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with jax.profiler.TraceAnnotation(f"Optimizer.step#{type(args[0]).__name__}.step"):
                return hooked(*args, **kwargs)

        wrapper._hooked = True  # type: ignore[attr-defined]
        return wrapper

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        step = cls.__dict__.get("step")
        if step is not None and not getattr(step, "_hooked", False):
            cls.step = _with_step_hooks(step)

    def __init__(self, params, defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self._optimizer_step_pre_hooks: OrderedDict[int, Callable] = OrderedDict()
        self._optimizer_step_post_hooks: OrderedDict[int, Callable] = OrderedDict()
        self._optimizer_state_dict_pre_hooks: OrderedDict[int, Callable] = OrderedDict()
        self._optimizer_state_dict_post_hooks: OrderedDict[int, Callable] = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks: OrderedDict[int, Callable] = OrderedDict()
        self._optimizer_load_state_dict_post_hooks: OrderedDict[int, Callable] = OrderedDict()
        if isinstance(params, (Parameter, jax.Array)):
            message = (
                "params argument given to the optimizer should be "
                "an iterable of Tensors or dicts, but got " + typename(params)
            )
            raise TypeError(message if isinstance(params, Parameter) else f"{message}. {ARRAYS_HINT}")
        if isinstance(params, Mapping):  # torch iterates its keys: a pytree of arrays, most likely
            for key in params:
                if not isinstance(key, Parameter):
                    raise _not_a_tensor(key, hint=True)
        self.state: defaultdict[Parameter, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for param_group in param_groups:
            self.add_param_group(param_group)

    # -- pickling and printing ------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {"defaults": self.defaults, "state": self.state, "param_groups": self.param_groups}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for name in (
            "_optimizer_step_pre_hooks",
            "_optimizer_step_post_hooks",
            "_optimizer_state_dict_pre_hooks",
            "_optimizer_state_dict_post_hooks",
            "_optimizer_load_state_dict_pre_hooks",
            "_optimizer_load_state_dict_post_hooks",
        ):
            if name not in self.__dict__:
                setattr(self, name, OrderedDict())
        self.defaults.setdefault("differentiable", False)
        for group in self.param_groups:
            for key, value in self._group_defaults_on_load().items():
                group.setdefault(key, value)

    def _group_defaults_on_load(self) -> dict[str, Any]:
        """Options torch's ``__setstate__`` fills in when a saved group lacks them."""
        return {}

    def __repr__(self) -> str:
        text = self.__class__.__name__ + " ("
        for i, group in enumerate(self.param_groups):
            text += "\n" + f"Parameter Group {i}\n"
            for key in sorted(group.keys()):
                if key != "params":
                    text += f"    {key}: {group[key]}\n"
        return text + ")"

    # -- hooks ----------------------------------------------------------------------------

    def register_step_pre_hook(self, hook: Callable) -> RemovableHandle:
        """``hook(optimizer, args, kwargs) -> None | (new_args, new_kwargs)`` before each step."""
        handle = RemovableHandle(self._optimizer_step_pre_hooks)
        self._optimizer_step_pre_hooks[handle.id] = hook
        return handle

    def register_step_post_hook(self, hook: Callable) -> RemovableHandle:
        """``hook(optimizer, args, kwargs) -> None`` after each step."""
        handle = RemovableHandle(self._optimizer_step_post_hooks)
        self._optimizer_step_post_hooks[handle.id] = hook
        return handle

    @staticmethod
    def _register(hooks: OrderedDict, hook: Callable, prepend: bool) -> RemovableHandle:
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        if prepend:
            hooks.move_to_end(handle.id, last=False)
        return handle

    def register_state_dict_pre_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        """``hook(optimizer) -> None``, called before ``state_dict()`` builds its result."""
        return self._register(self._optimizer_state_dict_pre_hooks, hook, prepend)

    def register_state_dict_post_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        """``hook(optimizer, state_dict) -> state_dict | None``, after ``state_dict()``."""
        return self._register(self._optimizer_state_dict_post_hooks, hook, prepend)

    def register_load_state_dict_pre_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        """``hook(optimizer, state_dict) -> state_dict | None``, before loading."""
        return self._register(self._optimizer_load_state_dict_pre_hooks, hook, prepend)

    def register_load_state_dict_post_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        """``hook(optimizer) -> None``, after loading."""
        return self._register(self._optimizer_load_state_dict_post_hooks, hook, prepend)

    # -- state_dict -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The state in torch's layout: ``{"state": {index: {key: array}}, "param_groups": [...]}``.

        Parameters are replaced by their index (counted across groups in order); each
        group carries all its options. Arrays are JAX arrays (``numpy.asarray`` turns them
        into numpy, and ``torch.as_tensor`` into tensors that torch's optimizer loads).

        Unlike torch, which returns references to its live buffers, the arrays are copies:
        the live ones are donated (updated in place) by the next ``step()``, and a saved
        state dict must stay readable.

        In a multi-process run (``jax.distributed``) the arrays are global ``jax.Array``s
        with their parameters' shardings: every process gets the same dict, each holding
        only its own devices' shards, and an array that spans other processes' devices
        cannot be read whole (``numpy.asarray`` raises). Save it with orbax (each process
        writes its shards), or gather it explicitly with
        ``jax.experimental.multihost_utils.process_allgather``; ``load_state_dict`` takes
        it back as it is (see ``docs/sharding.md``).
        """
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        param_mappings: dict[int, int] = {}
        start_index = 0

        def pack_group(group: dict[str, Any]) -> dict[str, Any]:
            nonlocal start_index
            packed = {k: v for k, v in group.items() if k != "params"}
            param_mappings.update(
                {id(p): i for i, p in enumerate(group["params"], start_index) if id(p) not in param_mappings}
            )
            packed["params"] = [param_mappings[id(p)] for p in group["params"]]
            start_index += len(packed["params"])
            return packed

        param_groups = [pack_group(g) for g in self.param_groups]
        packed_state = {
            (param_mappings[id(k)] if isinstance(k, Parameter) else k): {
                key: jnp.array(value, copy=True) if isinstance(value, jax.Array) else value
                for key, value in v.items()
            }
            for k, v in self.state.items()
        }
        state_dict = {"state": packed_state, "param_groups": param_groups}
        state_dict.update(self._extra_state_dict())
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            result = post_hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    @classmethod
    def _scalar_keys(cls) -> tuple[str, ...]:
        """Per-parameter state keys holding one scalar that parameters may share (none here)."""
        return ()

    def _load_value(self, param: Parameter, key: Hashable, value: Any) -> Any:
        """Converts a loaded state value: arrays to JAX, cast to the parameter's dtype
        (``step`` keeps its own dtype), as torch's ``_process_value_according_to_param_policy``.

        The array is placed as the parameter is (see :func:`_place_like`): a loaded state
        of a sharded parameter is never gathered on one device."""
        if _is_array(value):
            shareable = self._loaded_scalars is not None and key in self._scalar_keys()
            if isinstance(value, jax.Array) and not value.is_fully_addressable and not (
                shareable and value.is_fully_replicated
            ):
                # A global array of a multi-process run: no process can read it whole,
                # so it is copied where it lives (a later step() donates the copy). A
                # replicated scalar (``step``) is read, as every process holds it whole,
                # so that equal ones are shared below.
                host = jnp.array(value, copy=True)
            else:
                host = np.asarray(value)
            if key != "step" and jnp.issubdtype(param.dtype, jnp.floating):  # torch: param.is_floating_point()
                host = host.astype(param.dtype)
            placed = _place_like(host, param)
            if shareable and isinstance(host, np.ndarray):
                # Equal scalar state (``step``, ...) placed alike is loaded as one array, so
                # that parameters stepped together before saving step together again (a
                # scalar is replicated, so parameters sharded differently share it too).
                shared = (key, host.dtype.str, host.shape, host.tobytes(), placed.sharding)
                return self._loaded_scalars.setdefault(shared, placed)
            return placed
        if isinstance(value, dict):
            return {k: self._load_value(param, k, v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._load_value(param, None, v) for v in value)
        return value

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads a state dict made by ``state_dict()`` here or by torch (tensors or numpy arrays).

        Equal scalar state values (``step``, ...) of parameters placed alike are loaded as
        one array, which those parameters then share (see :class:`GradxformOptimizer`).

        Raises:
          ValueError: with torch's messages, when the number of groups or of parameters in
            a group differs. Nothing is changed then.
        """
        state_dict = dict(state_dict)
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        groups = self.param_groups
        saved_groups = copy.deepcopy(state_dict["param_groups"])
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved_groups)):
            raise ValueError(
                "loaded state dict contains a parameter group that doesn't match the size of optimizer's group"
            )
        id_map = dict(
            zip(
                itertools.chain.from_iterable(g["params"] for g in saved_groups),
                itertools.chain.from_iterable(g["params"] for g in groups),
            )
        )
        state: defaultdict[Any, dict[str, Any]] = defaultdict(dict)
        self._loaded_scalars = {}
        try:
            for key, value in state_dict["state"].items():
                if key in id_map:
                    param = id_map[key]
                    state[param] = self._load_value(param, None, value)
                else:
                    state[key] = value
        finally:
            self._loaded_scalars = None
        self._check_loaded_state(state)
        param_groups = []
        for group, new_group in zip(groups, saved_groups):
            new_group["params"] = group["params"]
            if "param_names" in group and "param_names" not in new_group:
                new_group["param_names"] = group["param_names"]
            param_groups.append(new_group)
        self.__setstate__({"state": state, "param_groups": param_groups})
        self._load_extra_state_dict(state_dict)
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def _check_loaded_state(self, state: dict[Any, Any]) -> None:
        """Checks the loaded per-parameter states (keyed by this optimizer's parameters)
        before anything is changed: a non-empty one must hold the keys torch's
        ``__setstate__`` reads (:attr:`_keys_read_on_load`).

        Raises:
          KeyError: torch's, naming the missing key (the first, by group and parameter).
        """
        for group in self.param_groups:
            for p in group["params"]:
                entry = state.get(p)
                if isinstance(entry, dict) and entry:
                    for key in self._keys_read_on_load:
                        if key not in entry:
                            raise KeyError(key)

    def _extra_state_dict(self) -> dict[str, Any]:
        """Top-level entries a subclass adds to ``state_dict()`` (torch ignores unknown keys)."""
        return {}

    def _load_extra_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Reads back what :meth:`_extra_state_dict` wrote (absent in a torch state dict)."""

    # -- skipping non-finite steps --------------------------------------------------------

    def set_skip_non_finite(self, enabled: bool = True, max_consecutive_skips: int | None = None) -> None:
        """Skips whole steps whose gradients hold NaN or Inf (not a torch method).

        Only the optimizers built on gradxform transformations (all but LBFGS) offer it;
        see :meth:`GradxformOptimizer.set_skip_non_finite`.

        Raises:
          NotImplementedError: here, for optimizers that do not offer it.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not support skipping non-finite steps"
        )

    # -- gradients and groups -------------------------------------------------------------

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Resets the gradients: to ``None`` (default), or to zeros with ``set_to_none=False``."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    if set_to_none:
                        p.grad = None
                    elif isinstance(p.grad, sparse.BCOO):
                        p.grad = sparse.BCOO.fromdense(jnp.zeros(p.shape, p.dtype))
                    else:
                        p.grad = jnp.zeros_like(p.grad)

    def step(self, closure: Callable[[], Any] | None = None):
        """Performs one optimization step (implemented by subclasses)."""
        raise NotImplementedError

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Adds a group of parameters with its own options (torch's checks and messages)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        params = param_group["params"]
        from_mapping = isinstance(params, Mapping)
        if isinstance(params, Parameter):
            param_group["params"] = [params]
        elif isinstance(params, set):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but "
                "the ordering of tensors in sets will change between runs. Please use a list instead."
            )
        else:
            param_group["params"] = list(params)
        tensors, names = [], []
        for param in param_group["params"]:
            if isinstance(param, tuple):
                names.append(param[0])
                tensors.append(param[1])
            else:
                tensors.append(param)
        param_group["params"] = tensors
        if names:
            if len(names) == len(tensors):
                param_group["param_names"] = names
            else:
                raise ValueError(
                    "all optimizer params should be with/without names. Some param names are missing"
                )
        for param in param_group["params"]:
            if not isinstance(param, Parameter):
                raise _not_a_tensor(param, hint=from_mapping or _is_array(param))
        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError(
                    f"parameter group didn't specify a value of required optimization parameter {name}"
                )
            param_group.setdefault(name, default)
        params = param_group["params"]
        if len(params) != len(set(params)):
            warnings.warn(
                "optimizer contains a parameter group with duplicate parameters; "
                "in future, this will cause an error; "
                "see github.com/pytorch/pytorch/issues/40967 for more information",
                stacklevel=3,
            )
        param_set: set[Parameter] = set()
        for group in self.param_groups:
            param_set.update(set(group["params"]))
            if ("param_names" in param_group) != ("param_names" in group):
                current = "with names" if "param_names" in param_group else "without names"
                raise ValueError(
                    "all optimizer param groups should be with/without names. "
                    f"cannot add param group {current} to the optimizer"
                )
        if not param_set.isdisjoint(set(param_group["params"])):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(param_group)


def _not_a_tensor(param: Any, hint: bool) -> TypeError:
    """torch's error for a non-Tensor in the params, with :data:`ARRAYS_HINT` when
    ``hint`` (an array, or a key of a dict given as params)."""
    message = "optimizer can only optimize Tensors, but one of the params is " + typename(param)
    return TypeError(f"{message}. {ARRAYS_HINT}" if hint else message)


def _is_array(value) -> bool:
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        return True
    # torch tensors, without importing torch.
    return type(value).__module__.startswith("torch") and hasattr(value, "numpy")


def _place_like(host: np.ndarray, param: Parameter) -> jax.Array:
    """A host array (or a global array of a multi-process run) placed as ``param.data``.

    A parameter on one device: the default placement (``jnp.asarray``). A sharded one: an
    array of its shape gets its sharding; one of its shape with some dimensions reduced
    to 1 (Adafactor's ``row_var``, ``col_var``) gets it on the dimensions it keeps; any
    other (``step``, a scalar) is replicated over its devices. ``jax.device_put`` copies
    each device its own slice from the host.
    """
    sharding = param.data.sharding
    if len(sharding.device_set) <= 1:
        return jnp.asarray(host)
    if host.shape == param.shape:
        return jax.device_put(host, sharding)
    if isinstance(sharding, NamedSharding):
        mesh = sharding.mesh
        if host.ndim == param.ndim and all(h in (1, s) for h, s in zip(host.shape, param.shape)):
            spec = tuple(sharding.spec) + (None,) * (param.ndim - len(sharding.spec))
            kept = [axis if h == s else None for axis, h, s in zip(spec, host.shape, param.shape)]
            return jax.device_put(host, NamedSharding(mesh, PartitionSpec(*kept)))
    else:
        mesh = Mesh(np.array(sorted(sharding.device_set, key=lambda d: d.id)), ("devices",))
    return jax.device_put(host, NamedSharding(mesh, PartitionSpec()))


# The largest step a state may hold: the core counts steps in int32, and this leaves room
# to count on (2**31 - 1 + 1 would wrap to a negative step).
_MAX_STEP = 2**30


def _check_step(value: Any, where: str) -> None:
    """Refuses a ``step`` that the int32 step counter of the core cannot hold.

    A one-element value must be a whole number from 0 to 2**30. torch, whose step is a
    float32 tensor, would compute with anything: a fraction, NaN, 3e9, or a negative
    step (which gives NaN or a complex-cast error). Other sizes are left to the shape
    check of ``step()``, as torch leaves them.

    Raises:
      ValueError: naming ``where`` and the value.
    """
    if not _is_valid_step(value):
        step = np.asarray(value).reshape(()).item()
        raise ValueError(
            f"{where} has step {step!r}, which torch_compat cannot count: it counts steps in "
            f"int32, so a step must be a whole number from 0 to 2**30 ({_MAX_STEP})"
        )


def _is_valid_step(value: Any) -> bool:
    """Whether :func:`_check_step` accepts ``value``."""
    array = np.asarray(value)
    if array.size != 1:
        return True
    try:
        number = float(array.reshape(()).item())
    except TypeError:  # complex
        return False
    return math.isfinite(number) and number.is_integer() and 0 <= number <= _MAX_STEP


def _shape_mismatch_message(shape: tuple[int, ...], expected: tuple[int, ...], buffer_first: bool = True) -> str:
    """torch's message when a buffer of ``shape`` meets a tensor of ``expected`` shape in
    an in-place update (``buffer.lerp_(grad)``, then ``param.add_(buffer ...)``).

    When the shapes broadcast, the in-place output that cannot take the broadcast shape
    is named: the buffer if it is smaller, otherwise the parameter. When they do not,
    the last dimension that differs is named, the buffer being tensor ``a`` (``b`` with
    ``buffer_first=False``, for ops written ``grad.mul(buffer)``).

    >>> _shape_mismatch_message((1, 3), (3,))
    "output with shape [3] doesn't match the broadcast shape [1, 3]"
    >>> _shape_mismatch_message((2,), (3,))
    'The size of tensor a (2) must match the size of tensor b (3) at non-singleton dimension 0'
    """
    ndim = max(len(shape), len(expected))
    a = (1,) * (ndim - len(shape)) + tuple(shape)
    b = (1,) * (ndim - len(expected)) + tuple(expected)
    for dim in reversed(range(ndim)):
        if a[dim] != b[dim] and a[dim] != 1 and b[dim] != 1:
            first, second = (a[dim], b[dim]) if buffer_first else (b[dim], a[dim])
            return (
                f"The size of tensor a ({first}) must match the size of tensor b ({second}) "
                f"at non-singleton dimension {dim}"
            )
    broadcast = [y if x == 1 else x for x, y in zip(a, b)]
    output = list(shape) if list(shape) != broadcast else list(expected)
    return f"output with shape {output} doesn't match the broadcast shape {broadcast}"


def _shaped(value: Any, shape: tuple[int, ...]) -> jax.Array:
    """``value`` as an array of ``shape``, which it has, or of one element for a scalar."""
    value = jnp.asarray(value)
    return value if value.shape == tuple(shape) else value.reshape(shape)


def _to_float(value: Any) -> float:
    return float(np.asarray(value).reshape(())) if _is_array(value) else float(value)


def _freeze(value: Any) -> Hashable:
    """A hashable stand-in for a group option (for the compile cache key)."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if _is_array(value):
        return ("array", np.asarray(value).tobytes())
    try:
        hash(value)
        # With its type: 1, 1.0 and True are equal keys, but not the same option (range(1.0) fails).
        return (type(value).__name__, value)
    except TypeError:
        return repr(value)


def _named_fields(state: Any):
    """Yields ``(name, value, owner, index)`` for the fields of NamedTuple states in a chain."""
    if hasattr(state, "_fields"):
        for index, name in enumerate(state._fields):
            yield name, getattr(state, name), state, index
            value = getattr(state, name)
            if isinstance(value, tuple) and not hasattr(value, "_fields"):
                yield from _named_fields(value)
    elif isinstance(state, (tuple, list)):
        for sub in state:
            yield from _named_fields(sub)


def _replace_fields(state: Any, replace: Callable[[Any, str, Any], Any]) -> Any:
    """Rebuilds nested NamedTuple/tuple states with ``replace(owner, name, value)`` on each field."""
    if hasattr(state, "_fields"):
        values = []
        for name in state._fields:
            value = getattr(state, name)
            if isinstance(value, tuple) and not hasattr(value, "_fields"):
                values.append(_replace_fields(value, replace))
            else:
                values.append(replace(state, name, value))
        return type(state)(*values)
    if isinstance(state, (tuple, list)):
        return type(state)(_replace_fields(s, replace) for s in state)
    return state


def _skip_decision(control, kept):
    """Inside the compiled step: whether to skip it, and the new (total, consecutive) counts.

    ``control`` is ``(total, consecutive, limit, decision)`` (``limit`` None for no
    limit, as :func:`gradxform.skip_non_finite`'s); ``decision`` is None on
    the first pass of a step (it is made here, from every gradient) and the first
    pass's decision on later passes (repeated parameters), which leave the counts alone.
    """
    total, consecutive, limit, decision = control
    if decision is not None:
        return decision, (total, consecutive)
    finite = gradxform.all_finite([grads for grads, _, _ in kept])
    skip, total, consecutive = _internal.decide_skip(finite, total, consecutive, limit)
    return skip, (total, consecutive)


def _unchanged(donated, kept, shapes):
    """The results of a skipped step: the old parameters and state, shaped as ``shapes``.

    A parameter (or step group) without state gets placeholder zeros, which the caller
    does not store.
    """
    results = []
    for (params, buffers), (_, scalars, _), (_, buffer_shapes, scalar_shapes) in zip(donated, kept, shapes):
        results.append(
            (
                list(params),
                [_old_or_zeros(old, shape) for old, shape in zip(buffers, buffer_shapes)],
                [_old_or_zeros(old, shape) for old, shape in zip(scalars, scalar_shapes)],
            )
        )
    return results


def _old_or_zeros(old: dict[str, Any], shapes: dict[str, Any]) -> dict[str, Any]:
    """For each key of ``shapes``, the value in ``old`` cast and shaped as there (a loaded
    one-element ``step`` may be ``[1]``), or zeros."""
    return {
        k: jnp.reshape(jnp.asarray(old[k]).astype(v.dtype), v.shape) if k in old else jnp.zeros(v.shape, v.dtype)
        for k, v in shapes.items()
    }


def _as_jax(value: Any) -> jax.Array:
    """A stored state value as a JAX array (a JAX array is passed as it is)."""
    return value if isinstance(value, jax.Array) else jnp.asarray(value)


# The per-parameter scalar state keys (one value per parameter in torch) that the core keeps
# once per transformation: ``step`` (all but SGD and Muon), ASGD's ``eta`` and ``mu``,
# NAdam's ``mu_product`` (tests/test_compat_step_groups.py checks the list against the core).
_SCALAR_STATE_NAMES = ("step", "eta", "mu", "mu_product")


class GradxformOptimizer(Optimizer):
    """An optimizer whose math is a gradxform alias.

    A subclass declares:

    * ``_state_keys``: torch's per-parameter state keys, in torch's order, and
      ``_state_class``: the gradxform state whose fields of those names carry them
      (the classes made from a registry spec get both from it);
    * ``_hyperparams``: the group options that are float hyperparameters (passed to the
      transformation as traced arrays, so changing them never recompiles);
    * ``_make_transform(options)``: the gradxform transformation for one group's options;
    * optionally ``_structure(group)``: facts about the float options that change the
      transformation's structure (``momentum == 0``, ...), part of the compile key.

    ``step()`` runs every group in one jit-compiled call and writes back the parameters
    and the per-parameter state (created on a parameter's first step with a gradient).

    Scalar state (``step``, ASGD's ``eta`` and ``mu``, NAdam's ``mu_product``) is kept per
    parameter, as torch keeps it, but the parameters stepped together hold the same
    arrays: each param group is split into step groups of parameters sharing them
    (:meth:`_step_groups`), and each step group is one call of the core's ``update`` with
    one scalar, so that its scalar work (``step + 1``, bias corrections, ...) is done once
    per step group, not once per parameter. A parameter whose first gradient came later
    holds its own ``step`` (its own step group, for good: nothing merges groups whose
    values meet again, which would need a host read); so does one whose ``step`` a user
    assigned. ``load_state_dict`` loads equal values placed alike as one array, so the
    parameters of a saved optimizer step together again. ``state_dict()`` copies each
    parameter's ``step``, as torch gives one per parameter. Scalar state is not donated.
    A step group's numbers are the core's ``update`` on its parameters, bit for bit; the
    same parameter in a group of another size may differ in the last bit (XLA rounds a
    coefficient computed once for several kernels apart from one fused into a single
    kernel), which is why a loaded state must regroup as it was saved to continue bit
    for bit.

    Compiled steps are shared by all optimizers of a class with the same static options
    (and state keys), in a cache of at most 64 entries (``_compile_cache_size``; the
    least recently used one is dropped). They hold no optimizer, Parameter or array:
    a deleted optimizer frees its memory. Hyperparameters are not part of the key:
    changing ``group["lr"]`` never recompiles.

    Broken per-parameter state is refused with torch's exception, before anything
    changes:

    * a state (loaded, or edited in ``optimizer.state[p]``) that lacks a key torch's step
      reads: ``KeyError(key)``, at ``load_state_dict`` for the keys torch reads there
      (``step``, and ASGD's ``eta`` and ``mu``, NAdam's ``mu_product``), otherwise at
      ``step()``; Adafactor's missing ``row_var``, ``col_var`` or ``variance`` give its
      ``AssertionError``. SGD's and Muon's ``momentum_buffer`` are created afresh, as in
      torch. With several keys missing, the first in torch's state order is named.
    * a buffer whose shape differs from the one its parameter needs: at ``step()``,
      torch's ``RuntimeError`` for the in-place update that fails ("output with shape
      [3] doesn't match the broadcast shape [1, 3]", "The size of tensor a (2) must
      match the size of tensor b (3) at non-singleton dimension 0"), SparseAdam's
      ``sparse_mask()`` message and Muon's ``ValueError`` for a buffer that is not a
      matrix. Where torch accepts a broadcastable buffer because the step never writes
      it into the parameter (ASGD's ``ax``, RAdam's ``exp_avg_sq`` in its first steps),
      it is refused here all the same. A scalar (``step``, ``eta``, ...) may be any
      one-element array; one of several elements is torch's ``RuntimeError`` ("a Tensor
      with 3 elements cannot be converted to Scalar"), also for Rprop, Adadelta and
      RMSprop, whose torch versions never read the step's value and keep it.
    * a ``step`` the int32 step counter cannot hold (negative, fractional, not finite, or
      above 2**30, which leaves room to count on): ``ValueError``, at ``load_state_dict`` (and at
      ``step()`` for a host number or NumPy value put in ``optimizer.state[p]``).
      torch keeps ``step`` as a float32 tensor and accepts such values, computing with
      them (a negative step gives NaN or a complex-cast error, 3e9 steps on as 3e9).
    """

    _state_keys: ClassVar[tuple[str, ...]] = ()
    # The gradxform state NamedTuple whose fields carry the state keys (None: the first
    # field of each name anywhere in the transformation's state).
    _state_class: ClassVar[type | None] = None
    _hyperparams: ClassVar[tuple[str, ...]] = ("lr",)
    # Float options whose feature is left out of the transformation while they are 0
    # (torch skips it too); a change to or from 0 recompiles once.
    _zero_options: ClassVar[tuple[str, ...]] = ("weight_decay",)
    # For a parameter listed twice in a group: whether a later listing starts from the
    # state the parameter had when the step began (torch's SGD gathers its momentum
    # buffers before the loop, so each listing of a new parameter starts afresh), rather
    # than from the state the earlier listing left (the others share their state dicts).
    _repeats_see_initial_state: ClassVar[bool] = False
    _sparse_grad_message: ClassVar[str] = ""
    # Sequence options torch unpacks into two names at each step (``beta1, beta2 =
    # group["betas"]``): unpacked here too, so a wrong length gives Python's own error.
    _unpacked_pairs: ClassVar[tuple[str, ...]] = ()
    # State keys torch creates afresh when a parameter's state lacks them (SGD's and
    # Muon's ``momentum_buffer``); any other missing key is refused (_missing_state_error).
    _recreated_state_keys: ClassVar[tuple[str, ...]] = ()
    _keys_read_on_load: ClassVar[tuple[str, ...]] = ("step",)
    # The compiled steps of all GradxformOptimizers, keyed by class and compile key,
    # least recently used first; past _compile_cache_size entries the oldest is dropped
    # (and compiled again if needed).
    _compiled: ClassVar[OrderedDict] = OrderedDict()
    _compile_cache_size: ClassVar[int] = 64
    # Skipping of non-finite steps (set_skip_non_finite); off by default, as in torch.
    _skip_enabled: bool = False
    _skip_limit: int | None = None
    _skip_counters: Any = None  # (total, consecutive): int32 [] device arrays
    _skip_decision: Any = None  # the current step's decision, for its later passes
    # A bool [] device array set by torch_compat.amp.GradScaler.step for one step() call:
    # the scaler's found_inf, which decides (inside the compiled call) whether to skip.
    _forced_skip: Any = None

    def set_skip_non_finite(self, enabled: bool = True, max_consecutive_skips: int | None = None) -> None:
        """Skips whole steps whose gradients hold NaN or Inf (not a torch method; off by default).

        While enabled, a ``step()`` in which any gradient (of any group) holds a NaN or an
        Inf changes nothing: every parameter keeps its value bit for bit, the state keeps
        its values (per-parameter ``step`` counters included, and a parameter stepped for
        the first time gets no state), and the skip is counted in :attr:`skipped_steps`
        and :attr:`consecutive_skipped_steps`. The check and the choice run inside the
        step's compiled call, so a step costs no host synchronization, except on a step
        where some parameter has no state yet (its state must then be created or not).
        ``closure`` is still called, the step hooks still run, and a learning-rate
        scheduler still counts its own steps: skip its ``step()`` yourself if wanted.

        ``max_consecutive_skips`` has the meaning of :func:`gradxform.skip_non_finite`'s:
        after that many skipped steps in a row, non-finite steps are applied until a
        finite one resets the run.

        The counters travel in ``state_dict()`` under the top-level key
        ``"skip_non_finite"`` (``{"skipped_steps": int, "consecutive_skipped_steps": int}``),
        which torch's ``load_state_dict`` ignores; loading a state dict without it (one
        saved by torch) resets them to 0.

        Args:
          enabled: turn skipping on (the counters start from 0) or off.
          max_consecutive_skips: ``None`` (skip every non-finite step) or a
            non-negative int.

        Raises:
          TypeError, ValueError: for a ``max_consecutive_skips`` that is not ``None`` or a
            non-negative int.

        Example:
          >>> import jax.numpy as jnp, torch_compat
          >>> from torch_compat import optim
          >>> w = torch_compat.Parameter(jnp.array([1.0, 2.0]))
          >>> optimizer = optim.Adam([w], lr=0.1)
          >>> optimizer.set_skip_non_finite()
          >>> w.grad = jnp.array([jnp.nan, 1.0])
          >>> optimizer.step()
          >>> w.data.tolist(), optimizer.skipped_steps, len(optimizer.state)
          ([1.0, 2.0], 1, 0)
        """
        _internal.check_max_consecutive_skips(max_consecutive_skips)
        self._skip_enabled = bool(enabled)
        self._skip_limit = max_consecutive_skips
        self._reset_skip_counters(0, 0)

    def _reset_skip_counters(self, total: int, consecutive: int) -> None:
        self._skip_counters = (jnp.asarray(total, jnp.int32), jnp.asarray(consecutive, jnp.int32))

    @property
    def skipped_steps(self) -> int:
        """The number of steps skipped for non-finite gradients (0 while skipping is off)."""
        return 0 if self._skip_counters is None else int(self._skip_counters[0])

    @property
    def consecutive_skipped_steps(self) -> int:
        """The number of steps skipped in a row, up to the latest one."""
        return 0 if self._skip_counters is None else int(self._skip_counters[1])

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        if self._skip_enabled:
            state.update(
                _skip_enabled=True, _skip_limit=self._skip_limit, _skip_counters=self._skip_counters
            )
        return state

    def _extra_state_dict(self) -> dict[str, Any]:
        if not self._skip_enabled:
            return {}
        return {
            "skip_non_finite": {
                "skipped_steps": self.skipped_steps,
                "consecutive_skipped_steps": self.consecutive_skipped_steps,
            }
        }

    def _check_loaded_state(self, state: dict[Any, Any]) -> None:
        """torch's checks (:meth:`Optimizer._check_loaded_state`), then each ``step``.

        Raises:
          KeyError: torch's, for a key its ``__setstate__`` reads.
          ValueError: for a ``step`` the int32 step counter cannot hold (see
            :func:`_check_step`).
        """
        super()._check_loaded_state(state)
        params = [p for group in self.param_groups for p in group["params"]]
        for index, p in enumerate(params):
            entry = state.get(p)
            if isinstance(entry, dict) and "step" in entry:
                _check_step(entry["step"], f"the loaded state of parameter {index}")

    def _load_extra_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self._skip_enabled:
            return
        saved = state_dict.get("skip_non_finite") or {}
        self._reset_skip_counters(
            int(saved.get("skipped_steps", 0)), int(saved.get("consecutive_skipped_steps", 0))
        )

    @staticmethod
    def _make_transform(options: dict[str, Any]) -> gradxform.GradientTransformation:
        raise NotImplementedError

    def _structure(self, group: dict[str, Any]) -> dict[str, Any]:
        """Static facts about float options that change the transformation's structure."""
        return {}

    def _grad_for_step(self, param: Parameter, group: dict[str, Any]) -> Any:
        """The gradient handed to the transformation (checked as torch checks it).

        By default a sparse (BCOO) gradient is refused with the class's torch message;
        optimizers that take sparse gradients densify it (same numbers) or keep it.
        """
        if isinstance(param.grad, sparse.BCOO):
            if self._sparse_grad_message:
                raise RuntimeError(self._sparse_grad_message)
            return param.grad.todense()
        return param.grad

    def _check_group_before(self, group: dict[str, Any]) -> None:
        """Checks torch makes on a group's options at the start of its step."""
        for name in self._unpacked_pairs:
            _first, _second = group[name]

    def _check_group_with_grads(self, group: dict[str, Any]) -> None:
        """Checks torch makes when a group has parameters with gradients, after checking
        them (none by default)."""

    def _export_step(self, step: jax.Array) -> Any:
        """torch keeps ``step`` as a float32 scalar tensor (converted inside the compiled
        step); SparseAdam overrides this to give a Python int."""
        return step

    def _hyper_arrays(self, group: dict[str, Any]) -> dict[str, Any]:
        dtype = _internal.hyper_dtype()

        def as_array(value):
            if value is None:
                return None
            if isinstance(value, (list, tuple)):
                return tuple(as_array(v) for v in value)
            # numpy scalars: no device dispatch per option (the compiled step takes them as is).
            return np.asarray(value, dtype=dtype).reshape(())

        return {name: as_array(group[name]) for name in self._hyperparams}

    def _static_options(self, group: dict[str, Any]) -> dict[str, Any]:
        """The group's options that are not traced: those named in ``defaults`` (the
        class's own options), minus the hyperparameters. Other entries (a scheduler's
        ``initial_lr``, a user's own keys) do not reach the transformation, so changing
        them never recompiles."""
        return {k: v for k, v in group.items() if k in self.defaults and k not in self._hyperparams}

    @classmethod
    def _scalar_keys(cls) -> tuple[str, ...]:
        """The per-parameter state keys holding one scalar that the core keeps once for
        all the leaves it steps (``step``, ASGD's ``eta`` and ``mu``, NAdam's
        ``mu_product``): parameters stepped together share these arrays (see :meth:`step`)."""
        return tuple(k for k in cls._state_keys if k in _SCALAR_STATE_NAMES)

    @classmethod
    def _expected_state(cls, inner: Any, count: int) -> list[dict[str, Any]]:
        """For each of the ``count`` parameters of a fresh transformation state ``inner``,
        the buffers its step needs, by state key, with their shapes (a parameter needing
        none, such as Adafactor's ``variance`` of a matrix, lacks the key)."""
        expected: list[dict[str, Any]] = [{} for _ in range(count)]
        for name, value, owner, _ in _named_fields(cls._per_parameter(inner, count)):
            if name in cls._state_keys and isinstance(value, list) and cls._holds_state(owner):
                for entry, leaf in zip(expected, value):
                    if leaf is not None:
                        entry.setdefault(name, leaf)
        return expected

    @classmethod
    def _check_stored(cls, expected: list[dict[str, Any]], stored: list[dict[str, Any]]) -> None:
        """Refuses broken per-parameter state as torch does, at trace time (before anything runs).

        ``expected`` holds, for each parameter, the buffers its step needs, with their
        shapes (:meth:`_expected_state`). A parameter whose stored state is empty starts
        afresh; any other must hold each of these keys (except
        :attr:`_recreated_state_keys`) with that shape. Parameters are checked in order,
        and each one's keys in :attr:`_state_keys`'s order.

        Raises:
          KeyError, RuntimeError, ...: from :meth:`_missing_state_error` and
            :meth:`_state_shape_error`.
        """
        for saved, needed in zip(stored, expected):
            if not saved:
                continue
            for key in cls._state_keys:
                if key not in needed:
                    continue
                if key not in saved:
                    if key in cls._recreated_state_keys:
                        continue
                    raise cls._missing_state_error(key)
                shape, wanted = tuple(jnp.shape(saved[key])), tuple(needed[key].shape)
                if shape != wanted and not (wanted == () and int(np.prod(shape)) == 1):
                    raise cls._state_shape_error(key, shape, wanted)

    @classmethod
    def _missing_state_error(cls, key: str) -> Exception:
        """torch's error for a non-empty per-parameter state without ``key``: ``KeyError(key)``."""
        return KeyError(key)

    @classmethod
    def _state_shape_error(cls, key: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> Exception:
        """torch's error for a state buffer of ``shape`` where ``expected`` is needed.

        A scalar (``step``, ASGD's ``eta``) must hold one element. A buffer is updated in
        place with the gradient (``exp_avg.lerp_(grad)``), then the parameter with the
        buffer: torch's ``RuntimeError`` says which of the two cannot take the broadcast
        shape, or which dimension does not broadcast.
        """
        if expected == ():
            return RuntimeError(f"a Tensor with {int(np.prod(shape))} elements cannot be converted to Scalar")
        return RuntimeError(_shape_mismatch_message(shape, expected))

    @classmethod
    def _holds_state(cls, owner: Any) -> bool:
        """Whether the NamedTuple ``owner`` is the one whose fields carry the state keys."""
        return cls._state_class is None or isinstance(owner, cls._state_class)

    @classmethod
    def _per_parameter(cls, inner: Any, count: int) -> Any:
        """A fresh transformation state with its shared scalar state (the core keeps one
        ``step``, ``eta``, ... for all the parameters) repeated once per parameter: the
        per-leaf form, which :meth:`_expected_state` reads per parameter."""

        def replace(owner, name, value):
            # "step" even where torch keeps none (SGD): it says whether a buffer is set.
            if (name == "step" or name in cls._state_keys) and cls._holds_state(owner) and isinstance(value, jax.Array):
                if value.shape == ():
                    return [value] * count
            return value

        return _replace_fields(inner, replace)

    @classmethod
    def _fill(cls, inner: Any, buffers: list[dict[str, Any]], scalars: dict[str, Any]) -> Any:
        """Puts the stored state of a step group (parameters that share their scalar
        state, see :meth:`_step_groups`) into ``inner``, a fresh transformation state for
        them in the core's shared form (checked first with :meth:`_check_stored`).

        ``buffers`` (one dict per parameter) go into the per-leaf fields, and the group's
        ``scalars`` into the shared scalar fields (``step`` as the core's int32). A class
        whose torch state keeps no step (SGD, Muon) gets step 1 where buffers are stored
        ("not the first step") and the fresh 0 elsewhere.
        """
        keys = cls._state_keys
        continuing = "step" not in keys and any(k in saved for saved in buffers for k in keys)

        def replace(owner, name, value):
            if not cls._holds_state(owner):
                return value
            if isinstance(value, list):
                out = list(value)
                for i, saved in enumerate(buffers):
                    if out[i] is not None and name in keys and saved.get(name) is not None:
                        out[i] = _shaped(saved[name], jnp.shape(out[i]))
                return out
            if (name == "step" or name in keys) and isinstance(value, jax.Array) and value.shape == ():
                if name in scalars:
                    saved = _shaped(scalars[name], ())
                    return saved.astype(jnp.int32) if name == "step" else saved
                if name == "step" and continuing:
                    return jnp.ones([], jnp.int32)
            return value

        return _replace_fields(inner, replace)

    @classmethod
    def _extract(cls, inner: Any, count: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The state of a step group after its update ``inner`` (the core's shared form,
        for ``count`` parameters): the buffers, one dict per parameter, and the group's
        scalars (:meth:`_scalar_keys`; ``step`` as torch's float32)."""
        fields = {}
        for name, value, owner, _ in _named_fields(inner):
            if cls._holds_state(owner):
                fields.setdefault(name, value)
        scalar_keys = cls._scalar_keys()
        buffers: list[dict[str, Any]] = [{} for _ in range(count)]
        scalars = {}
        for key in cls._state_keys:
            value = fields.get(key)
            if key in scalar_keys:
                if value is not None:
                    scalars[key] = value.astype(jnp.float32) if key == "step" else value
            elif isinstance(value, list):
                for entry, leaf in zip(buffers, value):
                    if leaf is not None:
                        entry[key] = leaf
        return buffers, scalars

    def _step_groups(self, stored: list[dict[str, Any]]) -> tuple[tuple[int, ...], list[dict[str, Any]]]:
        """Splits a param group's parameters into step groups: parameters whose scalar
        state (:meth:`_scalar_keys`) is held in the same arrays, which the compiled step
        updates with one call of the core (its scalar work done once per group).

        A step writes one new array per group into the state of all its parameters, so
        parameters stepped together share their arrays, and sharing one is a host fact
        (``id``), exact (an array never changes) and free. Parameters without state form
        one group (they start together). A parameter whose first gradient came later,
        a step a user assigned, or one loaded from a state dict with another value,
        holds its own arrays: its own group. Where torch keeps no step (SGD, Muon), the
        groups are the parameters with and without buffers.

        Args:
          stored: the state of each parameter (``None`` values left out).

        Returns:
          ``(partition, scalars)``: for each parameter the index of its group (numbered
          in order of first appearance; static, part of the compile key), and for each
          group its scalar state as JAX arrays (empty for parameters without state).
        """
        scalar_keys = self._scalar_keys()
        index: dict[Hashable, int] = {}
        partition, scalars = [], []
        for saved in stored:
            if not scalar_keys:
                group_key: Hashable = ("buffers", any(k in saved for k in self._state_keys))
            elif not saved:
                group_key = ("fresh",)
            else:
                group_key = tuple(id(saved[k]) if k in saved else None for k in scalar_keys)
            if group_key not in index:
                index[group_key] = len(scalars)
                scalars.append({k: _as_jax(saved[k]) for k in scalar_keys if k in saved})
            partition.append(index[group_key])
        return tuple(partition), scalars

    def _compiled_step(self, key: Hashable, statics: list[dict[str, Any]]) -> Callable:
        """The jit-compiled step for ``key``, from the class-wide cache (least recently used
        entries dropped past :attr:`_compile_cache_size`).

        The compiled function refers to the class and to ``statics`` (plain option
        values) only, never to the optimizer, so a cached entry keeps no optimizer, no
        Parameter and no array alive.
        """
        cache = GradxformOptimizer._compiled
        cache_key = (type(self), key)
        if cache_key not in cache:
            cache[cache_key] = self._compile(statics)
        cache.move_to_end(cache_key)
        while len(cache) > max(GradxformOptimizer._compile_cache_size, 1):
            cache.popitem(last=False)
        return cache[cache_key]

    @classmethod
    def _compile(cls, statics: list[dict[str, Any]]) -> Callable:
        """The jitted step of this class for the groups' static options ``statics`` (each
        with its ``"step_groups"`` partition, see :meth:`_step_groups`).

        The step takes, per param group, ``(params, buffers)`` (donated: one entry per
        parameter) and ``(grads, scalars, hyperparameters)`` (``scalars``: one dict per
        step group), and returns per param group the new parameters, the new buffers
        (one dict per parameter) and the new scalars (one dict per step group).
        """

        def run(donated, kept, control):
            if control is None:
                return compute(donated, kept), None
            skip, counters = _skip_decision(control, kept)
            shapes = jax.eval_shape(compute, donated, kept)
            results = jax.lax.cond(
                skip,
                lambda: _unchanged(donated, kept, shapes),
                lambda: compute(donated, kept),
            )
            return results, (skip, *counters)

        def compute(donated, kept):
            results = []
            for options, (params, buffers), (grads, scalars, hyper) in zip(statics, donated, kept):
                hyper = {k: 0.0 if k in options["zero_options"] else v for k, v in hyper.items()}
                tx = cls._make_transform({**options, **hyper})
                partition = options["step_groups"]
                members = [[i for i, g in enumerate(partition) if g == k] for k in range(len(scalars))]
                fresh = [tx.init([params[i] for i in idx]) for idx in members]
                expected: list[dict[str, Any]] = [{} for _ in params]
                for idx, state in zip(members, fresh):
                    for i, entry in zip(idx, cls._expected_state(state.inner_state, len(idx))):
                        expected[i] = entry
                cls._check_stored(expected, [{**b, **scalars[g]} for b, g in zip(buffers, partition)])
                new_params, new_buffers, new_scalars = list(params), list(buffers), []
                for idx, state, group_scalars in zip(members, fresh, scalars):
                    inner = cls._fill(state.inner_state, [buffers[i] for i in idx], group_scalars)
                    subset = [params[i] for i in idx]
                    updates, new_state = tx.update(
                        [grads[i] for i in idx], state._replace(inner_state=inner), subset
                    )
                    entries, group_new = cls._extract(new_state.inner_state, len(idx))
                    for i, value, entry in zip(idx, gradxform.apply_updates(subset, updates), entries):
                        new_params[i], new_buffers[i] = value, entry
                    new_scalars.append(group_new)
                results.append((new_params, new_buffers, new_scalars))
            return results

        # Parameters and buffers are donated: the step updates them in place, as torch does.
        # Scalar state is not: its arrays are shared by the parameters of a step group,
        # and a user (or a scheduler) may hold on to a parameter's ``step``.
        return jax.jit(run, donate_argnums=0)

    def step(self, closure: Callable[[], Any] | None = None):
        """Performs one optimization step over every group.

        Args:
          closure: optional; called first (it typically zeroes gradients, computes the
            loss and fills ``.grad``), and its return value is returned.
        """
        loss = None
        if closure is not None:
            loss = closure()
        # Every group and gradient is checked before anything changes (torch checks a
        # group just before updating it; any refusal here leaves everything as it was).
        self._skip_decision = None
        pending = []
        for group in self.param_groups:
            self._check_group_before(group)
            params = [p for p in group["params"] if p.grad is not None]
            pending.append([(p, self._grad_for_step(p, group)) for p in params])
            if params:
                self._check_group_with_grads(group)
        for p, _ in itertools.chain.from_iterable(pending):
            step = self.state[p].get("step") if p in self.state else None
            # A device step is never read back (no host synchronization).
            if step is not None and not isinstance(step, jax.Array) and not _is_valid_step(step):
                params = [q for group in self.param_groups for q in group["params"]]
                _check_step(step, f"the state of parameter {params.index(p)}")
        # A parameter listed twice in a group (torch warns, and updates it once per
        # listing): later listings run in later passes, each one compiled call.
        stateless = {id(p) for group in pending for p, _ in group if not self.state.get(p)}
        first_pass = True
        while any(pending):
            this_pass, later = [], []
            for entries in pending:
                seen: set[int] = set()
                first = [e for e in entries if id(e[0]) not in seen and not seen.add(id(e[0]))]
                rest = list(entries)
                for e in first:
                    rest.remove(e)
                this_pass.append(first)
                later.append(rest)
            self._apply(this_pass, set() if first_pass or not self._repeats_see_initial_state else stateless)
            pending, first_pass = later, False
        return loss

    def _apply(self, entries_by_group: list[list[tuple[Parameter, Any]]], fresh: set[int]) -> None:
        """One compiled call over the groups' (parameter, gradient) pairs; writes back.

        Parameters whose id is in ``fresh`` start from no state (see
        ``_repeats_see_initial_state``). Each param group's parameters are split into
        step groups (:meth:`_step_groups`); the parameters of one get the same new
        scalar arrays (``step``, ...) in their state.
        """
        scalar_keys = self._scalar_keys()
        work, key, donated, kept = [], [], [], []
        for group, entries in zip(self.param_groups, entries_by_group):
            if not entries:
                continue
            params = [p for p, _ in entries]
            grads = [g for _, g in entries]
            stored = [
                {} if id(p) in fresh else {k: v for k, v in self.state.get(p, {}).items() if v is not None}
                for p in params
            ]
            partition, scalars = self._step_groups(stored)
            statics = {**self._static_options(group), **self._structure(group)}
            statics["zero_options"] = tuple(
                k for k in self._zero_options if k in group and _to_float(group[k]) == 0
            )
            statics["step_groups"] = partition
            work.append((params, partition, statics))
            key.append((_freeze(statics), tuple(tuple(s) for s in stored)))
            buffers = [{k: _as_jax(v) for k, v in s.items() if k not in scalar_keys} for s in stored]
            donated.append(([p.data for p in params], buffers))
            kept.append((grads, scalars, self._hyper_arrays(group)))
        if not work:
            return
        control = None
        if self._skip_enabled or self._forced_skip is not None:
            if self._skip_enabled:
                total, consecutive = self._skip_counters
                limit = None if self._skip_limit is None else np.asarray(self._skip_limit, np.int32)
            else:
                total = consecutive = np.zeros((), np.int32)
                limit = None
            # A GradScaler's decision replaces the step's own check (and, as a made
            # decision, leaves the skip counters alone: torch runs no step at all).
            decision = self._skip_decision if self._skip_decision is not None else self._forced_skip
            control = (total, consecutive, limit, decision)
        compiled = self._compiled_step(tuple(key), [statics for _, _, statics in work])
        results, control_out = compiled(donated, kept, control)
        skipped_fresh = False
        if control_out is not None:
            skip, total, consecutive = control_out
            self._skip_decision = skip  # later passes (repeated parameters) follow this one
            if self._skip_enabled:
                self._skip_counters = (total, consecutive)
            if any(not s for s in itertools.chain.from_iterable(k[1] for k in key)):
                # A parameter without state: whether to create it needs the decision.
                skipped_fresh = bool(skip)
        for (params, partition, _), (new_params, new_buffers, new_scalars), stored in zip(
            work, results, (k[1] for k in key)
        ):
            # One array per step group, written into the state of each of its parameters.
            exported = [{k: self._export_step(v) if k == "step" else v for k, v in s.items()} for s in new_scalars]
            for p, value, buffers, index, had_state in zip(params, new_params, new_buffers, partition, stored):
                p._data = value  # the step's own output: no copy needed
                entry = {**buffers, **exported[index]}
                if not entry or (skipped_fresh and not had_state):
                    continue  # torch keeps no state for this parameter (SGD without momentum)
                state = self.state[p]
                for k in self._state_keys:  # jit returns dicts sorted; keep torch's key order
                    if k in entry:
                        state[k] = entry[k]

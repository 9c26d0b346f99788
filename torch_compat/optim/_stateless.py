"""``swap_in_optimizer_params_and_state``: torch 2.13's context manager, on Parameters.

torch uses it to run ``optimizer.step()`` on other parameters and state (fake tensors,
to trace a step). Here it runs a step on other :class:`~torch_compat.Parameter` objects and
another state dict: inside the context the optimizer's groups hold the swap-in
Parameters and the swap-in group options, and its ``state`` is the swap-in state; on exit
the live groups and state are restored.

JAX arrays are immutable, so torch's "in-place edits propagate back to
``swapin_optim_state``" becomes: on exit, every entry that the swap-in per-parameter
dicts held is given its value after the context (written into a numpy array in place, or
replacing a JAX array); entries the step added are not copied back, as in torch. The
swap-in Parameters' ``.data`` is updated by the step, as a tensor would be.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Any

import jax
import numpy as np

from torch_compat._parameter import Parameter

_NAME = "swap_in_optimizer_params_and_state"


def _check_state(state: Any) -> dict:
    if not isinstance(state, dict):
        raise RuntimeError(
            f"{_NAME} requires swapin_optim_state['state'] to be a dict mapping packed parameter ids to "
            f"per-param state dicts, got {type(state).__name__}."
        )
    if any(isinstance(k, (Parameter, jax.Array, np.ndarray)) for k in state):
        raise RuntimeError(f"{_NAME} requires optimizer.state_dict()-style state keyed by packed parameter ids.")
    if any(isinstance(k, int) and not isinstance(v, dict) for k, v in state.items()):
        raise RuntimeError(f"{_NAME} requires per-parameter optimizer state entries to be dictionaries.")
    return state


def _check_groups(optimizer, groups: Any) -> list:
    if not isinstance(groups, list):
        raise RuntimeError(
            f"{_NAME} requires swapin_optim_state['param_groups'] to be a list of param-group dicts, "
            f"got {type(groups).__name__}."
        )
    if len(optimizer.param_groups) != len(groups):
        raise RuntimeError("swapin_optim_state has a different number of parameter groups than the live optimizer.")
    return groups


def _check_group(index: int, group: dict, swapin_group: Any) -> list:
    if not isinstance(swapin_group, dict):
        raise RuntimeError(f"{_NAME} requires each optimizer param group to be a dictionary.")
    ids = swapin_group.get("params")
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise RuntimeError(
            f"{_NAME} requires optimizer.state_dict()-style param_groups[*]['params'] entries keyed by packed "
            "parameter ids."
        )
    if len(group["params"]) != len(ids):
        raise RuntimeError(
            f"swapin_optim_state param group {index} has a different number of params than the live optimizer "
            "param group."
        )
    swapin_only = [k for k in swapin_group if k not in group]
    live_only = [k for k in group if k not in swapin_group]
    if swapin_only or live_only:
        raise RuntimeError(
            f"{_NAME} requires optimizer.state_dict()-style param group keys to exactly match the live optimizer "
            f"group keys for group {index}. Keys only in swap-in: {swapin_only}. Keys only in live: {live_only}."
        )
    return ids


@contextlib.contextmanager
def swap_in_optimizer_params_and_state(optimizer, swapin_parameters: dict, swapin_optim_state: dict):
    """Temporarily runs ``optimizer`` on other Parameters and state (torch's context manager).

    Args:
      optimizer: a torch_compat optimizer whose state is initialized (it has stepped).
      swapin_parameters: ``{name: Parameter}``, in the order of the optimizer's parameters
        (``named_parameters`` order).
      swapin_optim_state: an ``optimizer.state_dict()``-shaped dict (``"state"`` keyed by
        packed ids, ``"param_groups"`` with the live groups' keys).

    Raises:
      RuntimeError: torch's messages, for an optimizer without state or a swap-in state
        dict that does not match the live groups.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat.optim import SGD, swap_in_optimizer_params_and_state
      >>> live = torch_compat.Parameter(jnp.zeros(1))
      >>> opt = SGD([live], lr=1.0, momentum=0.5)
      >>> live.grad = jnp.ones(1); opt.step()
      >>> other = torch_compat.Parameter(jnp.array([10.0]))
      >>> other.grad = jnp.ones(1)
      >>> saved = opt.state_dict()
      >>> with swap_in_optimizer_params_and_state(opt, {"w": other}, saved):
      ...     opt.step()
      >>> other.data.tolist(), saved["state"][0]["momentum_buffer"].tolist(), live.data.tolist()
      ([8.5], [1.5], [-1.0])
    """
    if not optimizer.state:
        raise RuntimeError(f"{_NAME} requires initialized optimizer state.")
    if not isinstance(swapin_optim_state, dict):
        raise RuntimeError(f"{_NAME} requires a DCP-style optimizer state_dict.")
    state = _check_state(swapin_optim_state.get("state"))
    swapin_groups = _check_groups(optimizer, swapin_optim_state.get("param_groups"))
    flat = list(swapin_parameters.values())
    offset = 0
    seen: set[int] = set()
    plan = []
    for index, (group, swapin_group) in enumerate(zip(optimizer.param_groups, swapin_groups, strict=True)):
        ids = _check_group(index, group, swapin_group)
        seen.update(ids)
        if offset + len(ids) > len(flat):
            raise RuntimeError(
                f"{_NAME} requires the explicit parameter state to match optimizer.param_groups ordering."
            )
        plan.append((group, swapin_group, flat[offset : offset + len(ids)], ids))
        offset += len(ids)
    extra = [k for k in state if k not in seen]
    if extra:
        raise RuntimeError(
            f"{_NAME} requires swapin_optim_state['state'] to be keyed only by packed parameter ids from "
            f"param_groups[*]['params']; got extra keys {extra!r}."
        )

    original_state = optimizer.state
    snapshots = [dict(g) for g in optimizer.param_groups]
    swapped: defaultdict[Parameter, dict] = defaultdict(dict)
    links = []  # (the user's per-parameter dict, the swap-in Parameter)
    try:
        for group, swapin_group, params, ids in plan:
            group["params"] = params
            for key, value in swapin_group.items():
                if key != "params":
                    group[key] = value
            for param, pid in zip(params, ids, strict=True):
                given = state.get(pid, {})
                swapped[param] = {k: optimizer._load_value(param, k, v) for k, v in given.items()}
                links.append((given, param))
        optimizer.state = swapped
        yield
    finally:
        for given, param in links:
            now = swapped.get(param, {})
            for key in list(given):
                if key in now:
                    if isinstance(given[key], np.ndarray) and given[key].flags.writeable:
                        given[key][...] = np.asarray(now[key]).reshape(given[key].shape)
                    else:
                        given[key] = now[key]
        for group, snapshot in zip(optimizer.param_groups, snapshots, strict=True):
            group.clear()
            group.update(snapshot)
        optimizer.state = original_state

"""The public type aliases of ``torch.optim.optimizer`` (torch 2.13), for JAX arrays.

They are re-exported by :mod:`torch_compat.optim.optimizer` under torch's names, so that
annotations written against torch (``params: ParamsT``) keep working; a tensor is a
:class:`~torch_compat.Parameter` or a ``jax.Array`` here.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, TypeVar, Union

import jax

from torch_compat._parameter import Parameter

Args = tuple[Any, ...]
Kwargs = dict[str, Any]
StateDict = dict[str, Any]
DeviceDict = dict[Optional[jax.Device], jax.Array]
DeviceDtypeDict = dict[Optional[tuple[jax.Device, Any]], jax.Array]
GlobalOptimizerPreHook = Callable[[Any, Args, Kwargs], Optional[tuple[Args, Kwargs]]]
GlobalOptimizerPostHook = Callable[[Any, Args, Kwargs], None]
ParamsT = Union[Iterable[Parameter], Iterable[dict[str, Any]], Iterable[tuple[str, Parameter]]]
Indices = list[int]
TensorListList = list[list[Optional[jax.Array]]]
R = TypeVar("R")
T = TypeVar("T")

r"""``torch_compat.optim.swa_utils``: torch 2.13's stochastic weight averaging, on Parameters.

* :class:`AveragedModel` keeps a running average (SWA by default, EMA with
  :func:`get_ema_multi_avg_fn`) of a *tree of Parameters* (what
  :func:`torch_compat.as_parameters` returns) in ``.module``, a tree of the same shape;
* :class:`SWALR` anneals every group's learning rate to ``swa_lr``, as torch's;
* :func:`get_ema_multi_avg_fn`, :func:`get_swa_multi_avg_fn`, :func:`get_ema_avg_fn`,
  :func:`get_swa_avg_fn` build the averaging functions;
* :func:`update_bn` recomputes the BatchNorm statistics of a flax nnx model, as torch's
  does for a module (a tree of Parameters has no BatchNorm layers: refused, saying so).

The arithmetic is written once, in gradxform's averaging module
(:func:`gradxform.ema_update`, :func:`gradxform.swa_update` are the functional face of the
same averages); the numbers are torch's CPU ones (``AveragedModel`` with no ``avg_fn`` runs
``get_swa_avg_fn()`` on the CPU).

Differences from torch, each forced by JAX arrays being immutable:

* an averaging function *returns* the new values instead of writing them in place:
  ``avg_fn(averaged, current, num_averaged) -> array`` and
  ``multi_avg_fn(averaged_list, current_list, num_averaged) -> list of arrays``;
* buffers are the leaves of the tree that are arrays but not Parameters (a batch norm's
  running statistics kept beside the Parameters); each update puts new arrays there, so
  ``.module`` is a new tree after an update (its Parameters are the same objects);
* an ``AveragedModel`` is not callable: it holds values, not a function (see
  :meth:`AveragedModel.forward`).

Example:
  >>> import jax.numpy as jnp, torch_compat
  >>> from torch_compat.optim import SGD, swa_utils
  >>> model = torch_compat.as_parameters({"w": jnp.array([1.0, 2.0])})
  >>> opt = SGD(torch_compat.parameters(model), lr=0.5)
  >>> swa_model = swa_utils.AveragedModel(model)
  >>> for _ in range(3):
  ...     opt.zero_grad()
  ...     _ = torch_compat.backward(lambda p: jnp.sum(p["w"]), model)
  ...     opt.step()
  ...     swa_model.update_parameters(model)
  >>> swa_model.module["w"].data.tolist(), int(swa_model.n_averaged)
  ([0.0, 1.0], 3)
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _internal
from torch_compat._parameter import Parameter
from torch_compat._tree import _is_parameter, _name
from torch_compat.optim.lr_scheduler import _GET_LR_WARNING, LRScheduler, _per_group
from torch_compat.optim.optimizer import Optimizer

__all__ = [
    "AveragedModel",
    "update_bn",
    "SWALR",
    "get_ema_multi_avg_fn",
    "get_swa_multi_avg_fn",
    "get_ema_avg_fn",
    "get_swa_avg_fn",
]

# torch's type of the lists a multi_avg_fn receives (of arrays here).
PARAM_LIST = tuple[jax.Array, ...] | list[jax.Array]


# -- averaging functions -------------------------------------------------------------------


def get_ema_multi_avg_fn(decay=0.999) -> Callable:
    r"""The EMA over a list of arrays: ``lerp(ema, param, 1 - decay)``, as torch's.

    .. math::
       W^{\text{EMA}}_{t+1} = \text{decay}\, W^{\text{EMA}}_t + (1 - \text{decay})\, W_{t+1}

    Args:
      decay: in ``[0, 1]``.

    Returns:
      ``fn(ema_list, current_list, num_averaged) -> list`` of the new averages (torch's
      writes them in place; JAX arrays are immutable). Integer arrays take
      ``ema * decay + param * (1 - decay)`` in float32, truncated, as torch's.

    Raises:
      ValueError: torch's, for a ``decay`` outside ``[0, 1]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from torch_compat.optim.swa_utils import get_ema_multi_avg_fn
      >>> get_ema_multi_avg_fn(0.75)([jnp.array([0.0])], [jnp.array([4.0])], 1)[0].tolist()
      [1.0]
    """
    _internal.check_average_decay(decay)
    one_minus = 1 - decay

    @jax.jit
    def ema_update(ema_param_list, current_param_list, _=None):
        return [_internal.ema_leaf(a, p, decay, one_minus, True) for a, p in zip(ema_param_list, current_param_list)]

    return ema_update


def get_swa_multi_avg_fn() -> Callable:
    r"""The equal average over a list of arrays: ``lerp(avg, param, 1 / (n + 1))``, as torch's
    (what torch's ``AveragedModel`` runs by default on CUDA).

    Returns:
      ``fn(averaged_list, current_list, num_averaged) -> list`` of the new averages; the
      weight is rounded to float32, as torch's. Integer arrays are refused (torch's
      ``addcdiv`` fails on them).

    Example:
      >>> import jax.numpy as jnp
      >>> from torch_compat.optim.swa_utils import get_swa_multi_avg_fn
      >>> get_swa_multi_avg_fn()([jnp.array([1.0])], [jnp.array([4.0])], 2)[0].tolist()
      [2.0]
    """

    def swa_update(averaged_param_list, current_param_list, num_averaged):
        for a in averaged_param_list:
            if not jnp.issubdtype(jnp.result_type(a), jnp.inexact):
                raise RuntimeError(
                    f"get_swa_multi_avg_fn: integer arrays ({jnp.result_type(a)}) cannot be averaged by "
                    "torch's addcdiv; average them with get_swa_avg_fn() or keep use_buffers=False"
                )
        return _swa_multi(list(averaged_param_list), list(current_param_list), jnp.asarray(num_averaged))

    return swa_update


@jax.jit
def _swa_multi(averaged, current, count):
    return [_internal.swa_leaf(a, p, count, True) for a, p in zip(averaged, current)]


def get_ema_avg_fn(decay=0.999) -> Callable:
    r"""The EMA of one array: ``decay * ema + (1 - decay) * param``, as torch's.

    Args:
      decay: in ``[0, 1]``.

    Returns:
      ``fn(ema, current, num_averaged) -> array``.

    Raises:
      ValueError: torch's, for a ``decay`` outside ``[0, 1]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from torch_compat.optim.swa_utils import get_ema_avg_fn
      >>> get_ema_avg_fn(0.5)(jnp.array([0.0]), jnp.array([4.0]), 1).tolist()
      [2.0]
    """
    _internal.check_average_decay(decay)
    one_minus = 1 - decay

    # Not jitted: XLA's CPU backend fuses the two products and the sum into one
    # multiply-add (one rounding); run op by op, the arithmetic is torch's to the bit.
    def ema_update(ema_param, current_param, num_averaged=None):
        return _internal.ema_leaf(ema_param, current_param, decay, one_minus, False)

    return ema_update


def get_swa_avg_fn() -> Callable:
    r"""The equal average of one array: ``avg + (param - avg) / (n + 1)``, as torch's (what
    torch's ``AveragedModel`` runs by default on the CPU, and this one always).

    Returns:
      ``fn(averaged, current, num_averaged) -> array``.

    Example:
      >>> import jax.numpy as jnp
      >>> from torch_compat.optim.swa_utils import get_swa_avg_fn
      >>> get_swa_avg_fn()(jnp.array([1.0]), jnp.array([4.0]), 2).tolist()
      [2.0]
    """
    return _swa_one


@jax.jit
def _swa_one(averaged_param, current_param, num_averaged):
    return _internal.swa_leaf(averaged_param, current_param, jnp.asarray(num_averaged), False)


# -- AveragedModel -------------------------------------------------------------------------


def _is_array(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray))


def _leaves(tree) -> list:
    return jax.tree.leaves(tree, is_leaf=_is_parameter)


def _place(value, device):
    return value if device is None else jax.device_put(value, device)


def _as_device(device):
    """A ``jax.Device`` for torch's ``device`` argument (``None``, an index, a platform
    name such as ``"cpu"`` or ``"cuda:0"``, or a ``jax.Device``)."""
    if device is None or isinstance(device, jax.Device):
        return device
    if isinstance(device, int):
        return jax.devices()[device]
    if isinstance(device, str):
        platform, _, index = device.partition(":")
        platform = {"cuda": "gpu"}.get(platform, platform)
        return jax.devices(platform)[int(index or 0)]
    raise TypeError(f"device must be None, an int, a str or a jax.Device, got {type(device).__name__}")


class AveragedModel:
    """A running average of a tree of Parameters: torch's ``AveragedModel`` (SWA or EMA).

    ``AveragedModel(model)`` copies ``model`` (a pytree whose leaves are Parameters, see
    :class:`~torch_compat.Parameter`, and possibly arrays: the buffers) into
    ``.module``. Each :meth:`update_parameters` then folds the model's current values into
    the average: the first call copies them, later ones apply ``avg_fn`` (one array at a
    time), ``multi_avg_fn`` (one list per dtype, as torch groups them) or, by default, the
    equal running average (torch's ``get_swa_avg_fn()``, its CPU default). ``n_averaged``
    counts the calls. With ``use_buffers=True`` buffers are averaged too; otherwise they
    are copied from the model at each update, as in torch.

    Args:
      model: the tree of Parameters (from :func:`torch_compat.as_parameters`); array
        leaves that are not Parameters are its buffers.
      device: where ``.module`` lives: ``None`` (where the model is), a ``jax.Device``, a
        device index or a platform name (``"cpu"``, ``"cuda:0"``).
      avg_fn: ``(averaged, current, num_averaged) -> array`` (see :func:`get_ema_avg_fn`).
      multi_avg_fn: ``(averaged_list, current_list, num_averaged) -> list`` (see
        :func:`get_ema_multi_avg_fn`); it returns the new arrays, where torch's writes
        them in place.
      use_buffers: average the buffers too.

    Attributes:
      module: the averaged tree of Parameters (and buffers).
      n_averaged: a jax int32 scalar: the number of updates so far (saved as torch's
        int64 in :meth:`state_dict`).

    Raises:
      AssertionError: torch's, when both ``avg_fn`` and ``multi_avg_fn`` are given.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat.optim import swa_utils
      >>> model = torch_compat.as_parameters({"w": jnp.array([0.0])})
      >>> ema = swa_utils.AveragedModel(model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.5))
      >>> for value in (2.0, 4.0, 8.0):
      ...     model["w"].data = jnp.array([value])
      ...     ema.update_parameters(model)
      >>> ema.module["w"].data.tolist()
      [5.5]
    """

    def __init__(
        self,
        model: Any,
        device=None,
        avg_fn: Callable | None = None,
        multi_avg_fn: Callable | None = None,
        use_buffers: bool = False,
    ) -> None:
        if avg_fn is not None and multi_avg_fn is not None:
            raise AssertionError("Only one of avg_fn and multi_avg_fn should be provided")
        device = _as_device(device)
        self.module = self._copy(model, device)
        self.n_averaged = _place(jnp.zeros([], jnp.int32), device)
        self.avg_fn = avg_fn
        self.multi_avg_fn = multi_avg_fn
        self.use_buffers = use_buffers

    @staticmethod
    def _copy(model, device):
        def copy(leaf):
            if _is_parameter(leaf):
                return Parameter(_place(leaf.data, device), requires_grad=leaf.requires_grad)
            if _is_array(leaf):
                return _place(jnp.array(leaf, copy=True), device)
            return leaf

        return jax.tree.map(copy, model, is_leaf=_is_parameter)

    # -- torch's Module face ------------------------------------------------------------------

    def forward(self, *args, **kwargs):
        """Refused: ``.module`` holds values, not a function.

        Call your model's function on the averaged values instead, for example
        ``apply_fn(torch_compat.values(swa_model.module), x)``.

        Raises:
          TypeError: always, saying so.
        """
        raise TypeError(
            "AveragedModel holds a tree of Parameters, not a module, so it cannot be called: "
            "call your model function on the averaged values instead, for example "
            "apply_fn(torch_compat.values(swa_model.module), x)"
        )

    __call__ = forward

    def parameters(self) -> list[Parameter]:
        """The averaged Parameters, in tree order (torch's ``swa_model.parameters()``)."""
        return [p for p in _leaves(self.module) if _is_parameter(p)]

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        """``("module.<path>", Parameter)`` pairs, as torch names them."""
        return [(name, leaf) for name, leaf in self._named_leaves() if _is_parameter(leaf)]

    def _named_leaves(self) -> list[tuple[str, Any]]:
        flat = jax.tree_util.tree_flatten_with_path(self.module, is_leaf=_is_parameter)[0]
        return [(".".join(filter(None, ["module", _name(path)])), leaf) for path, leaf in flat]

    # -- averaging ------------------------------------------------------------------------------

    def update_parameters(self, model: Any) -> None:
        """Folds ``model``'s current values into the average (torch's ``update_parameters``).

        Args:
          model: a tree of Parameters with ``.module``'s structure (the model given to
            the constructor, trained since), or the same tree of arrays (from a
            functional loop: ``torch_compat.values(model)`` or new parameters).

        Raises:
          ValueError: when ``model``'s tree differs from ``.module``'s.
        """
        own_tree = jax.tree.structure(self.module, is_leaf=_is_parameter)
        new_tree = jax.tree.structure(model, is_leaf=_is_parameter)
        if own_tree != new_tree:
            raise ValueError(
                f"update_parameters: the model's tree {new_tree} differs from the averaged one {own_tree}"
            )
        own, new = _leaves(self.module), _leaves(model)
        averaged = [
            i for i, leaf in enumerate(own) if _is_parameter(leaf) or (self.use_buffers and _is_array(leaf))
        ]
        values = [leaf.data if _is_parameter(leaf) else leaf for leaf in own]
        device = self._device()

        def current(i):
            leaf = new[i]
            return _place(leaf.data if _is_parameter(leaf) else jnp.asarray(leaf), device)

        if int(self.n_averaged) == 0:
            for i in averaged:
                values[i] = jnp.asarray(current(i)).astype(jnp.result_type(values[i]))
        else:
            results = self._average([values[i] for i in averaged], [current(i) for i in averaged])
            for i, result in zip(averaged, results):
                values[i] = jnp.asarray(result).astype(jnp.result_type(values[i]))  # torch's copy_
        if not self.use_buffers:
            for i, leaf in enumerate(own):
                if _is_array(leaf):
                    values[i] = jnp.asarray(current(i)).astype(jnp.result_type(leaf))
        self._write(values)
        self.n_averaged = self.n_averaged + 1

    def _device(self):
        for leaf in _leaves(self.module):
            array = leaf.data if _is_parameter(leaf) else leaf
            if isinstance(array, jax.Array):
                return next(iter(array.devices()))
        return None

    def _average(self, averaged: list, current: list) -> list:
        n = self.n_averaged
        if self.multi_avg_fn is None and self.avg_fn is not None:
            return [self.avg_fn(a, p, n) for a, p in zip(averaged, current)]
        multi = self.multi_avg_fn
        if multi is None:  # torch's CPU default: get_swa_avg_fn() one array at a time
            one = get_swa_avg_fn()
            return [one(a, p, n) for a, p in zip(averaged, current)]
        groups: dict[Any, list[int]] = {}  # torch calls multi_avg_fn once per (device, dtype)
        for i, a in enumerate(averaged):
            groups.setdefault(jnp.result_type(a), []).append(i)
        results: list = [None] * len(averaged)
        for indices in groups.values():
            out = multi([averaged[i] for i in indices], [current[i] for i in indices], n)
            for i, value in zip(indices, out):
                results[i] = value
        return results

    def _write(self, values: list) -> None:
        """Puts ``values`` (one per leaf) into ``.module``: into each Parameter's ``.data``,
        and as the new buffers (a new tree, the same Parameters)."""
        leaves = _leaves(self.module)
        for leaf, value in zip(leaves, values):
            if _is_parameter(leaf):
                leaf.data = value
        treedef = jax.tree.structure(self.module, is_leaf=_is_parameter)
        new_leaves = [value if _is_array(leaf) else leaf for leaf, value in zip(leaves, values)]
        self.module = jax.tree.unflatten(treedef, new_leaves)

    # -- saving ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """torch's module state dict: ``n_averaged`` (a numpy int64 scalar, torch's long),
        then ``"module.<path>"`` for every Parameter and buffer (arrays).

        The path is the leaf's name in :func:`torch_compat.named_parameters` (``"0.weight"``
        for ``{"0": {"weight": ...}}``), so a tree named as torch's module loads torch's
        state dict (tensors turned into numpy arrays) and the reverse.
        """
        out: dict[str, Any] = {"n_averaged": np.asarray(self.n_averaged, dtype=np.int64)}
        for name, leaf in self._named_leaves():
            if _is_parameter(leaf):
                out[name] = leaf.data
            elif _is_array(leaf):
                out[name] = leaf
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads a state dict of :meth:`state_dict`'s layout (ours or torch's, as arrays).

        Raises:
          RuntimeError: torch's first line, for missing or unexpected keys, or a shape that
            differs (nothing is loaded then).
        """
        named = self._named_leaves()
        expected = ["n_averaged"] + [name for name, leaf in named if _is_parameter(leaf) or _is_array(leaf)]
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in state_dict if k not in expected]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ". ")
            if unexpected:
                parts.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ". ")
            raise RuntimeError("Error(s) in loading state_dict for AveragedModel:\n\t" + "\n\t".join(parts))
        device = self._device()
        values = []
        for name, leaf in named:
            if not (_is_parameter(leaf) or _is_array(leaf)):
                values.append(leaf)
                continue
            own = leaf.data if _is_parameter(leaf) else leaf
            given = np.asarray(state_dict[name])
            if given.shape != tuple(own.shape):
                raise RuntimeError(
                    "Error(s) in loading state_dict for AveragedModel:\n\t"
                    f"size mismatch for {name}: copying a param with shape {tuple(given.shape)} from checkpoint, "
                    f"the shape in current model is {tuple(own.shape)}."
                )
            values.append(_place(jnp.asarray(given).astype(jnp.result_type(own)), device))
        self._write(values)
        self.n_averaged = _place(jnp.asarray(int(np.asarray(state_dict["n_averaged"])), jnp.int32), device)


def _nnx():
    """flax's ``nnx`` module, or None where flax is not installed."""
    try:
        from flax import nnx
    except ImportError:
        return None
    return nnx


_NO_BATCH_NORM_MODULES = (
    "torch_compat.optim.swa_utils.update_bn needs a model whose BatchNorm layers own their running "
    "statistics and update them in train mode: a flax nnx Module (nnx.BatchNorm). A tree of Parameters, "
    "or any other model, has no such layers here: recompute the statistics with your model code over the "
    "loader, averaging the per-batch statistics with gradxform.swa_update (torch's momentum=None average)."
)


def update_bn(loader, model, device=None) -> None:
    """Recomputes the running statistics of every ``nnx.BatchNorm`` of a flax nnx model over
    ``loader``: torch's ``update_bn``.

    As torch's: every BatchNorm's running mean and variance are reset (0 and 1), the model
    runs once over the loader in train mode (``use_running_average=False`` and, as
    torch's ``model.train()`` does for dropout, ``deterministic=False`` on every submodule
    that has them), each BatchNorm keeping the *equal average* of the batch statistics
    (torch's ``momentum=None``: here its ``momentum`` is set to ``1 - 1/n`` before the
    ``n``-th batch, flax's momentum being the weight of the old value); then the momenta
    and modes are restored. A batch is an array or a list/tuple whose first element is
    the input. The averaged statistics are flax's own: flax keeps the *biased* batch
    variance where torch keeps the unbiased one (times ``m/(m-1)`` for a batch of ``m``);
    each is what its framework's BatchNorm uses in eval mode.

    To use it after :class:`AveragedModel`, put the averaged values into the nnx model
    (``nnx.update``) and call ``update_bn(loader, nnx_model)``.

    Args:
      loader: an iterable of batches.
      model: a flax ``nnx.Module``; a model without BatchNorm is left as it is (torch's
        early return).
      device: where to put each input first (``None``, a ``jax.Device``, an index or a
        platform name).

    Raises:
      NotImplementedError: for any other model (a tree of Parameters has no BatchNorm
        layers), saying what to do instead.
    """
    nnx = _nnx()
    if nnx is None or not isinstance(model, nnx.Module):
        raise NotImplementedError(_NO_BATCH_NORM_MODULES)
    walk = getattr(nnx, "iter_modules", None)  # flax >= 0.12; before it, the method
    modules = [module for _, module in (walk(model) if walk is not None else model.iter_modules())]
    norms = [module for module in modules if isinstance(module, nnx.BatchNorm)]
    if not norms:
        return
    modes = [
        (module, name, getattr(module, name))
        for module in modules
        for name in ("use_running_average", "deterministic")
        if hasattr(module, name)
    ]
    momenta = [(norm, norm.momentum) for norm in norms]
    for norm in norms:  # torch's reset_running_stats
        norm.mean[...] = jnp.zeros_like(norm.mean[...])
        norm.var[...] = jnp.ones_like(norm.var[...])
    place = _as_device(device)
    try:
        for module, name, _ in modes:
            setattr(module, name, False)  # train mode
        for count, batch in enumerate(loader, start=1):
            if isinstance(batch, (list, tuple)):
                batch = batch[0]
            if place is not None:
                batch = jax.device_put(batch, place)
            for norm in norms:
                norm.momentum = 1 - 1 / count
            model(batch)
    finally:
        for norm, momentum in momenta:
            norm.momentum = momentum
        for module, name, value in modes:
            setattr(module, name, value)


# -- SWALR ----------------------------------------------------------------------------------


class SWALR(LRScheduler):
    r"""Anneals each group's learning rate to ``swa_lr``, then holds it: torch's ``SWALR``.

    Over ``anneal_epochs`` steps the learning rate moves from the group's value to
    ``swa_lr`` along a cosine (``"cos"``: :math:`\alpha_t = (1 - \cos(\pi t)) / 2`) or a
    line (``"linear"``: :math:`\alpha_t = t`), ``t = epoch / anneal_epochs``; like torch's,
    it is chainable (it starts from the current ``lr``). ``swa_lr`` is stored in each group
    as ``group["swa_lr"]``.

    Args:
      optimizer: a torch_compat optimizer.
      swa_lr: the final learning rate, for every group or one per group.
      anneal_epochs: the number of annealing epochs (an ``int``, 0 or more).
      anneal_strategy: ``"cos"`` or ``"linear"``.
      last_epoch: the index of the last epoch; ``-1`` to start.

    Raises:
      ValueError: torch's, for a bad ``anneal_strategy`` or ``anneal_epochs``, or a list of
        ``swa_lr`` that is not one per group.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat.optim import SGD, swa_utils
      >>> opt = SGD([torch_compat.Parameter(jnp.zeros(1))], lr=1.0)
      >>> sched = swa_utils.SWALR(opt, swa_lr=0.5, anneal_epochs=2, anneal_strategy="linear")
      >>> lrs = []
      >>> for _ in range(4):
      ...     opt.step()
      ...     sched.step()
      ...     lrs.append(opt.param_groups[0]["lr"])
      >>> lrs
      [0.75, 0.5, 0.5, 0.5]
    """

    def __init__(
        self, optimizer: Optimizer, swa_lr: float, anneal_epochs=10, anneal_strategy: str = "cos", last_epoch=-1
    ) -> None:
        swa_lrs = _per_group("swa_lr", optimizer, swa_lr)
        for value, group in zip(swa_lrs, optimizer.param_groups, strict=True):
            group["swa_lr"] = value
        if anneal_strategy not in ["cos", "linear"]:
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
        self._set_anneal_func(anneal_strategy)
        if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
            raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
        self.anneal_epochs = anneal_epochs
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _linear_anneal(t):
        return t

    @staticmethod
    def _cosine_anneal(t):
        return (1 - math.cos(math.pi * t)) / 2

    @staticmethod
    def _get_initial_lr(lr, swa_lr, alpha):
        """The learning rate the annealing started from, recovered from the current one."""
        if alpha == 1:
            return swa_lr
        return (lr - alpha * swa_lr) / (1 - alpha)

    def get_lr(self) -> list:
        """The learning rates of this epoch: torch's recursion, on the groups' current ``lr``."""
        if not self._get_lr_called_within_step:
            warnings.warn(_GET_LR_WARNING, UserWarning, stacklevel=2)
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        prev_t = max(0, min(1, (step - 1) / max(1, self.anneal_epochs)))
        prev_alpha = self.anneal_func(prev_t)
        prev_lrs = [
            self._get_initial_lr(group["lr"], group["swa_lr"], prev_alpha) for group in self.optimizer.param_groups
        ]
        t = max(0, min(1, step / max(1, self.anneal_epochs)))
        alpha = self.anneal_func(t)
        return [group["swa_lr"] * alpha + lr * (1 - alpha) for group, lr in zip(self.optimizer.param_groups, prev_lrs)]

    def _set_anneal_func(self, anneal_strategy: str) -> None:
        self._anneal_strategy = anneal_strategy
        self.anneal_func = self._cosine_anneal if anneal_strategy == "cos" else self._linear_anneal

    def state_dict(self) -> dict[str, Any]:
        """Every attribute but the optimizer and the annealing function (torch's layout)."""
        return {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "anneal_func")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores :meth:`state_dict`'s attributes (ours or torch's) and the annealing function."""
        self.__dict__.update(state_dict)
        self._set_anneal_func(self._anneal_strategy)

"""torch_compat's optimizer classes, made from gradxform's registry of specs.

A class names its spec (``class Adam(SpecOptimizer, alias="adam")``) and gets from it
its constructor (torch's signature, defaults and checks, in torch's order), its
``defaults`` in torch's key order, the per-parameter state keys, the float
hyperparameters, the options that switch a feature off at zero, the pairs unpacked at
each step, the sparse-gradient message, and a keyword call into ``gradxform.<alias>``.
What is left in a class's own file is its docstring and torch's quirks, as small hooks.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import jax
import numpy as np

import gradxform
from gradxform import _internal
from torch_compat.optim.optimizer import GradxformOptimizer, Optimizer


def scalar(value):
    """A 1-element array as a Python float (torch's ``_to_scalar``), numbers unchanged."""
    if _internal.is_array(value):
        return float(np.asarray(value).reshape(()))
    return value


def make_init(class_name: str, module: str, spec: _internal.OptimizerSpec):
    """``__init__(self, params, <torch's options>)`` calling ``self._construct(params, options)``.

    The function is written out and compiled (as :mod:`dataclasses` does), so that it has
    torch's real signature: ``inspect.signature`` shows it, and a wrong call gets Python's
    own ``TypeError`` naming the class (``Adam.__init__() got an unexpected keyword
    argument 'lrr'``).
    """
    arguments = ["self", "params"]
    for option in spec.options:
        if option.keyword_only and "*" not in arguments:
            arguments.append("*")
        arguments.append(f"{option.name}=_defaults[{option.name!r}]")
    options = ", ".join(f"{o.name!r}: {o.name}" for o in spec.options)
    source = f"def __init__({', '.join(arguments)}):\n    self._construct(params, {{{options}}})\n"
    namespace = {"_defaults": {o.name: o.default for o in spec.options}}
    exec(source, namespace)  # noqa: S102 - the source is built from the spec above
    init = namespace["__init__"]
    init.__qualname__ = f"{class_name}.__init__"
    init.__module__ = module
    return init


# -- capturable and differentiable ------------------------------------------------------------
#
# ``capturable=True`` asks torch to keep the step count on the device and never sync with
# the host, so that a step can be captured in a CUDA graph. Every torch_compat step is
# already one compiled XLA call whose state stays on the device, so it changes nothing
# here (the numbers are those of capturable=False, torch's reference). torch refuses it for
# parameters on the CPU (outside its fused path); so does torch_compat, with torch's text.
#
# ``differentiable=True`` asks torch to record the step for autograd. torch_compat's step
# writes Parameters in place and records nothing: it warns, once per class, and points to
# the gradxform transformations, which jax.grad differentiates through.

_CAPTURABLE_TENSORS = {"ASGD": "params, mus, etas, and", "NAdam": "params, mu_products and"}
_CAPTURABLE_DEVICES = {"Adadelta": ["cuda", "xpu", "hpu", "privateuseone"]}
_DEFAULT_CAPTURABLE_DEVICES = ["cuda", "xpu", "hpu", "privateuseone", "xla"]

#: ``(class name, option)`` pairs already warned about (a warning is given once per pair).
WARNED: set[tuple[str, str]] = set()


def capturable_message(class_name: str) -> str:
    """torch's AssertionError text for ``capturable=True`` on CPU parameters."""
    tensors = _CAPTURABLE_TENSORS.get(class_name, "params and")
    devices = _CAPTURABLE_DEVICES.get(class_name, _DEFAULT_CAPTURABLE_DEVICES)
    return f"If capturable=True, {tensors} state_steps must be on supported devices: {devices}."


def differentiable_message(class_name: str, alias: str) -> str:
    return (
        f"{class_name}(differentiable=True) has no effect in torch_compat: step() writes the parameters in "
        "place and is not recorded for differentiation. To differentiate through optimizer steps, run the "
        f"functional transformation gradxform.{alias} inside jax.grad: its init and update are differentiable "
        "(with respect to the parameters, gradients and hyperparameters such as the learning rate)."
    )


def _on_cpu(param) -> bool:
    data = param.data
    return isinstance(data, jax.Array) and any(d.platform == "cpu" for d in data.devices())


class SpecOptimizer(GradxformOptimizer):
    """A :class:`GradxformOptimizer` made from its gradxform spec (see the module docstring).

    Hooks a class may override for torch's quirks: :meth:`_prepare` (options after the
    constructor's checks), :meth:`_after_groups` (checks or state once the param groups
    exist), :meth:`_core_kwargs` (the call into the core), and the
    :class:`GradxformOptimizer` hooks (``_grad_for_step``, ``_check_group_with_grads``,
    ``_structure``, ``_export_step``).
    """

    _spec: ClassVar[_internal.OptimizerSpec]

    def __init_subclass__(cls, alias: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if alias is None:
            return
        spec = _internal.SPECS[alias]
        cls._spec = spec
        cls._state_keys = spec.state_keys
        cls._state_class = getattr(gradxform, spec.state_class)
        cls._hyperparams = spec.hyperparams
        cls._zero_options = spec.off_at_zero
        cls._unpacked_pairs = spec.pairs
        cls._sparse_grad_message = spec.sparse_grad_message
        cls._keys_read_on_load = spec.keys_read_on_load
        cls._recreated_state_keys = spec.recreated_state_keys
        cls.__init__ = make_init(cls.__name__, cls.__module__, spec)

    def _construct(self, params, options: dict[str, Any]) -> None:
        """What torch's constructor does: check the options, make the groups, check again."""
        self._spec.check_torch(options, "init")
        options = self._prepare(options)
        defaults = {**options, **self._spec.fixed}
        Optimizer.__init__(self, params, {name: defaults[name] for name in self._spec.defaults})
        self._spec.check_torch(options, "groups")
        self._after_groups()
        self._warn_differentiable()

    def _warn_differentiable(self) -> None:
        """Warns (once per class) that ``differentiable=True`` has no effect here."""
        name = type(self).__name__
        if (name, "differentiable") in WARNED:
            return
        if any(group.get("differentiable") for group in self.param_groups):
            WARNED.add((name, "differentiable"))
            warnings.warn(differentiable_message(name, self._spec.alias), UserWarning, stacklevel=4)

    def _prepare(self, options: dict[str, Any]) -> dict[str, Any]:
        """The options as torch stores them, after its checks (unchanged by default)."""
        return options

    def _after_groups(self) -> None:
        """torch's work once the param groups exist (none by default)."""

    def _group_defaults_on_load(self) -> dict[str, Any]:
        return dict(self._spec.load_defaults)

    def _check_group_with_grads(self, group: dict[str, Any]) -> None:
        self._spec.check_torch(group, "step")
        if group.get("capturable") and not group.get("fused"):
            if any(_on_cpu(p) for p in group["params"] if p.grad is not None):
                raise AssertionError(capturable_message(type(self).__name__))

    @classmethod
    def _core_kwargs(cls, options: dict[str, Any]) -> dict[str, Any]:
        """The core alias's keyword arguments for one group's options."""
        return {o.core_name: options[o.name] for o in cls._spec.core_options}

    @classmethod
    def _make_transform(cls, options: dict[str, Any]) -> gradxform.GradientTransformation:
        return getattr(gradxform, cls._spec.alias)(**cls._core_kwargs(options))

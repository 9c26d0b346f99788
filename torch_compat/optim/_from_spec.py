"""torch_compat's optimizer classes, made from gradxform's registry of specs.

A class names its spec (``class Adam(SpecOptimizer, alias="adam")``) and gets from it
its constructor (torch's signature, defaults and checks, in torch's order), its
``defaults`` in torch's key order, the per-parameter state keys, the float
hyperparameters, the options that switch a feature off at zero, the pairs unpacked at
each step, the sparse-gradient message, and a keyword call into ``gradxform.<alias>``.
What is left in a class's own file is its docstring and torch's quirks, as small hooks.
"""

from __future__ import annotations

from typing import Any, ClassVar

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

    def _prepare(self, options: dict[str, Any]) -> dict[str, Any]:
        """The options as torch stores them, after its checks (unchanged by default)."""
        return options

    def _after_groups(self) -> None:
        """torch's work once the param groups exist (none by default)."""

    def _group_defaults_on_load(self) -> dict[str, Any]:
        return dict(self._spec.load_defaults)

    def _check_group_with_grads(self, group: dict[str, Any]) -> None:
        self._spec.check_torch(group, "step")

    @classmethod
    def _core_kwargs(cls, options: dict[str, Any]) -> dict[str, Any]:
        """The core alias's keyword arguments for one group's options."""
        return {o.core_name: options[o.name] for o in cls._spec.core_options}

    @classmethod
    def _make_transform(cls, options: dict[str, Any]) -> gradxform.GradientTransformation:
        return getattr(gradxform, cls._spec.alias)(**cls._core_kwargs(options))

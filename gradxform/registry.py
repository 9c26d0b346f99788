"""One declarative spec per optimizer: every fact both faces need, written once.

An :class:`OptimizerSpec` describes one ``torch.optim`` class and its gradxform alias:

* ``alias`` and ``torch_name``: ``gradxform.<alias>`` and ``torch.optim.<torch_name>``;
* ``options``: the constructor's keyword arguments, in torch 2.13's order and with its
  defaults, each an :class:`Option` that says whether it is a float hyperparameter
  (kept in the state as an array), whether a concrete 0 switches its feature off,
  whether it is keyword-only, a pair torch unpacks, or an implementation flag
  (``foreach``, ``fused``, ...) that only the torch face takes;
* ``constraints``: torch's checks of the options, each a :class:`Constraint` holding
  torch's condition and exact message, in torch's order (the first failing check decides
  the message);
* ``state_keys``: the per-parameter state, with torch's keys in torch's order, and the
  gradxform state class whose fields carry them.

Both faces validate from it: the core aliases call :meth:`OptimizerSpec.check_core`
when they are built, and ``torch_compat.optim``'s classes are made from their spec
(constructor signature and defaults, :meth:`OptimizerSpec.check_torch`, state keys,
hyperparameters, and a keyword call into the core alias).

Example:
  >>> from gradxform.registry import SPECS
  >>> spec = SPECS["adam"]
  >>> spec.torch_name, spec.hyperparams, spec.state_keys
  ('Adam', ('lr', 'betas', 'eps', 'weight_decay'), ('step', 'exp_avg', 'exp_avg_sq', 'max_exp_avg_sq'))
  >>> spec.check_core(learning_rate=-0.1)
  Traceback (most recent call last):
  ...
  ValueError: Invalid learning rate: -0.1
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
from typing import Any, Callable

import numpy as np

from gradxform.optimizers._common import check_sequence, concrete

# ------------------------------------------------------------------------- the pieces


@dataclasses.dataclass(frozen=True)
class Option:
    """One keyword argument of a ``torch.optim`` constructor.

    Attributes:
      name: torch's name (the core spells ``lr`` as ``learning_rate``).
      default: torch's default, exactly (``0`` where torch writes ``0``).
      hyper: a float hyperparameter: the core keeps it in its state as an array and
        torch_compat passes it as a traced value, so changing it never recompiles.
      off_at_zero: a concrete 0 switches its feature off (no buffer, not in the state),
        as torch skips it.
      keyword_only: after the ``*`` in torch's signature.
      pair: a pair of values torch unpacks at each step (``betas``, ``etas``, ...).
      impl: an implementation flag (``foreach``, ``fused``, ``capturable``,
        ``differentiable``): accepted by torch_compat, without effect; not a core option.
    """

    name: str
    default: Any
    hyper: bool = False
    off_at_zero: bool = False
    keyword_only: bool = False
    pair: bool = False
    impl: bool = False

    @property
    def core_name(self) -> str:
        """The core's spelling of the option."""
        return "learning_rate" if self.name == "lr" else self.name


@dataclasses.dataclass(frozen=True)
class Constraint:
    """One of torch's checks: ``fails(**options)`` true means ``error(message)``.

    ``fails`` is written as torch writes the condition (``lambda lr: not 0.0 <= lr``),
    and the options it reads are its parameters' names; ``message`` is a
    :meth:`str.format` template over them (``"Invalid learning rate: {lr}"``).

    Attributes:
      fails: torch's condition for refusing the options.
      message: torch's message, word for word.
      error: torch's exception type.
      when: where torch checks it: ``"init"`` (in the constructor, before the
        parameters), ``"groups"`` (in the constructor, after the param groups are made)
        or ``"step"`` (at the first step with gradients). The core checks all of them
        when the alias is built.
      face: ``"both"``, ``"torch"`` (torch_compat only: torch's own quirks) or ``"core"``
        (the core only, for a value torch would trip on later in its arithmetic).
    """

    fails: Callable[..., bool]
    message: str
    error: type = ValueError
    when: str = "init"
    face: str = "both"

    @functools.cached_property
    def options(self) -> tuple[str, ...]:
        """The options the check reads (read once: torch_compat checks at every step, and
        ``inspect.signature`` costs about 20 µs)."""
        return tuple(inspect.signature(self.fails).parameters)

    def raise_if_fails(self, values: dict[str, Any]) -> None:
        """Raises ``error(message)`` when ``fails`` holds for ``values`` (option -> value)."""
        values = {name: values[name] for name in self.options}
        if self.fails(**values):
            raise self.error(self.message.format(**values))


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """Everything both faces need to know about one optimizer (see the module docstring).

    Attributes:
      alias: the gradxform alias, ``gradxform.<alias>``.
      torch_name: the torch class, ``torch.optim.<torch_name>``.
      options: the constructor's options in torch's signature order.
      constraints: torch's checks, in torch's order.
      state_keys: torch's per-parameter state keys, in torch's order.
      state_class: the gradxform state (a ``NamedTuple`` in ``gradxform.__all__``) whose
        fields of the same names carry them.
      defaults_order: the key order of torch's ``optimizer.defaults`` where it is not the
        signature's.
      fixed: entries of ``defaults`` the constructor does not take (AdamW's
        ``decoupled_weight_decay=True``).
      load_defaults: what torch's ``__setstate__`` gives a loaded param group that lacks
        them.
      sparse_grad_message: torch's ``RuntimeError`` for a sparse gradient (empty: sparse
        gradients are taken).
      complex_message: torch's text refusing complex parameters (``None``: they are
        supported).
      closure: ``step(closure)`` needs a closure (LBFGS).
      keys_read_on_load: the per-parameter state keys torch's ``__setstate__`` reads from
        every loaded non-empty state (a missing one is its ``KeyError`` at
        ``load_state_dict``).
      recreated_state_keys: the state keys torch's step creates afresh when a state lacks
        them (SGD's and Muon's ``momentum_buffer``); any other missing key is refused.
    """

    alias: str
    torch_name: str
    options: tuple[Option, ...]
    constraints: tuple[Constraint, ...]
    state_keys: tuple[str, ...] = ()
    state_class: str | None = None
    defaults_order: tuple[str, ...] | None = None
    fixed: dict = dataclasses.field(default_factory=dict)
    load_defaults: dict = dataclasses.field(default_factory=dict)
    sparse_grad_message: str = ""
    complex_message: str | None = None
    closure: bool = False
    keys_read_on_load: tuple[str, ...] = ("step",)
    recreated_state_keys: tuple[str, ...] = ()

    def option(self, name: str) -> Option:
        """The option called ``name`` (torch's spelling)."""
        return next(o for o in self.options if o.name == name)

    @property
    def defaults(self) -> dict[str, Any]:
        """torch's ``optimizer.defaults`` for a constructor called with its defaults, in order."""
        values = {**{o.name: o.default for o in self.options}, **self.fixed}
        return {name: values[name] for name in self.defaults_order or values}

    @property
    def core_options(self) -> tuple[Option, ...]:
        """The options the core alias takes (all but the implementation flags)."""
        return tuple(o for o in self.options if not o.impl)

    @property
    def hyperparams(self) -> tuple[str, ...]:
        """The float hyperparameters."""
        return tuple(o.name for o in self.options if o.hyper)

    @property
    def off_at_zero(self) -> tuple[str, ...]:
        """The options whose concrete 0 switches their feature off."""
        return tuple(o.name for o in self.options if o.off_at_zero)

    @property
    def pairs(self) -> tuple[str, ...]:
        """The pairs torch unpacks at each step."""
        return tuple(o.name for o in self.options if o.pair)

    def check_torch(self, options: dict[str, Any], when: str) -> None:
        """torch's checks made at ``when``, on torch's values, exactly as torch makes them.

        Only the checks whose options are all in ``options`` run. A value torch cannot
        compare fails here as in torch (``TypeError`` from Python).
        """
        for constraint in self.constraints:
            if constraint.face != "core" and constraint.when == when and set(constraint.options) <= set(options):
                constraint.raise_if_fails(options)

    def check_core(self, **values: Any) -> None:
        """The core alias's checks of its arguments (the core's spelling: ``learning_rate``).

        First the form of the pairs (``betas must be a sequence of 2 values``), then
        torch's checks in torch's order, with torch's message for a refused number.
        Only the checks whose options are all given run. A value not known yet (a
        schedule, a traced value) or not a number skips the checks that read it: the
        alias's check of each hyperparameter's form refuses what is not a number.

        Raises:
          ValueError: (or the check's own type) with the first failing check's message.
        """
        values = {("lr" if k == "learning_rate" else k): v for k, v in values.items()}
        for name in self.pairs:
            if name in values:
                check_sequence(values[name], name, 2)
        seen = {name: _core_view(value) for name, value in values.items()}
        for constraint in self.constraints:
            if constraint.face == "torch" or not set(constraint.options) <= set(seen):
                continue
            try:
                fails = constraint.fails(**{name: seen[name] for name in constraint.options})
            except (TypeError, ValueError):
                continue  # not comparable: the form check refuses it
            if fails:
                raise constraint.error(constraint.message.format(**seen))


class _Unknown:
    """A value the core cannot check now (a schedule, a traced value, a complex number):
    any comparison with it raises ``TypeError``, which skips the check."""

    def _refuse(self, *args):
        raise TypeError("unknown value")

    __lt__ = __le__ = __gt__ = __ge__ = __eq__ = __ne__ = __bool__ = __len__ = __getitem__ = _refuse
    __hash__ = None


_UNKNOWN = _Unknown()


def _core_view(value: Any) -> Any:
    """A core argument as the checks see it: Python numbers, flags and strings as given,
    a 1-element real array as its float, another array as is (the 1-element check
    refuses it), sequences element by element, anything else unknown."""
    if value is None or isinstance(value, (bool, str, numbers.Real)):
        return value
    if isinstance(value, (tuple, list)):
        return tuple(_core_view(v) for v in value)
    if is_array(value) and array_size(value) != 1:
        return value
    number = concrete(value)
    return _UNKNOWN if number is None else number


def is_array(value: Any) -> bool:
    """Whether ``value`` is an array (what torch calls a Tensor) rather than a number."""
    return hasattr(value, "shape") and hasattr(value, "dtype")


def array_size(value: Any) -> int:
    """The number of elements of an array."""
    return math.prod(np.shape(value))


# -------------------------------------------------------------- torch's checks and texts
# Each message is written here once; a check torch writes in two forms (SGD's
# ``lr < 0.0`` lets NaN through, the others' ``not 0.0 <= lr`` does not) shares it.

INVALID_LR = "Invalid learning rate: {lr}"
INVALID_EPS = "Invalid epsilon value: {eps}"
INVALID_MOMENTUM = "Invalid momentum value: {momentum}"
INVALID_WEIGHT_DECAY = "Invalid weight_decay value: {weight_decay}"
INVALID_ALPHA = "Invalid alpha value: {alpha}"
LR_SHOULD = "Learning rate should be >= 0 but is: {lr}"
NESTEROV = "Nesterov momentum requires a momentum and zero dampening"
ADAM_SPARSE = "Adam does not support sparse gradients, please consider SparseAdam instead"
MUON_2D = "Muon only supports 2D parameters whereas we found a parameter with size: "
"""Muon's refusal of a parameter that is not 2-D; each face appends the size its way."""

TENSOR_LR = Constraint(lambda lr: is_array(lr) and array_size(lr) != 1, "Tensor lr must be 1-element")
LR = Constraint(lambda lr: not 0.0 <= lr, INVALID_LR)
EPS = Constraint(lambda eps: not 0.0 <= eps, INVALID_EPS)
WEIGHT_DECAY = Constraint(lambda weight_decay: not 0.0 <= weight_decay, INVALID_WEIGHT_DECAY)
BETA0 = Constraint(lambda betas: not 0.0 <= betas[0] < 1.0, "Invalid beta parameter at index 0: {betas[0]}")
BETA1 = Constraint(lambda betas: not 0.0 <= betas[1] < 1.0, "Invalid beta parameter at index 1: {betas[1]}")
FUSED = (
    Constraint(
        lambda fused, differentiable: fused and differentiable,
        "`fused` does not support `differentiable`",
        RuntimeError,
        when="groups",
    ),
    Constraint(
        lambda fused, foreach: fused and foreach,
        "`fused` and `foreach` cannot be `True` together.",
        RuntimeError,
        when="groups",
    ),
)


def _tensor_beta(index: int) -> tuple[Constraint, ...]:
    """Adam's checks of ``betas[index]`` given as a tensor."""
    return (
        Constraint(
            lambda betas, foreach, capturable: is_array(betas[index]) and not capturable and foreach,
            f"betas[{index}] as a Tensor is not supported for capturable=False and foreach=True",
            face="torch",
        ),
        Constraint(
            lambda betas: is_array(betas[index]) and array_size(betas[index]) != 1,
            f"Tensor betas[{index}] must be 1-element",
            face="torch",
        ),
    )


BETAS_FAMILY = (TENSOR_LR, LR, EPS, BETA0, BETA1, WEIGHT_DECAY)
"""The checks of Adamax, NAdam and RAdam (and Adam's, in the middle of its own)."""

ADAM_CONSTRAINTS = (
    Constraint(
        lambda lr, foreach, capturable: is_array(lr) and foreach and not capturable,
        "lr as a Tensor is not supported for capturable=False and foreach=True",
        face="torch",
    ),
    *BETAS_FAMILY,
    Constraint(
        lambda betas: not (
            (isinstance(betas[0], float) and isinstance(betas[1], float))
            or (is_array(betas[0]) and is_array(betas[1]))
        ),
        "betas must be either both floats or both Tensors",
        face="torch",
    ),
    *_tensor_beta(0),
    *_tensor_beta(1),
    *FUSED,
)

# --------------------------------------------------------------------------- options


def _lr(default) -> Option:
    return Option("lr", default, hyper=True)


def _weight_decay(default=0) -> Option:
    return Option("weight_decay", default, hyper=True, off_at_zero=True)


def _betas() -> Option:
    return Option("betas", (0.9, 0.999), hyper=True, pair=True)


def _impl(name, default=None) -> Option:
    return Option(name, default, impl=True)


def _flag(name, default=False) -> Option:
    return Option(name, default)


def _kw(*options: Option) -> tuple[Option, ...]:
    """The options, keyword-only (after the ``*``)."""
    return tuple(dataclasses.replace(option, keyword_only=True) for option in options)


FOREACH = _impl("foreach")
DIFFERENTIABLE = _impl("differentiable", False)
CAPTURABLE = _impl("capturable", False)
FUSED_FLAG = _impl("fused")
MAXIMIZE = _flag("maximize")

# ------------------------------------------------------------------------- the specs

_SPECS = [
    OptimizerSpec(
        alias="sgd",
        torch_name="SGD",
        options=(
            _lr(1e-3),
            Option("momentum", 0, hyper=True, off_at_zero=True),
            Option("dampening", 0, hyper=True),
            _weight_decay(),
            _flag("nesterov"),
            *_kw(MAXIMIZE, FOREACH, DIFFERENTIABLE, FUSED_FLAG),
        ),
        constraints=(
            TENSOR_LR,
            Constraint(lambda lr: lr < 0.0, INVALID_LR),
            Constraint(lambda momentum: momentum < 0.0, INVALID_MOMENTUM),
            Constraint(lambda weight_decay: weight_decay < 0.0, INVALID_WEIGHT_DECAY),
            # torch: ``nesterov and (momentum <= 0 or dampening != 0)``, one check per
            # option so that the core checks the one it knows.
            Constraint(lambda nesterov, momentum: nesterov and momentum <= 0, NESTEROV),
            Constraint(lambda nesterov, dampening: nesterov and dampening != 0, NESTEROV),
            *FUSED,
        ),
        state_keys=("momentum_buffer",),
        state_class="ScaleBySgdState",
        keys_read_on_load=(),
        recreated_state_keys=("momentum_buffer",),  # state.get(...) is None: a copy of the gradient
        load_defaults=dict(nesterov=False, maximize=False, foreach=None, differentiable=False, fused=False),
    ),
    OptimizerSpec(
        alias="asgd",
        torch_name="ASGD",
        options=(
            _lr(1e-2),
            Option("lambd", 1e-4, hyper=True),
            Option("alpha", 0.75, hyper=True),
            Option("t0", 1e6, hyper=True),
            _weight_decay(),
            FOREACH,
            MAXIMIZE,
            DIFFERENTIABLE,
            CAPTURABLE,
        ),
        constraints=(
            TENSOR_LR,
            LR,
            WEIGHT_DECAY,
            # torch divides lr by (1 + lambd * lr * t) ** alpha in Python, at the step.
            Constraint(
                lambda alpha: alpha == -math.inf,
                "Invalid alpha value: {alpha} (lr / (1 + lambd * lr * t) ** alpha divides by zero)",
                face="core",
            ),
        ),
        state_keys=("step", "eta", "mu", "ax"),
        state_class="ScaleByAsgdState",
        keys_read_on_load=("step", "eta", "mu"),
        load_defaults=dict(foreach=None, maximize=False, differentiable=False, capturable=False),
        sparse_grad_message="ASGD does not support sparse gradients",
    ),
    OptimizerSpec(
        alias="rprop",
        torch_name="Rprop",
        options=(
            _lr(1e-2),
            Option("etas", (0.5, 1.2), hyper=True, pair=True),
            Option("step_sizes", (1e-6, 50), hyper=True, pair=True),
            *_kw(CAPTURABLE, FOREACH, MAXIMIZE, DIFFERENTIABLE),
        ),
        constraints=(
            TENSOR_LR,
            LR,
            Constraint(lambda etas: not 0.0 < etas[0] < 1.0 < etas[1], "Invalid eta values: {etas[0]}, {etas[1]}"),
        ),
        state_keys=("step", "prev", "step_size"),
        state_class="ScaleByRpropState",
        defaults_order=("lr", "etas", "step_sizes", "foreach", "maximize", "differentiable", "capturable"),
        load_defaults=dict(foreach=None, maximize=False, differentiable=False, capturable=False),
        sparse_grad_message="Rprop does not support sparse gradients",
    ),
    OptimizerSpec(
        alias="adagrad",
        torch_name="Adagrad",
        options=(
            _lr(1e-2),
            Option("lr_decay", 0, hyper=True),
            _weight_decay(),
            Option("initial_accumulator_value", 0),
            Option("eps", 1e-10, hyper=True),
            FOREACH,
            *_kw(MAXIMIZE, DIFFERENTIABLE, FUSED_FLAG),
        ),
        constraints=(
            TENSOR_LR,
            LR,
            Constraint(lambda lr_decay: not 0.0 <= lr_decay, "Invalid lr_decay value: {lr_decay}"),
            WEIGHT_DECAY,
            Constraint(
                lambda initial_accumulator_value: not 0.0 <= initial_accumulator_value,
                "Invalid initial_accumulator_value value: {initial_accumulator_value}",
            ),
            EPS,
            *FUSED,
        ),
        state_keys=("step", "sum"),
        state_class="ScaleByAdagradState",
        defaults_order=(
            "lr", "lr_decay", "eps", "weight_decay", "initial_accumulator_value", "foreach", "maximize",
            "differentiable", "fused",
        ),  # fmt: skip
        load_defaults=dict(foreach=None, maximize=False, differentiable=False, fused=None),
    ),
    OptimizerSpec(
        alias="adadelta",
        torch_name="Adadelta",
        options=(
            _lr(1.0),
            Option("rho", 0.9, hyper=True),
            Option("eps", 1e-6, hyper=True),
            _weight_decay(),
            FOREACH,
            *_kw(CAPTURABLE, MAXIMIZE, DIFFERENTIABLE),
        ),
        constraints=(
            TENSOR_LR,
            LR,
            Constraint(lambda rho: not 0.0 <= rho <= 1.0, "Invalid rho value: {rho}"),
            EPS,
            WEIGHT_DECAY,
        ),
        state_keys=("step", "square_avg", "acc_delta"),
        state_class="ScaleByAdadeltaState",
        defaults_order=("lr", "rho", "eps", "weight_decay", "maximize", "capturable", "foreach", "differentiable"),
        load_defaults=dict(foreach=None, maximize=False, differentiable=False, capturable=False),
        sparse_grad_message="Adadelta does not support sparse gradients",
    ),
    OptimizerSpec(
        alias="rmsprop",
        torch_name="RMSprop",
        options=(
            _lr(1e-2),
            Option("alpha", 0.99, hyper=True),
            Option("eps", 1e-8, hyper=True),
            _weight_decay(),
            Option("momentum", 0, hyper=True, off_at_zero=True),
            _flag("centered"),
            CAPTURABLE,
            FOREACH,
            MAXIMIZE,
            DIFFERENTIABLE,
        ),
        constraints=(
            TENSOR_LR,
            LR,
            EPS,
            Constraint(lambda momentum: not 0.0 <= momentum, INVALID_MOMENTUM),
            WEIGHT_DECAY,
            Constraint(lambda alpha: not 0.0 <= alpha, INVALID_ALPHA),
        ),
        state_keys=("step", "square_avg", "momentum_buffer", "grad_avg"),
        state_class="ScaleByRmspropState",
        defaults_order=(
            "lr", "momentum", "alpha", "eps", "centered", "weight_decay", "capturable", "foreach", "maximize",
            "differentiable",
        ),  # fmt: skip
        load_defaults=dict(
            momentum=0, centered=False, foreach=None, maximize=False, differentiable=False, capturable=False
        ),
        sparse_grad_message="RMSprop does not support sparse gradients",
    ),
    OptimizerSpec(
        alias="adam",
        torch_name="Adam",
        options=(
            _lr(1e-3),
            _betas(),
            Option("eps", 1e-8, hyper=True),
            _weight_decay(),
            _flag("amsgrad"),
            *_kw(FOREACH, MAXIMIZE, CAPTURABLE, DIFFERENTIABLE, FUSED_FLAG, _flag("decoupled_weight_decay")),
        ),
        constraints=ADAM_CONSTRAINTS,
        state_keys=("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
        state_class="ScaleByAdamState",
        defaults_order=(
            "lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "foreach", "capturable", "differentiable",
            "fused", "decoupled_weight_decay",
        ),  # fmt: skip
        load_defaults=dict(
            amsgrad=False, maximize=False, foreach=None, capturable=False, differentiable=False,
            decoupled_weight_decay=False, fused=None,
        ),  # fmt: skip
        sparse_grad_message=ADAM_SPARSE,
    ),
    OptimizerSpec(
        alias="adamw",
        torch_name="AdamW",
        options=(
            _lr(1e-3),
            _betas(),
            Option("eps", 1e-8, hyper=True),
            _weight_decay(1e-2),
            _flag("amsgrad"),
            *_kw(MAXIMIZE, FOREACH, CAPTURABLE, DIFFERENTIABLE, FUSED_FLAG),
        ),
        constraints=ADAM_CONSTRAINTS,
        state_keys=("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
        state_class="ScaleByAdamState",
        fixed=dict(decoupled_weight_decay=True),
        load_defaults=dict(
            amsgrad=False, maximize=False, foreach=None, capturable=False, differentiable=False,
            decoupled_weight_decay=True, fused=None,
        ),  # fmt: skip
        sparse_grad_message=ADAM_SPARSE,  # torch's AdamW is an Adam
    ),
    OptimizerSpec(
        alias="adamax",
        torch_name="Adamax",
        options=(
            _lr(2e-3),
            _betas(),
            Option("eps", 1e-8, hyper=True),
            _weight_decay(),
            FOREACH,
            *_kw(MAXIMIZE, DIFFERENTIABLE, CAPTURABLE),
        ),
        constraints=BETAS_FAMILY,
        state_keys=("step", "exp_avg", "exp_inf"),
        state_class="ScaleByAdamaxState",
        load_defaults=dict(foreach=None, maximize=False, differentiable=False, capturable=False),
        sparse_grad_message="Adamax does not support sparse gradients",
    ),
    OptimizerSpec(
        alias="sparse_adam",
        torch_name="SparseAdam",
        options=(_lr(1e-3), _betas(), Option("eps", 1e-8, hyper=True), MAXIMIZE),
        constraints=(
            TENSOR_LR,
            Constraint(lambda lr: not 0.0 < lr, INVALID_LR),
            Constraint(lambda eps: not 0.0 < eps, INVALID_EPS),
            BETA0,
            BETA1,
        ),
        state_keys=("step", "exp_avg", "exp_avg_sq"),
        state_class="ScaleBySparseAdamState",
        keys_read_on_load=(),  # torch's SparseAdam has no __setstate__: a missing key fails at step()
        complex_message="SparseAdam does not support complex parameters",
    ),
    OptimizerSpec(
        alias="nadam",
        torch_name="NAdam",
        options=(
            _lr(2e-3),
            _betas(),
            Option("eps", 1e-8, hyper=True),
            _weight_decay(),
            Option("momentum_decay", 4e-3, hyper=True),
            _flag("decoupled_weight_decay"),
            *_kw(FOREACH, MAXIMIZE, CAPTURABLE, DIFFERENTIABLE),
        ),
        constraints=(
            *BETAS_FAMILY,
            Constraint(lambda momentum_decay: not 0.0 <= momentum_decay, "Invalid momentum_decay value: {momentum_decay}"),
        ),
        state_keys=("step", "mu_product", "exp_avg", "exp_avg_sq"),
        state_class="ScaleByNadamState",
        keys_read_on_load=("step", "mu_product"),
        defaults_order=(
            "lr", "betas", "eps", "weight_decay", "momentum_decay", "decoupled_weight_decay", "maximize", "foreach",
            "capturable", "differentiable",
        ),  # fmt: skip
        load_defaults=dict(
            maximize=False, foreach=None, capturable=False, differentiable=False, decoupled_weight_decay=False
        ),
        sparse_grad_message="NAdam does not support sparse gradients",
    ),
    OptimizerSpec(
        alias="radam",
        torch_name="RAdam",
        options=(
            _lr(1e-3),
            _betas(),
            Option("eps", 1e-8, hyper=True),
            _weight_decay(),
            _flag("decoupled_weight_decay"),
            *_kw(FOREACH, MAXIMIZE, CAPTURABLE, DIFFERENTIABLE),
        ),
        constraints=BETAS_FAMILY,
        state_keys=("step", "exp_avg", "exp_avg_sq"),
        state_class="ScaleByRadamState",
        defaults_order=(
            "lr", "betas", "eps", "weight_decay", "maximize", "foreach", "capturable", "decoupled_weight_decay",
            "differentiable",
        ),  # fmt: skip
        load_defaults=dict(
            foreach=None, maximize=False, differentiable=False, capturable=False, decoupled_weight_decay=False
        ),
        sparse_grad_message="RAdam does not support sparse gradients",
    ),
    OptimizerSpec(
        alias="adafactor",
        torch_name="Adafactor",
        options=(
            _lr(1e-2),
            Option("beta2_decay", -0.8, hyper=True),
            Option("eps", (None, 1e-3), hyper=True, pair=True),
            Option("d", 1.0, hyper=True),
            # The update reads it always (0 skips the decay inside the rule).
            Option("weight_decay", 0.0, hyper=True),
            *_kw(FOREACH, MAXIMIZE),
        ),
        constraints=(
            TENSOR_LR,
            Constraint(lambda lr: not 0.0 <= lr, LR_SHOULD),
            Constraint(lambda beta2_decay: not 0.0 >= beta2_decay, "beta2_decay should be <= 0 but is: {beta2_decay}"),
            Constraint(lambda eps: eps[0] is not None and not 0.0 <= eps[0], "epsilon1 should be >= 0 but is: {eps[0]}"),
            Constraint(lambda eps: not 0.0 <= eps[1], "epsilon2 should be >= 0 but is: {eps[1]}"),
            Constraint(lambda d: not 1.0 <= d, "Clipping threshold d should be >= 1 but is: {d}"),
            Constraint(lambda weight_decay: not 0.0 <= weight_decay, "weight_decay should be >= 0 but is: {weight_decay}"),
        ),
        state_keys=("step", "row_var", "col_var", "variance"),
        state_class="ScaleByAdafactorState",
        sparse_grad_message="Adafactor does not support sparse gradients",
        complex_message="Adafactor does not support complex parameters",
    ),
    OptimizerSpec(
        alias="muon",
        torch_name="Muon",
        options=(
            _lr(1e-3),
            _weight_decay(0.1),
            Option("momentum", 0.95, hyper=True),
            _flag("nesterov", True),
            Option("ns_coefficients", (3.4445, -4.775, 2.0315), hyper=True),
            Option("eps", 1e-7, hyper=True),
            Option("ns_steps", 5),
            Option("adjust_lr_fn", None),
        ),
        constraints=(
            TENSOR_LR,
            Constraint(lambda lr: not 0.0 <= lr, LR_SHOULD),
            Constraint(lambda momentum: not 0.0 <= momentum, "momentum should be >= 0 but is: {momentum}"),
            Constraint(lambda weight_decay: not 0.0 <= weight_decay, "weight decay should be >= 0 but is: {weight_decay}"),
            Constraint(
                lambda adjust_lr_fn: adjust_lr_fn is not None and adjust_lr_fn not in ["original", "match_rms_adamw"],
                "Adjust learning rate function {adjust_lr_fn} is not supported",
            ),
            # torch iterates range(ns_steps) at the step: a float is its TypeError there.
            Constraint(
                lambda ns_steps: not isinstance(ns_steps, numbers.Integral),
                "ns_steps must be an integer, got {ns_steps!r}",
                face="core",
            ),
            # torch checks these in its Newton-Schulz iteration, at the first step.
            Constraint(
                lambda ns_steps: ns_steps >= 100,
                "Number of steps must be less than 100 for computational efficiency",
                when="step",
            ),
            Constraint(
                lambda ns_coefficients: len(ns_coefficients) != 3,
                "Coefficients must be a tuple of exactly 3 values",
                when="step",
            ),
        ),
        state_keys=("momentum_buffer",),
        state_class="ScaleByMuonState",
        keys_read_on_load=(),
        recreated_state_keys=("momentum_buffer",),  # zeros when "momentum_buffer" is not in the state
        sparse_grad_message="Muon does not support sparse gradients",
        complex_message="Muon does not support complex parameters",
    ),
    OptimizerSpec(
        alias="lbfgs",
        torch_name="LBFGS",
        options=(
            _lr(1),
            Option("max_iter", 20),
            Option("max_eval", None),
            Option("tolerance_grad", 1e-7, hyper=True),
            Option("tolerance_change", 1e-9, hyper=True),
            Option("history_size", 100),
            Option("line_search_fn", None),
        ),
        constraints=(
            TENSOR_LR,
            LR,
            Constraint(
                lambda line_search_fn: line_search_fn not in (None, "strong_wolfe"),
                "only 'strong_wolfe' is supported",
                RuntimeError,
                when="step",
            ),
        ),
        closure=True,
    ),
]

SPECS: dict[str, OptimizerSpec] = {spec.alias: spec for spec in _SPECS}
"""Every optimizer's spec, by gradxform alias, in the order of ``torch.optim``'s documentation."""

ALIASES: tuple[str, ...] = tuple(SPECS)
"""Every alias (the 15 torch.optim classes)."""

FIRST_ORDER: tuple[str, ...] = tuple(alias for alias, spec in SPECS.items() if not spec.closure)
"""The aliases whose step needs only gradients (all but ``lbfgs``)."""

BY_TORCH_NAME: dict[str, OptimizerSpec] = {spec.torch_name: spec for spec in _SPECS}
"""The specs by torch class name."""

__all__ = [
    "ALIASES",
    "BY_TORCH_NAME",
    "Constraint",
    "FIRST_ORDER",
    "Option",
    "OptimizerSpec",
    "SPECS",
]

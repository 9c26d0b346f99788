"""Hyperparameters that live in the optimizer state.

Every gradxform optimizer (``gradxform.adam(...)`` and the others) keeps its float
hyperparameters in its state as scalar arrays, in an :class:`InjectHyperparamsState`.
Changing them between steps (by hand with :func:`set_hyperparams`, or by a schedule)
therefore changes only array *values*: a jitted ``update`` is never recompiled.

Who owns a value depends on how it was given when the transformation was built:

* a number (``learning_rate=1e-3``) is an initial value: the state owns it from then on,
  and :func:`set_hyperparams` changes it;
* a callable is a schedule: it is called with the number of updates done so far (an
  int32 array, 0 at the first update) and its value is written to the state before the
  update uses it;
* a JAX array (concrete or traced) is owned by whoever built the transformation: each
  update uses the array given, and records it in the state (so :func:`get_hyperparams`
  reads it). That is how ``optax.inject_hyperparams(gradxform.adam)(learning_rate=...)``
  drives a gradxform optimizer: it rebuilds the transformation at each update from
  *its* state, so its hyperparameters (and optax schedules) take effect, and
  :func:`set_hyperparams` changes optax's copy along with gradxform's. For a
  transformation you built with an array yourself there is no such copy, so
  :func:`set_hyperparams` refuses that name with a ``ValueError`` (the next update would
  overwrite the value): give a Python number to let the state own the value, or change
  the array you pass. The state records these names in
  :attr:`InjectHyperparamsState.caller_owned`, in its tree structure only (no leaves).

Example:
  >>> import jax.numpy as jnp, gradxform
  >>> state = gradxform.adam(jnp.asarray(1e-3)).init(jnp.zeros(3))
  >>> state.caller_owned
  {'learning_rate': None}
  >>> gradxform.set_hyperparams(state, learning_rate=1e-4)  # doctest: +ELLIPSIS
  Traceback (most recent call last):
  ...
  ValueError: cannot set 'learning_rate' at the root: ...
  >>> state = gradxform.set_hyperparams(state, eps=1e-6)  # given as a number: the state's
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _numerics, _paths, _treecheck
from gradxform.base import GradientTransformation


class InjectHyperparamsState(NamedTuple):
    """State of a transformation built by :func:`inject_hyperparams`.

    Attributes:
      count: int32 ``[]``, the number of updates done so far (the schedules' step).
      hyperparams: ``dict[str, pytree]`` of float scalar arrays (``[]``, default float
        dtype), the values used by the most recent update (or by ``init``).
      inner_state: the state of the transformation built from them.
      caller_owned: ``None``, or a ``dict`` whose keys name the hyperparameters given as
        JAX arrays when the transformation was built (each update uses that array, so
        :func:`set_hyperparams` refuses them), with ``None`` values: it holds no arrays,
        only tree structure, so it costs nothing under ``jit`` or donation. ``None`` when
        every hyperparameter was given as a number or a schedule (the default, so a
        state built from three fields is that one).
    """

    count: jax.Array
    hyperparams: dict[str, Any]
    inner_state: Any
    caller_owned: dict[str, None] | None = None


def _is_schedule(leaf) -> bool:
    return callable(leaf)


def _given_as_array(leaf) -> bool:
    """A value owned by the caller: a JAX array or a traced value (not a Python number)."""
    return isinstance(leaf, (jax.Array, jax.core.Tracer))


def _check_scalar(value, what: str) -> None:
    # Checked while tracing (shapes are static): a value of shape (1,) would broadcast a
    # 0-d parameter's update to (1,), and apply_updates would reshape the parameter.
    if jnp.ndim(value) != 0:
        raise ValueError(
            f"{what} has shape {tuple(jnp.shape(value))}: a hyperparameter must be a scalar "
            "(shape ()); another shape would broadcast the updates, and so the parameters"
        )


def _value(leaf, count, name: str) -> jax.Array:
    if _is_schedule(leaf):
        leaf = leaf(count)
        _check_scalar(leaf, f"the value returned by the schedule of hyperparameter {name!r}")
    else:
        _check_scalar(leaf, f"hyperparameter {name!r}")
    # A copy: the state must not hold the caller's array (a learning rate given as an
    # array, or one a schedule returns), which donating the state would delete, and two
    # hyperparameters given the same array must not share a buffer.
    return jnp.array(leaf, dtype=_numerics.hyper_dtype(), copy=True)


def inject_hyperparams(
    build: Callable[..., GradientTransformation], /, **hyperparams: Any
) -> GradientTransformation:
    """Builds ``build(**hyperparams)`` with the hyperparameters held in the state.

    Args:
      build: a function of the hyperparameters that returns a transformation. It is
        called with scalar arrays (possibly traced), and must not depend on their
        values in Python control flow.
      **hyperparams: each a float, a scalar array, a schedule (``count -> value``,
        returning a scalar), or a tuple of those (``betas=(0.9, 0.999)``). ``None`` leaves are passed through. A
        float is an initial value, then the state's (:func:`set_hyperparams`); a
        schedule is evaluated at each update; a JAX array is used as given at each
        update (see the module's docstring).

    Returns:
      A transformation with :class:`InjectHyperparamsState`. Its ``update`` refuses,
      with a ``ValueError`` naming the offending path, updates whose tree, shapes or
      dtype kinds differ from ``params`` (or, without ``params``, from the per-parameter
      buffers of the state); the check is made while tracing and costs nothing at run
      time.

    Raises:
      ValueError: for a hyperparameter that is not a scalar (shape ``()``): a constant
        at once, a schedule's value when ``init`` or ``update`` is traced, a value held
        in the state (a restored state) when ``update`` is traced. A value of shape
        ``(1,)`` would otherwise broadcast a 0-d parameter's update, and
        ``apply_updates`` would silently reshape the parameter.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform
      >>> tx = gradxform.inject_hyperparams(gradxform.scale, step_size=lambda n: -1.0 / (n + 1))
      >>> state = tx.init(jnp.zeros(1))
      >>> for _ in range(2):
      ...     u, state = tx.update(jnp.ones(1), state)
      >>> u.tolist(), float(state.hyperparams["step_size"])
      ([-0.5], -0.5)
    """
    spec = dict(hyperparams)
    # Static (known when building): part of the state's tree structure, never a leaf.
    caller_owned = {
        name: None for name, leaves in spec.items() if any(_given_as_array(leaf) for leaf in jax.tree.leaves(leaves))
    } or None
    for name, leaves in spec.items():  # the constants now; the schedules' values when traced
        for leaf in jax.tree.leaves(leaves):
            if not _is_schedule(leaf):
                _check_scalar(leaf, f"hyperparameter {name!r}")

    def current(count, stored=None):
        values = {}
        for name, leaves in spec.items():
            if stored is None:
                values[name] = jax.tree.map(lambda leaf: _value(leaf, count, name), leaves)
            else:
                _treecheck.check_scalars(stored[name], f"the state's hyperparameter {name!r}")
                values[name] = jax.tree.map(
                    lambda leaf, old: _value(leaf, count, name) if _is_schedule(leaf) or _given_as_array(leaf) else old,
                    leaves,
                    stored[name],
                )
        return values

    def init(params):
        count = jnp.zeros([], jnp.int32)
        values = current(count)
        # Scalars live where the parameters live (replicated over their devices).
        count, values = _numerics.replicate_over_params((count, values), params)
        return InjectHyperparamsState(count, values, build(**values).init(params), caller_owned)

    def update(updates, state, params=None, **extra_args):
        # Checked while tracing (structures, shapes and dtypes are static): free at run time.
        if params is not None:
            _treecheck.check_updates(updates, params)
        else:
            _treecheck.check_against_state(updates, state.inner_state)
        _treecheck.check_scalars(state.count, "the state's count")
        values = current(state.count, state.hyperparams)
        updates, inner_state = build(**values).update(
            updates, state.inner_state, params, **extra_args
        )
        count = state.count + jnp.ones([], state.count.dtype)
        return updates, InjectHyperparamsState(count, values, inner_state, caller_owned)

    return GradientTransformation(init, update)


class _Found(NamedTuple):
    """An :class:`InjectHyperparamsState` found inside a larger state."""

    key_path: tuple  # jax keys from the root of the state to it
    group: Any  # the group it belongs to (an int or a label), or None
    state: InjectHyperparamsState
    optax_owner: tuple | None  # key path of an enclosing optax.inject_hyperparams state

    @property
    def where(self) -> str:
        return _paths.path_string(self.key_path)

    def describe(self) -> str:
        at = f"at {self.where!r}" if self.key_path else "at the root"
        return at if self.group is None else f"group {self.group!r} {at}"


def _is_group_container(node) -> bool:
    """gradxform's :class:`~gradxform.ParamGroupsState` or optax's ``PartitionState``
    (``optax.multi_transform`` / ``optax.partition``): their ``inner_states`` are groups."""
    kind = type(node)
    if kind.__name__ == "ParamGroupsState" and kind.__module__ == "gradxform.groups":
        return True
    return kind.__name__ == "PartitionState" and kind.__module__.startswith("optax")


def _is_optax_inject(node) -> bool:
    """The state of ``optax.inject_hyperparams``, which owns the hyperparameters it passes."""
    kind = type(node)
    return kind.__module__.startswith("optax") and kind.__name__ in (
        "InjectStatefulHyperparamsState",
        "InjectHyperparamsState",
    )


def _find(node, key_path=(), group=None, owner=None):
    """Yields every :class:`InjectHyperparamsState` inside ``node``, depth first.

    Any pytree is searched: tuples, lists, dicts, NamedTuples, optax's wrapper states,
    flax and equinox containers; a found state's ``inner_state`` is searched too.
    """
    if isinstance(node, InjectHyperparamsState):
        yield _Found(key_path, group, node, owner)
        yield from _find(node.inner_state, key_path + (jax.tree_util.GetAttrKey("inner_state"),), group, owner)
        return
    if _is_group_container(node):
        base = key_path + (jax.tree_util.GetAttrKey("inner_states"),)
        for key, child in _paths.children(node.inner_states):
            yield from _find(child, base + (key,), _paths.key_value(key), owner)
        return
    if _is_optax_inject(node):
        owner = key_path
    for key, child in _paths.children(node):
        yield from _find(child, key_path + (key,), group, owner)


def _select(state, group, path) -> list[_Found]:
    """The hyperparameter states of ``state``, narrowed to ``group`` and ``path``."""
    found = list(_find(state))
    if not found:
        raise ValueError(
            "this state holds no hyperparameters (none of gradxform's): build the transformation with a "
            "gradxform optimizer (gradxform.adam, ...), gradxform.param_groups or "
            "gradxform.inject_hyperparams (optax.inject_hyperparams keeps its own state, "
            "read it as state.hyperparams)"
        )
    chosen = found
    if group is not None:
        chosen = [
            f
            for f in chosen
            if f.group is not None and f.group == group and isinstance(f.group, bool) == isinstance(group, bool)
        ]
    if path is not None:
        prefix = str(path).strip("/")
        chosen = [f for f in chosen if f.where == prefix or f.where.startswith(prefix + "/") or not prefix]
    if not chosen:
        asked = " and ".join(
            part for part in (
                None if group is None else f"group={group!r}",
                None if path is None else f"path={path!r}",
            ) if part
        )
        raise ValueError(
            f"no hyperparameters match {asked}; this state holds: "
            + "; ".join(f.describe() for f in found)
        )
    return chosen


def get_hyperparams(state, *, group=None, path=None) -> dict[str, Any]:
    """The hyperparameters of an optimizer state, as a ``dict`` of scalar arrays.

    The state may be a gradxform optimizer's, or any state that holds one: gradxform's
    ``chain``, :func:`gradxform.param_groups`, :func:`gradxform.skip_non_finite`,
    :func:`gradxform.accumulate`, optax's ``chain``, ``multi_transform``, ``masked``,
    ``MultiSteps``, flax's and equinox's containers.

    Args:
      state: the state.
      group: with several sets of hyperparameters, the group to read: the index of a
        :func:`gradxform.param_groups` group (the label, with ``labels=``), or the label of
        an ``optax.multi_transform`` group.
      path: the location of the state to read, as ``"a/b/c"`` (the names the error
        message lists); a location also selects everything under it.

    Raises:
      ValueError: when the state holds no hyperparameters, or more than one set matches
        (the message lists each set's group and path).

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> state = gradxform.adam(1e-3).init(jnp.zeros(3))
      >>> float(gradxform.get_hyperparams(state)["learning_rate"])
      0.001
    """
    chosen = _select(state, group, path)
    if len(chosen) > 1:
        raise ValueError(
            f"this state holds {len(chosen)} sets of hyperparameters ("
            + "; ".join(f.describe() for f in chosen)
            + "); pass group= or path= to choose one"
        )
    return dict(chosen[0].state.hyperparams)


def _new_value(name, old, value):
    """``value`` with the tree, dtypes, shapes and placement of the stored ``old``."""
    old_leaves, treedef = jax.tree.flatten(old)
    new_leaves = jax.tree.leaves(value)
    if len(new_leaves) != len(old_leaves):
        raise ValueError(f"{name} has {len(old_leaves)} value(s), got {len(new_leaves)}: {value!r}")
    return treedef.unflatten(
        [
            _numerics.like_param(jnp.array(n, dtype=jnp.result_type(o), copy=True).reshape(jnp.shape(o)), o)
            for n, o in zip(new_leaves, old_leaves)
        ]
    )


def set_hyperparams(state, *, group=None, path=None, **values) -> Any:
    """Returns ``state`` with some hyperparameters replaced.

    Values keep the stored dtype and structure, so a jitted update is not recompiled.
    A hyperparameter that follows a schedule is recomputed at the next update. One given
    as a JAX array when the transformation was built belongs to its builder: it is
    refused, except inside ``optax.inject_hyperparams``, whose copy is changed as well.

    When the state holds several sets of hyperparameters (param groups, an
    ``optax.multi_transform``, a chain of optimizers), every set that ``group`` and
    ``path`` select is changed: by default all of them, as torch's
    ``for g in optimizer.param_groups: g["lr"] = ...``. Each selected set must have each
    name: a feature given as the number 0 (``weight_decay=0.0``) is left out of its
    transformation, and setting it there raises rather than doing nothing.

    Args:
      state: the state (see :func:`get_hyperparams` for where it is searched).
      group: change only this group (as in :func:`get_hyperparams`).
      path: change only the set(s) at or under this location.
      **values: ``name=value``; a tuple for a tuple hyperparameter (``betas``).

    Raises:
      KeyError: for a name that a selected set does not have (the message says which).
      ValueError: for a value whose structure differs (``betas`` needs two values), when
        ``group``/``path`` select nothing, or for a hyperparameter the transformation was
        built with as a JAX array (each update uses that array; see the module's
        docstring), unless an enclosing ``optax.inject_hyperparams`` passes it, in which
        case optax's copy is changed too. Nothing is changed when it raises.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> state = gradxform.sgd(0.1).init(jnp.zeros(3))
      >>> state = gradxform.set_hyperparams(state, learning_rate=0.01)
      >>> float(gradxform.get_hyperparams(state)["learning_rate"])
      0.01
    """
    chosen = _select(state, group, path)
    for name in values:
        lacking = [f for f in chosen if name not in f.state.hyperparams]
        if not lacking:
            continue
        if len(chosen) == 1:
            raise KeyError(
                f"unknown hyperparameter {name!r}; this optimizer has {sorted(chosen[0].state.hyperparams)}"
            )
        where = "; ".join(f"{f.describe()} has {sorted(f.state.hyperparams)}" for f in lacking)
        raise KeyError(
            f"unknown hyperparameter {name!r} in {len(lacking)} of the {len(chosen)} sets of "
            f"hyperparameters: {where}. Pass group= or path= to change only the others (a "
            "feature given as the number 0, such as weight_decay=0.0, is left out of its optimizer)"
        )
    for found in chosen:
        _check_not_caller_owned(state, found, values)
    for found in chosen:
        current = _paths_get(state, found.key_path)
        hyperparams = dict(current.hyperparams)
        for name, value in values.items():
            hyperparams[name] = _new_value(name, hyperparams[name], value)
        state = _paths.replace_at(state, found.key_path, current._replace(hyperparams=hyperparams))
        if found.optax_owner is not None:
            # optax.inject_hyperparams passes its own copy at every update: change it too.
            owner = _paths_get(state, found.optax_owner)
            theirs = dict(owner.hyperparams)
            for name, value in values.items():
                if name in theirs:
                    theirs[name] = _new_value(name, theirs[name], value)
            state = _paths.replace_at(state, found.optax_owner, owner._replace(hyperparams=theirs))
    return state


def _check_not_caller_owned(state, found: _Found, values) -> None:
    """Refuses to set a hyperparameter that the transformation was given as a JAX array
    (each update would overwrite it), unless an enclosing ``optax.inject_hyperparams``
    state holds the copy that it passes (which :func:`set_hyperparams` changes too)."""
    owned = found.state.caller_owned or {}
    theirs = {} if found.optax_owner is None else _paths_get(state, found.optax_owner).hyperparams
    for name in values:
        if name in owned and name not in theirs:
            raise ValueError(
                f"cannot set {name!r} {found.describe()}: the transformation was built with a JAX "
                f"array for it, and each update uses that array (a value set here would be "
                f"overwritten at the next update). Give {name} as a Python number when building "
                "it (the state then owns the value and set_hyperparams changes it), or change "
                "the array you pass (with optax.inject_hyperparams, its state's hyperparams)"
            )


def _paths_get(tree, key_path):
    """The node of ``tree`` at ``key_path``."""
    for key in key_path:
        tree = dict(_paths.children(tree))[key]
    return tree

"""Checks that updates match the parameters they are for, made when ``update`` is traced.

Tree structures, shapes and dtypes are static under ``jax.jit``, so these checks run
once, while tracing, and cost nothing in the compiled step. A mismatch raises
``ValueError`` naming the offending path (``['layer1']['w']``, as
``jax.tree_util.keystr`` writes it) before any state is touched.

Dtype *kinds* are compared, not dtypes: a float32 gradient for a bfloat16 parameter is
fine (mixed precision), a complex gradient for a real parameter, or an integer or
boolean gradient for anything, is not.
"""

from __future__ import annotations

import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Fields of the optimizers' per-parameter states that have each parameter's shape (and a
# dtype of its kind): with no ``params`` given to ``update``, the first of them found in
# the state stands for the parameters.
_PARAMETER_SHAPED = ("exp_avg", "momentum_buffer", "sum", "square_avg", "prev", "ax")


def sparse_module():
    """``jax.experimental.sparse`` if something imported it, else ``None``.

    A sparse array exists only once that module is imported, so checking for one never
    needs to import it: gradxform does not, since importing it costs every process about
    18 MB of memory (it pulls in scipy), a tenth of ``import jax`` alone.

    >>> import jax.experimental.sparse
    >>> sparse_module() is jax.experimental.sparse
    True
    """
    return sys.modules.get("jax.experimental.sparse")


def is_sparse(x, kind: str = "JAXSparse") -> bool:
    """Whether ``x`` is an instance of ``jax.experimental.sparse``'s class ``kind``
    (any sparse array by default, ``"BCOO"`` for BCOO arrays), without importing it."""
    sparse = sparse_module()
    return sparse is not None and isinstance(x, getattr(sparse, kind))


def _is_leaf(x) -> bool:
    return is_sparse(x, "BCOO")


def _kind(dtype) -> str:
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return "complex"
    if jnp.issubdtype(dtype, jnp.floating):
        return "real floating"
    if jnp.issubdtype(dtype, jnp.bool_):
        return "boolean"
    return "integer"


def _describe(x) -> str:
    if _is_leaf(x):
        return f"a sparse array of shape {tuple(x.shape)} and dtype {jnp.dtype(x.dtype).name}"
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"shape {tuple(np.shape(x))} and dtype {jnp.dtype(x.dtype).name}"
    return f"a {type(x).__name__}"


def _structure_error(updates, reference, what: str, given: tuple[str, str] = ("the updates", "have")) -> str:
    """Where two trees of different structure first differ, in words.

    ``given`` names ``updates`` in the message: its subject and verb.
    """
    subject, verb = given
    given = [(jax.tree_util.keystr(p), x) for p, x in jax.tree_util.tree_flatten_with_path(updates, is_leaf=_is_leaf)[0]]
    expected = [
        (jax.tree_util.keystr(p), x) for p, x in jax.tree_util.tree_flatten_with_path(reference, is_leaf=_is_leaf)[0]
    ]
    given_paths = {p for p, _ in given}
    expected_paths = {p for p, _ in expected}
    for path, _ in expected:
        if path not in given_paths:
            return f"{subject} {verb} no leaf at {path or 'the root'}, which the {what} have"
    for path, _ in given:
        if path not in expected_paths:
            return f"{subject} {verb} a leaf at {path or 'the root'}, which the {what} do not"
    return (
        f"{subject} {verb} the leaves of the {what} but another tree structure: "
        f"{jax.tree.structure(updates, is_leaf=_is_leaf)} instead of {jax.tree.structure(reference, is_leaf=_is_leaf)}"
    )


def check_updates(
    updates: Any, reference: Any, what: str = "parameters", *, check_dtype: bool = True, check_shape: bool = True
) -> None:
    """Raises ``ValueError`` unless ``updates`` has the tree, shapes and dtype kinds of ``reference``.

    Args:
      updates: the pytree given to ``update`` (dense arrays, or sparse BCOO leaves).
      reference: the parameters (or a state buffer shaped like them).
      what: how the message names ``reference``.
      check_dtype: compare dtype kinds too (off when ``reference`` is a state buffer,
        whose dtype may be ``state_dtype``). Integer and boolean updates are refused
        either way.
      check_shape: compare shapes too (off when ``reference`` holds per-leaf scalars).
    """
    prefix = f"updates do not match the {what}: "
    if jax.tree.structure(updates, is_leaf=_is_leaf) != jax.tree.structure(reference, is_leaf=_is_leaf):
        raise ValueError(prefix + _structure_error(updates, reference, what))
    paths = jax.tree_util.tree_flatten_with_path(reference, is_leaf=_is_leaf)[0]
    for (path, expected), given in zip(paths, jax.tree.leaves(updates, is_leaf=_is_leaf)):
        where = jax.tree_util.keystr(path) or "the root"
        if not (hasattr(given, "shape") and hasattr(given, "dtype")):
            raise ValueError(prefix + f"at {where} the update is {_describe(given)}, not an array")
        if not hasattr(expected, "shape"):
            continue
        bad_shape = check_shape and tuple(np.shape(given)) != tuple(np.shape(expected))
        given_kind = _kind(given.dtype)
        bad_kind = given_kind in ("integer", "boolean") or (check_dtype and given_kind != _kind(expected.dtype))
        if bad_shape or bad_kind:
            raise ValueError(
                prefix + f"at {where} the {what[:-1] if what.endswith('s') else what} has "
                f"{_describe(expected)}, the update has {_describe(given)}"
            )


def _fields(state):
    """``(name, value)`` of the NamedTuple fields in nested tuples of states."""
    if hasattr(state, "_fields"):
        for name in state._fields:
            yield name, getattr(state, name)
    elif isinstance(state, (tuple, list)):
        for sub in state:
            yield from _fields(sub)


def check_against_state(updates: Any, inner_state: Any) -> None:
    """With no ``params``: checks ``updates`` against the per-parameter state, if it has one.

    The first parameter-shaped buffer (``exp_avg``, ``momentum_buffer``, ...) gives the tree, shapes and dtype kinds;
    failing that, per-leaf ``step`` counters give the tree, or Adafactor's ``variance``
    and ``row_var`` (one of them per parameter). A state that holds none of them
    (SGD without momentum keeps nothing) checks nothing.
    """
    fields: dict[str, Any] = {}
    for name, value in _fields(inner_state):
        if value is not None:
            fields.setdefault(name, value)
    for name in _PARAMETER_SHAPED:
        if name in fields:
            check_updates(updates, fields[name], "parameters")
            return
    step = fields.get("step")
    if step is not None and not jax.tree_util.treedef_is_leaf(jax.tree.structure(step)):
        check_updates(updates, step, "parameters", check_dtype=False, check_shape=False)
    elif "variance" in fields and "row_var" in fields:
        # Adafactor's: each parameter has a variance (vectors) or factors (matrices).
        entries = jax.tree.map(
            lambda variance, row: None if variance is None and row is None else 0,
            fields["variance"],
            fields["row_var"],
            is_leaf=lambda x: x is None,
        )
        check_updates(updates, entries, "parameters", check_dtype=False, check_shape=False)


# -- the optimizer state --------------------------------------------------------------

_STATE_PREFIX = "the optimizer state does not match the updates: "
_STATE_HINT = " (a state built or restored for other parameters?)"


def state_buffer_error(path, name: str, buffer, expected_shape, update) -> ValueError:
    """The error for a state buffer ``name`` at ``path`` whose shape is not ``expected_shape``
    (``None``: no buffer is expected there)."""
    where = jax.tree_util.keystr(path) if isinstance(path, tuple) else path
    given = "no buffer" if buffer is None else _describe(buffer)
    expected = "no buffer" if expected_shape is None else f"shape {tuple(expected_shape)}"
    return ValueError(
        _STATE_PREFIX + f"at {where or 'the root'} the update has {_describe(update)}, the state's "
        f"{name} has {given} where {expected} is expected" + _STATE_HINT
    )


def check_state(updates: Any, state: Any, *, like: tuple[str, ...] = (), scalars: tuple[str, ...] = ("step",)) -> None:
    """Raises ``ValueError`` unless the per-parameter fields of ``state`` match ``updates``.

    Made while ``update`` is traced (shapes are static), so it costs nothing at run time.
    Without it, a buffer whose shape broadcasts against its parameter's (an ``exp_avg``
    of shape ``(1, 3)`` for a ``(3,)`` parameter, a ``step`` of shape ``(1,)``) would
    silently reshape the update, and then the parameter.

    Args:
      updates: the update tree (dense or sparse BCOO leaves), with the parameters' shapes.
      state: a NamedTuple state.
      like: the fields holding one buffer per parameter, of its shape, and complex for
        a complex parameter. A field that is ``None`` (an option that is off) is skipped.
      scalars: the fields holding scalar state: one scalar (shape ``()``) for all the
        parameters (the shared form), or one per parameter (a tree like ``updates``).
    """
    for name in like + scalars:
        tree = getattr(state, name)
        if tree is None:
            continue
        if name in scalars and jax.tree_util.treedef_is_leaf(jax.tree.structure(tree, is_leaf=_is_leaf)):
            # The shared form: one scalar for every leaf (per-leaf scalars, a tree, are
            # checked leaf by leaf below; for a single-array update both forms coincide).
            if not hasattr(tree, "shape") or tuple(np.shape(tree)) != ():
                raise ValueError(
                    _STATE_PREFIX + f"the state's {name} is {_describe(tree)} where one scalar (shape ()) "
                    "for all the leaves, or a tree of scalars like the updates, is expected" + _STATE_HINT
                )
            continue
        if jax.tree.structure(tree, is_leaf=_is_leaf) != jax.tree.structure(updates, is_leaf=_is_leaf):
            raise ValueError(
                _STATE_PREFIX + _structure_error(tree, updates, "updates", given=(f"the state's {name}", "has"))
                + _STATE_HINT
            )
        paths = jax.tree_util.tree_flatten_with_path(updates, is_leaf=_is_leaf)[0]
        for (path, update), buffer in zip(paths, jax.tree.leaves(tree, is_leaf=_is_leaf)):
            if not hasattr(buffer, "shape"):
                raise ValueError(
                    _STATE_PREFIX + f"at {jax.tree_util.keystr(path) or 'the root'} the state's {name} is "
                    f"{_describe(buffer)}, not an array" + _STATE_HINT
                )
            expected = () if name in scalars else tuple(update.shape)
            if tuple(np.shape(buffer)) != expected:
                raise state_buffer_error(path, name, buffer, expected, update)
            if name in like and jnp.iscomplexobj(buffer) != (_kind(update.dtype) == "complex"):
                raise ValueError(
                    _STATE_PREFIX + f"at {jax.tree_util.keystr(path) or 'the root'} the update has "
                    f"{_describe(update)}, the state's {name} has {_describe(buffer)}: a complex "
                    "parameter needs complex buffers, a real one real buffers" + _STATE_HINT
                )


def check_scalars(values: Any, what: str) -> None:
    """Raises ``ValueError`` unless every leaf of ``values`` is a scalar (shape ``()``).

    ``what`` names the tree in the message (``"the state's hyperparameter 'learning_rate'"``);
    a NamedTuple's fields are named as ``.scale``.
    """
    for path, leaf in jax.tree_util.tree_flatten_with_path(values)[0]:
        shape = tuple(np.shape(leaf))
        if shape != ():
            where = jax.tree_util.keystr(path)
            raise ValueError(
                f"{what}{where and ' at ' + where} has shape {shape} where a scalar (shape ()) is "
                "expected; another shape would broadcast the updates, and so the parameters"
            )

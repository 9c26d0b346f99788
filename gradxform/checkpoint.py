"""Saving optimizer states: with ``numpy.savez`` (a flatten/unflatten pair) and orbax.

:func:`to_numpy_dict` turns any nested structure of dicts, lists, tuples and NamedTuples
holding arrays (a gradxform optimizer state, or a ``torch_compat`` ``state_dict()``) into
a flat ``dict[str, numpy.ndarray]`` that ``numpy.savez`` writes. :func:`from_numpy_dict`
rebuilds the same structure, with the same types (NamedTuple classes included), dtypes
(bfloat16 included) and values, bit for bit.

The format (what ``numpy.load`` shows):

* one entry per array leaf, named by its path: dict keys, NamedTuple field names and
  list/tuple indices joined with ``/`` (``"inner_state/0/exp_avg/w"``), or ``"root"``
  when the whole tree is one array. A name already taken (a key holding ``/``) gets a
  suffix ``~1``, ``~2``, ... so that no leaf overwrites another;
* an array of a dtype that the ``.npy`` format cannot describe (``bfloat16`` and the
  other ``ml_dtypes`` types: float8, int4, ...) is stored as the unsigned integers of
  the same width and shape holding its bits, and reinterpreted on load;
* an entry ``"__skeleton__"``: a ``uint8`` array holding a pickle of the tree with each
  array replaced by a small reference (entry name, dtype, and whether it was a JAX
  array). Everything that is not an array (the containers and their types, Python
  numbers, strings, ``None``) lives there, exactly as :mod:`pickle` keeps it.

Arrays come back as JAX arrays if they were JAX arrays (on the default device), and as
numpy arrays otherwise. As with any pickle, load only files you trust.

For orbax-checkpoint, :func:`to_orbax` and :func:`from_orbax` bridge the one thing orbax
refuses: arrays with no elements (:class:`~gradxform.FlattenState` keeps its layout in
``[0, size]`` arrays). Restore with the abstract state ``jax.eval_shape(tx.init,
params)`` as the target, so that orbax rebuilds the NamedTuple types rather than dicts
and lists (the checkpoint guide has the whole recipe).

Example:
  >>> import io, numpy as np, jax.numpy as jnp, gradxform
  >>> state = gradxform.adam(1e-3).init({"w": jnp.ones(3)})
  >>> buffer = io.BytesIO()
  >>> np.savez(buffer, **gradxform.checkpoint.to_numpy_dict(state))
  >>> _ = buffer.seek(0)
  >>> restored = gradxform.checkpoint.from_numpy_dict(dict(np.load(buffer)))
  >>> type(restored).__name__, restored.hyperparams["learning_rate"].dtype == state.hyperparams["learning_rate"].dtype
  ('InjectHyperparamsState', True)
"""

from __future__ import annotations

import copy
import pickle
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["from_numpy_dict", "from_orbax", "to_numpy_dict", "to_orbax"]

_SKELETON = "__skeleton__"


class _ArrayRef:
    """Placeholder for an array in the pickled skeleton."""

    def __init__(self, name: str, dtype: str, is_jax: bool):
        self.name, self.dtype, self.is_jax = name, dtype, is_jax


def _is_array(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray))


def _storable(array: np.ndarray) -> np.ndarray:
    """``array``, or its bits as unsigned ints of the same shape if ``.npy`` can't hold its dtype."""
    if array.dtype.kind != "V":  # ml_dtypes (bfloat16, float8_*, int4, ...) are "V" to numpy
        return array
    return array.view(np.dtype(f"u{array.dtype.itemsize}"))  # same width: any shape, any strides


def _rebuild_dict(node: dict, items: dict) -> dict:
    if type(node) is dict:
        return items
    new = copy.copy(node)  # keeps a defaultdict's factory, an OrderedDict's type
    new.clear()
    new.update(items)
    return new


def to_numpy_dict(tree: Any) -> dict[str, np.ndarray]:
    """Flattens ``tree`` into ``{name: numpy array}`` for ``numpy.savez``.

    Args:
      tree: nested dicts, lists, tuples and NamedTuples whose leaves are arrays (JAX or
        numpy) or any picklable Python value.

    Returns:
      One numpy array per array leaf, named by its path, plus ``"__skeleton__"`` (the
      structure, pickled): the format is described in :mod:`gradxform.checkpoint`.

    Example:
      >>> import jax.numpy as jnp
      >>> from gradxform import checkpoint
      >>> flat = checkpoint.to_numpy_dict({"w": jnp.ones(2, jnp.bfloat16), "step": 3})
      >>> sorted(flat), flat["w"].dtype.name
      (['__skeleton__', 'w'], 'uint16')
      >>> back = checkpoint.from_numpy_dict(flat)
      >>> back["w"].dtype.name, back["step"]
      ('bfloat16', 3)
    """
    arrays: dict[str, np.ndarray] = {}

    def entry_name(path) -> str:
        base = "/".join(path) or "root"
        name, suffix = base, 0
        while name in arrays or name == _SKELETON:
            suffix += 1
            name = f"{base}~{suffix}"
        return name

    def walk(node, path):
        if _is_array(node):
            name = entry_name(path)
            array = np.asarray(node)
            arrays[name] = _storable(array)
            # ml_dtypes are known by name; others by their full description (byte order too).
            dtype = array.dtype.name if array.dtype.kind == "V" else array.dtype.str
            return _ArrayRef(name, dtype, isinstance(node, jax.Array))
        if isinstance(node, dict):
            return _rebuild_dict(node, {k: walk(v, path + (str(k),)) for k, v in node.items()})
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            return type(node)(*(walk(v, path + (f,)) for f, v in zip(node._fields, node)))
        if isinstance(node, (list, tuple)):
            return type(node)(walk(v, path + (str(i),)) for i, v in enumerate(node))
        return node

    skeleton = walk(tree, ())
    arrays[_SKELETON] = np.frombuffer(pickle.dumps(skeleton), dtype=np.uint8)
    return arrays


def from_numpy_dict(flat: dict[str, np.ndarray]) -> Any:
    """Rebuilds what :func:`to_numpy_dict` flattened.

    Args:
      flat: the dict :func:`to_numpy_dict` made, or what ``numpy.load`` reads back from
        the file ``numpy.savez`` wrote (``dict(numpy.load(path))``).

    Returns:
      The tree, with its container types, dtypes and values. JAX arrays come back as JAX
      arrays (on the default device), numpy arrays as numpy arrays.

    Raises:
      ValueError: for a JAX array whose dtype JAX cannot make in this process (a float64
        state saved with ``jax_enable_x64`` on, loaded with it off): load it with the
        setting it was saved with.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from gradxform import checkpoint
      >>> back = checkpoint.from_numpy_dict(checkpoint.to_numpy_dict((jnp.zeros(2), np.ones(1), None)))
      >>> [type(x).__name__ for x in back]
      ['ArrayImpl', 'ndarray', 'NoneType']
    """
    skeleton = pickle.loads(np.asarray(flat[_SKELETON]).tobytes())

    def walk(node):
        if isinstance(node, _ArrayRef):
            array = np.asarray(flat[node.name])
            dtype = jnp.dtype(node.dtype)
            if array.dtype != dtype:
                array = array.view(dtype)
            if not node.is_jax:
                return array
            restored = jnp.asarray(array)
            if restored.dtype != dtype:
                raise ValueError(
                    f"checkpoint entry {node.name!r} was saved as a {dtype} JAX array, which "
                    f"JAX makes {restored.dtype} here: load it with jax_enable_x64 set as when "
                    "it was saved"
                )
            return restored
        if isinstance(node, dict):
            return _rebuild_dict(node, {k: walk(v) for k, v in node.items()})
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            return type(node)(*(walk(v) for v in node))
        if isinstance(node, (list, tuple)):
            return type(node)(walk(v) for v in node)
        return node

    return walk(skeleton)


def _is_empty(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct)) and int(np.prod(x.shape)) == 0


def to_orbax(tree: Any) -> Any:
    """``tree`` with every zero-size array replaced by ``None``, which orbax can save.

    orbax-checkpoint refuses to save arrays with no elements; the only ones in gradxform
    states are :class:`~gradxform.FlattenState`'s ``layout``. Apply this to the state
    when saving and to the target when restoring, then :func:`from_orbax` to the result.
    It works on abstract trees (``jax.ShapeDtypeStruct`` leaves) too.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> state = gradxform.flatten(gradxform.sgd(0.1)).init({"w": jnp.ones(3)})
      >>> state.layout[0].shape, gradxform.checkpoint.to_orbax(state).layout
      ((0, 3), (None,))
    """
    return jax.tree.map(lambda x: None if _is_empty(x) else x, tree)


def from_orbax(restored: Any, target: Any) -> Any:
    """Puts back the zero-size arrays that :func:`to_orbax` removed.

    Args:
      restored: what orbax restored, with ``to_orbax(target)`` as its target.
      target: the full abstract state, e.g. ``jax.eval_shape(tx.init, params)``, or a
        state of the same structure.

    Returns:
      ``restored`` with ``target``'s structure (NamedTuple types included), each
      zero-size leaf of ``target`` an empty array of its shape and dtype.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform
      >>> from gradxform import checkpoint
      >>> tx, params = gradxform.flatten(gradxform.sgd(0.1)), {"w": jnp.ones(3)}
      >>> target = jax.eval_shape(tx.init, params)
      >>> back = checkpoint.from_orbax(checkpoint.to_orbax(tx.init(params)), target)
      >>> type(back).__name__, back.layout[0].shape
      ('FlattenState', (0, 3))
    """
    leaves, treedef = jax.tree.flatten(target, is_leaf=lambda x: x is None)
    got = treedef.flatten_up_to(restored)
    return treedef.unflatten(
        [jnp.zeros(t.shape, t.dtype) if _is_empty(t) else r for t, r in zip(leaves, got)]
    )

"""Saving optimizer states with ``numpy.savez``: a flatten/unflatten pair.

:func:`to_numpy_dict` turns any nested structure of dicts, lists, tuples and NamedTuples
holding arrays (a gradxform optimizer state, or a ``torch_compat`` ``state_dict()``) into
a flat ``dict[str, numpy.ndarray]`` that ``numpy.savez`` writes. :func:`from_numpy_dict`
rebuilds the same structure, with the same types (NamedTuple classes included), dtypes
(bfloat16 included) and values, bit for bit.

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

import pickle
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_SKELETON = "__skeleton__"


class _ArrayRef:
    """Placeholder for an array in the pickled skeleton."""

    def __init__(self, name: str, dtype: str, is_jax: bool):
        self.name, self.dtype, self.is_jax = name, dtype, is_jax


def _is_array(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray))


def to_numpy_dict(tree: Any) -> dict[str, np.ndarray]:
    """Flattens ``tree`` into ``{name: numpy array}`` for ``numpy.savez``.

    Arrays become entries; everything else (the structure, NamedTuple types, Python
    numbers, strings, ``None``) is kept in a pickled skeleton entry.
    """
    arrays: dict[str, np.ndarray] = {}

    def walk(node, path):
        if _is_array(node):
            name = "/".join(path) or "root"
            array = np.asarray(node)
            arrays[name] = array.view(np.uint8) if array.dtype.kind == "V" or array.dtype.name in ("bfloat16",) else array
            return _ArrayRef(name, np.dtype(array.dtype).name, isinstance(node, jax.Array))
        if isinstance(node, dict):
            return type(node)({k: walk(v, path + (str(k),)) for k, v in node.items()})
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            return type(node)(*(walk(v, path + (f,)) for f, v in zip(node._fields, node)))
        if isinstance(node, (list, tuple)):
            return type(node)(walk(v, path + (str(i),)) for i, v in enumerate(node))
        return node

    skeleton = walk(tree, ())
    arrays[_SKELETON] = np.frombuffer(pickle.dumps(skeleton), dtype=np.uint8)
    return arrays


def from_numpy_dict(flat: dict[str, np.ndarray]) -> Any:
    """Rebuilds what :func:`to_numpy_dict` flattened (JAX arrays come back as JAX arrays)."""
    skeleton = pickle.loads(np.asarray(flat[_SKELETON]).tobytes())

    def walk(node):
        if isinstance(node, _ArrayRef):
            array = np.asarray(flat[node.name])
            dtype = jnp.dtype(node.dtype)
            if array.dtype != dtype:
                array = array.view(dtype)
            return jnp.asarray(array) if node.is_jax else array
        if isinstance(node, dict):
            return type(node)({k: walk(v) for k, v in node.items()})
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            return type(node)(*(walk(v) for v in node))
        if isinstance(node, (list, tuple)):
            return type(node)(walk(v) for v in node)
        return node

    return walk(skeleton)

"""Pytree paths written as ``"a/b/c"`` strings, and one-level walks over any pytree.

:func:`gradxform.param_groups` matches parameters by such a path, and
:func:`gradxform.get_hyperparams` names the states it finds by one.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.tree_util import DictKey, FlattenedIndexKey, GetAttrKey, SequenceKey


def key_string(key) -> str:
    """One entry of a jax key path as text: a dict key, a sequence index or an attribute name."""
    if isinstance(key, DictKey):
        return str(key.key)
    if isinstance(key, SequenceKey):
        return str(key.idx)
    if isinstance(key, GetAttrKey):
        return key.name
    if isinstance(key, FlattenedIndexKey):
        return str(key.key)
    return str(key)


def path_string(key_path) -> str:
    """A jax key path as ``"a/b/c"`` (``""`` for the root).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from gradxform._paths import path_string
      >>> tree = {"head": {"w": jnp.ones(2)}, "layers": [jnp.ones(1)]}
      >>> [path_string(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
      ['head/w', 'layers/0']
    """
    return "/".join(key_string(k) for k in key_path)


def key_value(key) -> Any:
    """The Python value of one key-path entry (an int index, a dict key, a name)."""
    if isinstance(key, DictKey):
        return key.key
    if isinstance(key, SequenceKey):
        return key.idx
    if isinstance(key, GetAttrKey):
        return key.name
    if isinstance(key, FlattenedIndexKey):
        return key.key
    return key


def children(node) -> list[tuple[Any, Any]]:
    """``(key, child)`` for the direct children of a pytree node (none for a leaf or ``None``)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    if len(flat) == 1 and not flat[0][0] and flat[0][1] is node:
        return []  # a leaf
    return [(path[0], child) for path, child in flat]


def replace_child(node, key, new):
    """``node`` with its direct child at ``key`` replaced by ``new`` (any pytree node type)."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    found = False
    items = []
    for path, child in flat:
        if path and path[0] == key:
            child, found = new, True
        items.append(child)
    if not found:
        raise KeyError(f"no child {key_string(key)!r} in a {type(node).__name__}")
    return jax.tree_util.tree_unflatten(treedef, items)


def replace_at(tree, key_path, new):
    """``tree`` with the node at ``key_path`` (a tuple of jax keys) replaced by ``new``."""
    if not key_path:
        return new
    head, rest = key_path[0], key_path[1:]
    for key, child in children(tree):
        if key == head:
            return replace_child(tree, head, replace_at(child, rest, new))
    raise KeyError(f"no child {key_string(head)!r} in a {type(tree).__name__}")

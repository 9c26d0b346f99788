"""Saving optimizer states safely: ``.npz`` files that hold only data, and orbax.

:func:`save` writes any nested structure of dicts, lists, tuples and NamedTuples holding
arrays (a gradxform optimizer state, a ``torch_compat`` ``state_dict()``, parameters) to
an ``.npz`` file, atomically; :func:`load` reads it back with the same container types
(NamedTuple classes included), dtypes (bfloat16 included) and values, bit for bit.

**Loading never runs code.** The file holds arrays and a JSON description of the tree; no
pickle is written or read, no module named by the file is imported, and NamedTuple
classes are taken only from an allow-list:

* every NamedTuple class defined in gradxform (``ScaleByAdamState``,
  ``InjectHyperparamsState``, ``EmptyState``, ``FlattenState``, ...);
* optax's, when optax is already imported in the process (as it is when the state came
  from ``optax.chain(optax.clip_by_global_norm(1.0), gradxform.adam(1e-3))``): import
  optax before loading. Loading never imports it;
* the classes given to :func:`register_state_type`.

With ``target=`` (the abstract state ``jax.eval_shape(tx.init, params)``, or a state of
the same structure), the containers come from the target and no allow-list is needed;
anything in the file that differs from the target (tree structure, container types,
dict keys, shapes, dtypes) is refused with a ``ValueError`` naming its path.

What a tree may hold (anything else is refused by :func:`save` with a ``TypeError``
naming its path): ``dict`` (keys ``str``, ``int``, ``bool``, ``float``, ``complex`` or
``None``, each restored with its type), ``collections.OrderedDict``,
``collections.defaultdict`` (with no factory, or one of ``list dict set tuple int float
complex str bool OrderedDict``), ``list``, ``tuple``, NamedTuples, ``None``, ``bool``,
``int``, ``float`` and ``complex`` (bit for bit: NaN payloads, infinities and ``-0.0``
included), ``str``, and arrays: JAX arrays, numpy arrays and numpy scalars, each coming
back as what it was (JAX arrays on the default device, or with a target's sharding).

The format (what ``numpy.load`` shows):

* one entry per array, named by its path: dict keys, NamedTuple field names and
  list/tuple indices joined with ``/`` (``"inner_state/0/exp_avg/w"``), or ``"root"``
  when the whole tree is one array. A name already taken (a key holding ``/``) gets a
  suffix ``~1``, ``~2``, ... so that no leaf overwrites another;
* an array of a dtype that the ``.npy`` format cannot describe (``bfloat16`` and the
  other ``ml_dtypes`` types: float8, int4, ...) is stored as the unsigned integers of
  the same width and shape holding its bits, and reinterpreted on load;
* an entry ``"__skeleton__"``: a ``uint8`` array holding UTF-8 JSON,
  ``{"format": "gradxform.checkpoint", "version": 1, "nodes": [...]}``. The nodes form a
  flat table, the root first, each container listing its children by index, so that
  reading and writing need no recursion, however deep the tree. A node is one of
  ``{"type": "dict", "keys": [...], "children": [...]}`` (also ``"OrderedDict"``, and
  ``"defaultdict"`` with ``"default_factory"``), ``{"type": "list"|"tuple",
  "children": [...]}``, ``{"type": "namedtuple", "class": "module.QualName", "fields":
  [...], "children": [...]}``, ``{"type": "array", "entry": name, "dtype": "float32",
  "shape": [3], "kind": "jax"|"numpy"|"numpy_scalar"}``, or a scalar:
  ``{"type": "none"}``, ``{"type": "bool"|"int"|"str", "value": ...}``,
  ``{"type": "float", "bits": "3ff0000000000000"}`` (the IEEE 754 double, as hex),
  ``{"type": "complex", "bits": [real, imag]}``. Dict keys are scalar nodes.

Every array entry is checked against its node: its dtype and shape must be the ones
recorded, and the file must hold exactly the entries the skeleton names; otherwise
``ValueError`` names the path. Files written by gradxform versions that pickled the
skeleton are refused (they are not unpickled).

:func:`to_numpy_dict` and :func:`from_numpy_dict` are the in-memory halves of
:func:`save` and :func:`load`, for writing the entries elsewhere.

For orbax-checkpoint, :func:`to_orbax` and :func:`from_orbax` bridge the one thing orbax
refuses: arrays with no elements (:class:`~gradxform.FlattenState` keeps its layout in
``[0, size]`` arrays). Restore with the abstract state ``jax.eval_shape(tx.init,
params)`` as the target, so that orbax rebuilds the NamedTuple types rather than dicts
and lists (the checkpoint guide has the whole recipe).

Example:
  >>> import os, tempfile, jax, jax.numpy as jnp, gradxform
  >>> tx, params = gradxform.adam(1e-3), {"w": jnp.ones(3)}
  >>> path = os.path.join(tempfile.mkdtemp(), "state.npz")
  >>> gradxform.checkpoint.save(path, tx.init(params))
  >>> restored = gradxform.checkpoint.load(path)
  >>> type(restored).__name__, type(restored.inner_state[0]).__name__
  ('InjectHyperparamsState', 'ScaleByAdamState')
  >>> typed = gradxform.checkpoint.load(path, target=jax.eval_shape(tx.init, params))
  >>> jax.tree.structure(typed) == jax.tree.structure(restored)
  True
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import os
import re
import secrets
import struct
import sys
import zipfile
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

__all__ = ["from_numpy_dict", "from_orbax", "load", "register_state_type", "save", "to_numpy_dict", "to_orbax"]

_SKELETON = "__skeleton__"
_FORMAT = "gradxform.checkpoint"
_VERSION = 1

# The dtypes of ml_dtypes (bfloat16, float8_*, int4, ...): ``.npy`` cannot describe them
# (even those numpy gives a kind "f" or "c"), so they are stored as their bits.
_ML_DTYPES = {
    np.dtype(value).name: np.dtype(value)
    for value in vars(ml_dtypes).values()
    if isinstance(value, type) and issubclass(value, np.generic)
}
# Kinds of the other dtypes kept: bool, ints, floats, complex, datetimes, bytes, text.
_PLAIN_KINDS = "biufcmMSU"
_FACTORIES = {
    name: factory
    for name, factory in (
        ("list", list), ("dict", dict), ("set", set), ("tuple", tuple), ("int", int), ("float", float),
        ("complex", complex), ("str", str), ("bool", bool), ("OrderedDict", collections.OrderedDict),
    )
}
_DICTS = {dict: "dict", collections.OrderedDict: "OrderedDict", collections.defaultdict: "defaultdict"}
_ARRAY_KINDS = ("jax", "numpy", "numpy_scalar")
_SCALAR_TYPES = ("none", "bool", "int", "str", "float", "complex")
_CONTAINER_TYPES = ("list", "tuple", "namedtuple", "dict", "OrderedDict", "defaultdict")

_REGISTERED: dict[str, type] = {}


# ---------------------------------------------------------------------------------------
# NamedTuple types
# ---------------------------------------------------------------------------------------


def _is_namedtuple_class(cls) -> bool:
    return isinstance(cls, type) and issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple)


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_state_type(cls: type) -> type:
    """Allows :func:`load` to rebuild the NamedTuple class ``cls`` from a checkpoint.

    A file names its NamedTuple classes as ``"module.QualName"``; :func:`load` (without a
    target) rebuilds only classes of gradxform, of optax (when optax is imported) and
    those registered here. Registering a class again with the same name (a class defined
    anew in a notebook cell) replaces the earlier one.

    Args:
      cls: a NamedTuple class (from ``typing.NamedTuple`` or
        ``collections.namedtuple``).

    Returns:
      ``cls``, so that this can decorate the class.

    Raises:
      TypeError: if ``cls`` is not a NamedTuple class.

    Example:
      >>> import os, tempfile, typing, numpy as np
      >>> from gradxform import checkpoint
      >>> @checkpoint.register_state_type
      ... class MyState(typing.NamedTuple):
      ...     count: np.ndarray
      >>> path = os.path.join(tempfile.mkdtemp(), "state.npz")
      >>> checkpoint.save(path, MyState(np.zeros(2)))
      >>> type(checkpoint.load(path)).__name__
      'MyState'
    """
    if not _is_namedtuple_class(cls):
        raise TypeError(f"register_state_type takes a NamedTuple class, not {cls!r}")
    _REGISTERED[_type_name(cls)] = cls
    return cls


def _allowed_state_types() -> dict[str, type]:
    """Names of the NamedTuple classes :func:`load` may rebuild, without importing anything.

    The classes defined in the modules of gradxform, and of optax if it is imported,
    found in ``sys.modules`` (reading module dicts, never calling a module's
    ``__getattr__``); then the registered ones.
    """
    allowed: dict[str, type] = {}
    for module_name, module in list(sys.modules.items()):
        if module is None or module_name.partition(".")[0] not in ("gradxform", "optax"):
            continue
        for value in list(vars(module).values()):
            if _is_namedtuple_class(value) and value.__module__ == module_name:
                allowed[_type_name(value)] = value
    allowed.update(_REGISTERED)
    return allowed


def _unknown_type(name: str, where: str) -> ValueError:
    hint = ""
    if name.startswith("optax."):
        hint = "optax's state types are allowed once optax is imported: import optax before loading; "
    return ValueError(
        f"checkpoint holds a NamedTuple of type {name!r} at {where}, which is not an allowed state type "
        f"(gradxform's, optax's when optax is imported, and those given to "
        f"gradxform.checkpoint.register_state_type): {hint}register the class with "
        f"gradxform.checkpoint.register_state_type(cls) before loading, or pass target= (e.g. "
        f"jax.eval_shape(tx.init, params)) to take the containers from it"
    )


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


def _float_bits(value: float) -> str:
    return struct.pack(">d", value).hex()


def _encode_scalar(value) -> dict | None:
    """The node of a Python scalar, or None if ``value`` is not one that is kept."""
    kind = type(value)
    if value is None:
        return {"type": "none"}
    if kind is bool or kind is int or kind is str:
        return {"type": kind.__name__, "value": value}
    if kind is float:
        return {"type": "float", "bits": _float_bits(value)}
    if kind is complex:
        return {"type": "complex", "bits": [_float_bits(value.real), _float_bits(value.imag)]}
    return None


def _path(parents: list, index: int) -> str:
    """``"a/b/c"``: the labels from the root to node ``index`` (``""`` for the root)."""
    labels = []
    while parents[index][0] >= 0:
        index, label = parents[index]
        labels.append(label)
    return "/".join(reversed(labels))


def _where(path: str) -> str:
    return f"path {path!r}" if path else "the root"


def _array_dtype(dtype: np.dtype, where: str) -> tuple[str, np.dtype]:
    """(The dtype's name in the skeleton, the dtype its entry is stored with)."""
    if dtype.name in _ML_DTYPES and _ML_DTYPES[dtype.name] == dtype:
        return dtype.name, np.dtype(f"u{dtype.itemsize}")
    if dtype.kind not in _PLAIN_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise TypeError(
            f"checkpoint cannot store an array of dtype {dtype} at {where}: only numeric, boolean, "
            "datetime, bytes and str dtypes (and the ml_dtypes types) are kept; object and structured "
            "arrays would need pickle"
        )
    # The name when it describes the dtype (byte order included), else numpy's code.
    try:
        same = np.dtype(dtype.name) == dtype
    except TypeError:  # "str64", "bytes16": names numpy does not parse back
        same = False
    return (dtype.name if same else dtype.str), dtype


def to_numpy_dict(tree: Any) -> dict[str, np.ndarray]:
    """Flattens ``tree`` into ``{name: numpy array}``, the entries of a checkpoint file.

    :func:`save` writes these entries; this is the in-memory half, for writing them
    elsewhere. The tree is walked without recursion, so its depth is not limited.

    Args:
      tree: nested dicts, lists, tuples and NamedTuples whose leaves are arrays (JAX or
        numpy), numpy scalars, ``None``, ``bool``, ``int``, ``float``, ``complex`` or
        ``str`` (the types :mod:`gradxform.checkpoint` lists).

    Returns:
      One numpy array per array leaf, named by its path, plus ``"__skeleton__"`` (the
      structure, as JSON): the format is described in :mod:`gradxform.checkpoint`.

    Raises:
      TypeError: naming the path of the first value of another type (a function, an
        object, a dict key that is not a scalar, an object array, ...).

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
    nodes: list[dict] = []
    parents: list[tuple[int, str]] = []  # per node: (parent node, label), for paths
    stack = [(tree, -1, 0, "")]  # (value, parent node, position among its children, label)
    while stack:
        value, parent, position, label = stack.pop()
        index = len(nodes)
        parents.append((parent, label))
        if parent >= 0:
            nodes[parent]["children"][position] = index
        node, children = _encode(value, lambda: _path(parents, index), arrays)
        nodes.append(node)
        # Pushed last first, so that children are numbered in order, after their parent.
        for position in reversed(range(len(children))):
            label, child = children[position]
            stack.append((child, index, position, label))
    document = {"format": _FORMAT, "version": _VERSION, "nodes": nodes}
    arrays[_SKELETON] = np.frombuffer(json.dumps(document, separators=(",", ":")).encode("utf-8"), np.uint8)
    return arrays


def _encode(value, path, arrays: dict) -> tuple[dict, list]:
    """(The node for ``value``, its children as ``(label, child)`` pairs)."""
    scalar = _encode_scalar(value)
    if scalar is not None:
        return scalar, []
    kind = type(value)
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        where = _where(path())
        array = np.asarray(value)
        dtype_name, stored = _array_dtype(array.dtype, where)
        base = path() or "root"
        name, suffix = base, 0
        while name in arrays or name == _SKELETON:
            suffix += 1
            name = f"{base}~{suffix}"
        arrays[name] = array.view(stored) if stored != array.dtype else array
        array_kind = "jax" if isinstance(value, jax.Array) else "numpy" if isinstance(value, np.ndarray) else "numpy_scalar"
        return {"type": "array", "entry": name, "dtype": dtype_name, "shape": list(array.shape), "kind": array_kind}, []
    if kind in _DICTS:
        keys = []
        for key in value:
            encoded = _encode_scalar(key)
            if encoded is None:
                raise TypeError(
                    f"checkpoint cannot store the dict key {key!r} of type {type(key).__name__} at "
                    f"{_where(path())}: keys must be str, int, bool, float, complex or None"
                )
            keys.append(encoded)
        node = {"type": _DICTS[kind], "keys": keys, "children": [None] * len(keys)}
        if kind is collections.defaultdict:
            factory = value.default_factory
            name = next((n for n, f in _FACTORIES.items() if f is factory), None)
            if factory is not None and name is None:
                raise TypeError(
                    f"checkpoint cannot store the defaultdict at {_where(path())}: its default_factory "
                    f"{factory!r} is code; only None and {', '.join(_FACTORIES)} are kept (or convert it "
                    "to a dict)"
                )
            node["default_factory"] = name
        return node, [(str(k), v) for k, v in value.items()]
    if _is_namedtuple_class(kind):
        node = {"type": "namedtuple", "class": _type_name(kind), "fields": list(kind._fields),
                "children": [None] * len(value)}
        return node, list(zip(kind._fields, value))
    if kind is list or kind is tuple:
        return {"type": kind.__name__, "children": [None] * len(value)}, [(str(i), v) for i, v in enumerate(value)]
    raise TypeError(
        f"checkpoint cannot store a {kind.__module__}.{kind.__qualname__} at {_where(path())}: only dicts "
        "(and OrderedDict, defaultdict), lists, tuples, NamedTuples, arrays, numpy scalars, None, bool, "
        "int, float, complex and str are kept"
    )


# ---------------------------------------------------------------------------------------
# Reading the skeleton
# ---------------------------------------------------------------------------------------

_HEX16 = re.compile(r"[0-9a-f]{16}")


class _Malformed(ValueError):
    pass


def _malformed(what: str) -> _Malformed:
    return _Malformed(f"malformed checkpoint skeleton: {what}")


def _decode_float(bits) -> float:
    if not isinstance(bits, str) or not _HEX16.fullmatch(bits):
        raise _malformed(f"float bits {bits!r} are not 16 hex digits")
    return struct.unpack(">d", bytes.fromhex(bits))[0]


def _decode_scalar(node: dict, what: str):
    """The Python value of scalar node ``node`` (already known to be a dict)."""
    kind = node.get("type")
    if kind == "none":
        return None
    if kind in ("bool", "int", "str"):
        value = node.get("value")
        if type(value).__name__ != kind:
            raise _malformed(f"{what}: a {kind} node holds {value!r}")
        return value
    if kind == "float":
        return _decode_float(node.get("bits"))
    if kind == "complex":
        bits = node.get("bits")
        if not isinstance(bits, list) or len(bits) != 2:
            raise _malformed(f"{what}: complex bits {bits!r}")
        return complex(_decode_float(bits[0]), _decode_float(bits[1]))
    raise _malformed(f"{what}: {kind!r} is not a scalar type")


def _parse_dtype(name, what: str) -> tuple[np.dtype, np.dtype]:
    """(The array's dtype, its entry's dtype) for the dtype recorded as ``name``."""
    if not isinstance(name, str):
        raise _malformed(f"{what}: dtype {name!r}")
    if name in _ML_DTYPES:
        dtype = _ML_DTYPES[name]
        return dtype, np.dtype(f"u{dtype.itemsize}")
    try:
        dtype = np.dtype(name)  # parses the text; never runs code
    except (TypeError, ValueError):
        raise _malformed(f"{what}: dtype {name!r}") from None
    if dtype.kind not in _PLAIN_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise _malformed(f"{what}: dtype {name!r} is not one that checkpoints hold")
    return dtype, dtype


def _children(node: dict, index: int, count: int) -> list:
    children = node.get("children")
    if not isinstance(children, list) or any(type(c) is not int or not index < c < count for c in children):
        raise _malformed(f"node {index}: children must be indices of later nodes")
    return children


def _read_skeleton(flat: Mapping) -> list[dict]:
    """The validated node table, each node a dict with the decoded ``"children"``,
    ``"labels"`` (keys decoded as ``"key_values"``) and ``"parent"``."""
    if _SKELETON not in flat:
        raise ValueError(f"not a gradxform checkpoint: it has no {_SKELETON!r} entry")
    raw = np.asarray(flat[_SKELETON])
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise _malformed(f"the {_SKELETON!r} entry is a {raw.dtype} array of shape {raw.shape}, not uint8 bytes")
    data = raw.tobytes()
    try:
        document = json.loads(data.decode("utf-8"), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except (UnicodeDecodeError, ValueError, RecursionError):
        document = None
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        older = " (it looks like a pickle)" if data[:1] == b"\x80" else ""
        raise ValueError(
            f"checkpoint's {_SKELETON!r} entry is not the JSON this gradxform writes{older}. Files "
            "written by older gradxform versions held a pickled skeleton, which is never loaded, as "
            "unpickling can run any code: if you trust such a file, load it with the gradxform version "
            "that wrote it and save it again with this one"
        )
    version, nodes = document.get("version"), document.get("nodes")
    if type(version) is not int or version > _VERSION:
        raise ValueError(f"checkpoint format version {version!r}: this gradxform reads version {_VERSION} and older")
    if not isinstance(nodes, list) or not nodes:
        raise _malformed("no nodes")

    count = len(nodes)
    parents: list = [None] * count
    parents[0] = (-1, "")
    entries: set = set()
    for index, node in enumerate(nodes):
        what = f"node {index}"
        if not isinstance(node, dict):
            raise _malformed(f"{what} is not an object")
        kind = node.get("type")
        if kind in _SCALAR_TYPES:
            node["value_"] = _decode_scalar(node, what)
            continue
        if kind == "array":
            entry, shape = node.get("entry"), node.get("shape")
            if not isinstance(entry, str) or entry == _SKELETON or entry in entries:
                raise _malformed(f"{what}: entry {entry!r} (each array has its own)")
            entries.add(entry)
            node["dtype_"], node["stored_"] = _parse_dtype(node.get("dtype"), what)
            if not isinstance(shape, list) or any(type(n) is not int or n < 0 for n in shape):
                raise _malformed(f"{what}: shape {shape!r}")
            array_kind = node.get("kind")
            if array_kind not in _ARRAY_KINDS or (array_kind == "numpy_scalar" and shape):
                raise _malformed(f"{what}: array kind {array_kind!r}")
            if array_kind == "jax" and node["dtype_"].kind not in "biufc" and node["dtype_"].name not in _ML_DTYPES:
                raise _malformed(f"{what}: a JAX array of dtype {node['dtype_']}")
            continue
        if kind in ("list", "tuple"):
            children = _children(node, index, count)
            labels = [str(i) for i in range(len(children))]
        elif kind == "namedtuple":
            children, fields = _children(node, index, count), node.get("fields")
            if (not isinstance(node.get("class"), str) or not isinstance(fields, list)
                    or len(fields) != len(children) or any(not isinstance(f, str) for f in fields)):
                raise _malformed(f"{what}: a namedtuple needs a class name and one field name per child")
            labels = fields
        elif kind in ("dict", "OrderedDict", "defaultdict"):
            children, keys = _children(node, index, count), node.get("keys")
            if not isinstance(keys, list) or len(keys) != len(children) or not all(isinstance(k, dict) for k in keys):
                raise _malformed(f"{what}: a dict needs one key node per child")
            values = [_decode_scalar(k, f"{what} key") for k in keys]
            if len({(type(k), k) for k in values}) != len(values) or len(dict.fromkeys(values)) != len(values):
                raise _malformed(f"{what}: repeated dict key")
            if kind == "defaultdict" and node.get("default_factory") is not None and node.get("default_factory") not in _FACTORIES:
                raise _malformed(f"{what}: default_factory {node.get('default_factory')!r}")
            node["key_values_"] = values
            labels = [str(k) for k in values]
        else:
            raise _malformed(f"{what}: unknown type {kind!r}")
        for child, label in zip(children, labels):
            if parents[child] is not None:
                raise _malformed(f"node {child} has two parents")
            parents[child] = (index, label)
    if None in parents:
        raise _malformed(f"node {parents.index(None)} is in no container")
    for node, parent in zip(nodes, parents):
        node["parent_"] = parent
    return nodes


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


def _walk_path(nodes: list, index: int) -> str:
    labels = []
    while nodes[index]["parent_"][0] >= 0:
        index, label = nodes[index]["parent_"]
        labels.append(label)
    return "/".join(reversed(labels))


def _describe(node: dict) -> str:
    kind = node["type"]
    if kind == "array":
        what = {"jax": "JAX array", "numpy": "numpy array", "numpy_scalar": "numpy scalar"}[node["kind"]]
        return f"a {what} of dtype {node['dtype_']} and shape {tuple(node['shape'])}"
    if kind == "namedtuple":
        return f"a {node['class']} NamedTuple"
    if kind in _CONTAINER_TYPES:
        return f"a {kind} of {len(node['children'])} items"
    return f"a {kind} ({node['value_']!r})"


def _describe_target(value) -> str:
    if _is_target_array(value):
        return f"a {type(value).__name__} of dtype {np.dtype(value.dtype)} and shape {tuple(value.shape)}"
    if _is_namedtuple_class(type(value)):
        return f"a {_type_name(type(value))} NamedTuple"
    if type(value) in (list, tuple) or type(value) in _DICTS:
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__} ({value!r})"


def _is_target_array(value) -> bool:
    return isinstance(value, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct))


def _match_target(nodes: list, target) -> list:
    """The target's part for each node, top down; ``ValueError`` where they differ."""
    targets: list = [None] * len(nodes)
    targets[0] = target
    for index, node in enumerate(nodes):
        value, kind = targets[index], node["type"]

        def mismatch(detail: str = ""):
            path = _walk_path(nodes, index)
            return ValueError(
                f"checkpoint does not match the target at {_where(path)}: the checkpoint holds {_describe(node)}, "
                f"the target {_describe_target(value)}{detail}"
            )

        value_type = type(value)
        if not (_is_target_array(value) or value is None or _encode_scalar(value) is not None
                or value_type in (list, tuple) or value_type in _DICTS or _is_namedtuple_class(value_type)):
            raise TypeError(
                f"the target holds a {value_type.__module__}.{value_type.__qualname__} at "
                f"{_where(_walk_path(nodes, index))}, which no checkpoint holds"
            )
        if kind == "array":
            if not _is_target_array(value):
                raise mismatch()
            if np.dtype(value.dtype) != node["dtype_"] or tuple(value.shape) != tuple(node["shape"]):
                raise mismatch()
        elif kind in _SCALAR_TYPES:
            if _encode_scalar(value) is None or _encode_scalar(value)["type"] != kind:
                raise mismatch()
        elif kind in ("list", "tuple"):
            if value_type is not {"list": list, "tuple": tuple}[kind] or len(value) != len(node["children"]):
                raise mismatch()
            for child, part in zip(node["children"], value):
                targets[child] = part
        elif kind == "namedtuple":
            if (not _is_namedtuple_class(value_type) or _type_name(value_type) != node["class"]
                    or list(value_type._fields) != node["fields"]):
                raise mismatch()
            for child, part in zip(node["children"], value):
                targets[child] = part
        else:  # the dicts
            if _DICTS.get(value_type) != kind:
                raise mismatch()
            saved = dict(zip(node["key_values_"], node["children"]))
            saved_keys = {k: k for k in node["key_values_"]}
            for key in value:
                if key not in saved or type(saved_keys[key]) is not type(key):
                    raise mismatch(f": the target has the key {key!r}, which the checkpoint does not")
                targets[saved[key]] = value[key]
            for key in node["key_values_"]:
                if key not in value:
                    raise mismatch(f": the checkpoint has the key {key!r}, which the target does not")
    return targets


def _entry_array(node: dict, stored, where) -> np.ndarray:
    """Entry ``stored`` of array node ``node``, checked against it, with the node's dtype."""
    array = np.asarray(stored)
    expected_shape = tuple(node["shape"])
    if array.dtype != node["stored_"] or array.shape != expected_shape:
        raise ValueError(
            f"checkpoint entry {node['entry']!r} at {where()} is a {array.dtype} array of shape {array.shape}, "
            f"but the skeleton records {node['stored_']} of shape {expected_shape}"
        )
    return array.view(node["dtype_"]) if array.dtype != node["dtype_"] else array


def _check_jax_dtype(node: dict, restored: jax.Array, where) -> None:
    if restored.dtype != node["dtype_"]:
        raise ValueError(
            f"checkpoint entry {node['entry']!r} at {where()} was saved as a {node['dtype_']} JAX array, which "
            f"JAX makes {restored.dtype} here: load it with jax_enable_x64 set as when it was saved"
        )


def from_numpy_dict(flat: Mapping[str, np.ndarray], target: Any = None) -> Any:
    """Rebuilds what :func:`to_numpy_dict` flattened, checking every entry; runs no code.

    :func:`load` reads a file into this; this is the in-memory half.

    Args:
      flat: the dict :func:`to_numpy_dict` made, or the entries of a file it was written
        to (``numpy.load(path, allow_pickle=False)``, or a dict of it).
      target: optional; a tree of the same structure (the abstract state
        ``jax.eval_shape(tx.init, params)``, or a concrete state). The containers and
        the kind of each array (JAX array with the target leaf's sharding, numpy array,
        numpy scalar) then come from it, so no allow-list of NamedTuple types is needed.

    Returns:
      The tree, with its container types, dtypes and values. Without a target, JAX arrays
      come back as JAX arrays (on the default device), numpy arrays as numpy arrays.

    Raises:
      ValueError: naming the path, for an entry whose dtype or shape is not the one the
        skeleton records, an entry missing or one the skeleton does not name, a
        NamedTuple class that is not allowed (see :func:`register_state_type`), a file
        that differs from ``target`` (structure, container types, dict keys, dtypes,
        shapes, scalar types), a malformed or old (pickled) skeleton, or a JAX array
        whose dtype JAX cannot make in this process (a float64 state saved with
        ``jax_enable_x64`` on, loaded with it off): load it with the setting it was saved
        with.
      TypeError: if ``target`` holds a type no checkpoint holds.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from gradxform import checkpoint
      >>> back = checkpoint.from_numpy_dict(checkpoint.to_numpy_dict((jnp.zeros(2), np.ones(1), None)))
      >>> [type(x).__name__ for x in back]
      ['ArrayImpl', 'ndarray', 'NoneType']
    """
    nodes = _read_skeleton(flat)
    arrays = {node["entry"]: index for index, node in enumerate(nodes) if node["type"] == "array"}
    names = set(flat) - {_SKELETON}
    for entry, index in arrays.items():
        if entry not in names:
            raise ValueError(
                f"checkpoint has no entry {entry!r} for the array at {_where(_walk_path(nodes, index))}"
            )
    extra = sorted(names - set(arrays))
    if extra:
        raise ValueError(f"checkpoint entries {extra} are not in its skeleton (no path holds them)")

    # What each node becomes: from the target, or (for NamedTuples) from the allow-list.
    targets = _match_target(nodes, target) if target is not None else [None] * len(nodes)
    classes: dict = {}
    if target is None:
        allowed = _allowed_state_types()
        for index, node in enumerate(nodes):
            if node["type"] == "namedtuple":
                cls = allowed.get(node["class"])
                if cls is None:
                    raise _unknown_type(node["class"], _where(_walk_path(nodes, index)))
                if list(cls._fields) != node["fields"]:
                    raise ValueError(
                        f"checkpoint holds a {node['class']} at {_where(_walk_path(nodes, index))} with the fields "
                        f"{tuple(node['fields'])}, but that class has the fields {cls._fields}"
                    )
                classes[index] = cls

    values: list = [None] * len(nodes)
    # The arrays first; the JAX arrays with no sharding to follow in one transfer.
    batch = []
    for index in arrays.values():
        node, part = nodes[index], targets[index]
        where = lambda index=index: _where(_walk_path(nodes, index))  # noqa: E731 (only for messages)
        array = _entry_array(node, flat[node["entry"]], where)
        kind = node["kind"] if target is None else (
            "numpy" if isinstance(part, np.ndarray) else "numpy_scalar" if isinstance(part, np.generic) else "jax")
        if kind == "numpy":
            values[index] = array
        elif kind == "numpy_scalar":
            values[index] = array[()]
        elif getattr(part, "sharding", None) is not None:
            values[index] = jax.make_array_from_callback(array.shape, part.sharding, lambda i, a=array: a[i])
            _check_jax_dtype(node, values[index], where)
        else:
            batch.append((index, array))
    for (index, _), restored in zip(batch, jax.device_put([array for _, array in batch])):
        _check_jax_dtype(nodes[index], restored, lambda index=index: _where(_walk_path(nodes, index)))
        values[index] = restored

    for index in reversed(range(len(nodes))):  # children come after their parent
        node, kind, part = nodes[index], nodes[index]["type"], targets[index]
        if kind == "array":
            continue
        if kind in _SCALAR_TYPES:
            values[index] = node["value_"]
            continue
        items = [values[child] for child in node["children"]]
        for child in node["children"]:
            values[child] = None
        if kind in ("list", "tuple"):
            values[index] = items if kind == "list" else tuple(items)
        elif kind == "namedtuple":
            values[index] = (type(part) if target is not None else classes[index])(*items)
        else:
            by_key = dict(zip(node["key_values_"], items))
            if target is not None:  # the target's type and key order
                kind = type(part)
                new = collections.defaultdict(part.default_factory) if kind is collections.defaultdict else kind()
                for key in part:
                    new[key] = by_key[key]
            elif kind == "defaultdict":
                new = collections.defaultdict(_FACTORIES.get(node.get("default_factory")), by_key)
            else:
                new = collections.OrderedDict(by_key) if kind == "OrderedDict" else by_key
            values[index] = new
    return values[0]


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------


def save(path: str | os.PathLike, tree: Any) -> None:
    """Writes ``tree`` to the ``.npz`` file ``path``, atomically.

    The entries (:func:`to_numpy_dict`) are written to a new temporary file in the same
    directory, flushed and synced to disk, and the file is then renamed to ``path``
    (``os.replace``, atomic), and the directory synced. A writer that dies at any point
    (killed, out of disk space, power cut once the rename is on disk) leaves at ``path``
    either the previous file or the new one, never a partial file. A killed writer may
    leave its temporary file, ``.<name>.<random>.tmp``, beside ``path``.

    Args:
      path: the file to write, exactly (no ``.npz`` is appended). A file already there
        is replaced.
      tree: what to save: the types :mod:`gradxform.checkpoint` lists.

    Raises:
      TypeError: naming the path of a value a checkpoint cannot hold; nothing is written.

    Example:
      >>> import os, tempfile, jax.numpy as jnp
      >>> from gradxform import checkpoint
      >>> path = os.path.join(tempfile.mkdtemp(), "checkpoint.npz")
      >>> checkpoint.save(path, {"step": 3, "w": jnp.ones(2)})
      >>> checkpoint.load(path)["step"]
      3
    """
    flat = to_numpy_dict(tree)  # refuses a bad tree before anything is written
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = _create_temporary(folder, os.path.basename(path))
    try:
        with os.fdopen(descriptor, "wb") as file:
            # What numpy.savez writes, without its keyword arguments (an entry may be named
            # "file" or "allow_pickle") and with pickles refused.
            with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
                for name, array in flat.items():
                    with archive.open(name + ".npy", mode="w", force_zip64=True) as member:
                        np.lib.format.write_array(member, array, allow_pickle=False)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _sync_directory(folder)


def _create_temporary(folder: str, name: str) -> tuple[int, str]:
    """A new file beside ``name``: (its descriptor, its path), created with the umask's mode."""
    while True:
        temporary = os.path.join(folder, f".{name}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), temporary
        except FileExistsError:
            continue


def _sync_directory(folder: str) -> None:
    """Puts the directory's entries (the rename) on disk; a no-op where that cannot be done."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # Windows opens no directory; its rename is durable by itself
        return
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):  # filesystems that do not sync directories
            raise
    finally:
        os.close(descriptor)


def load(path: str | os.PathLike, target: Any = None) -> Any:
    """Reads the checkpoint :func:`save` wrote to ``path``; runs no code from the file.

    The file is opened with ``numpy.load(path, allow_pickle=False)`` and rebuilt with
    :func:`from_numpy_dict`, which checks every entry.

    Args:
      path: the file.
      target: optional; a tree of the same structure (``jax.eval_shape(tx.init,
        params)`` or a concrete state), which gives the containers and array kinds (JAX
        arrays get its leaves' shardings), and which the file must match exactly.

    Returns:
      The tree that was saved.

    Raises:
      ValueError: naming the path, as :func:`from_numpy_dict` does; also for a file that
        is not an ``.npz`` archive, or an entry that needs pickle.

    Example:
      >>> import os, tempfile, jax, jax.numpy as jnp, gradxform
      >>> from gradxform import checkpoint
      >>> tx, params = gradxform.sgd(0.1, momentum=0.9), {"w": jnp.ones(3)}
      >>> path = os.path.join(tempfile.mkdtemp(), "state.npz")
      >>> checkpoint.save(path, tx.init(params))
      >>> bad_target = jax.eval_shape(tx.init, {"w": jnp.ones(4)})
      >>> checkpoint.load(path, target=bad_target)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      ValueError: checkpoint does not match the target at path 'inner_state/0/momentum_buffer/w': ...
    """
    data = np.load(os.fspath(path), allow_pickle=False)
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{os.fspath(path)!r} is a single .npy array, not a checkpoint (.npz)")
    with data:
        flat = {}
        for name in data.files:
            try:
                flat[name] = data[name]
            except ValueError as error:  # an object array: pickled, refused
                raise ValueError(f"checkpoint entry {name!r} in {os.fspath(path)!r}: {error}") from None
    return from_numpy_dict(flat, target=target)


# ---------------------------------------------------------------------------------------
# orbax
# ---------------------------------------------------------------------------------------


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

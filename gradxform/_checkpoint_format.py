"""The data-only tree format of :mod:`gradxform.checkpoint`: writing and reading it.

:func:`flatten` turns a tree into ``{entry name: numpy array}`` plus the skeleton entry
(JSON: a flat table of nodes, each container listing its children by index, children
after their parent). :func:`unflatten` reads it back. Neither recurses, so a tree of any
depth works. Reading runs no code from the data: the JSON is checked node by node, the
dtypes are parsed from text and restricted to plain ones, and NamedTuple classes come
from the caller (``resolve``) or from the target. The format is described in
:mod:`gradxform.checkpoint`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
import struct
from typing import Any, Callable, Mapping

import jax
import ml_dtypes
import numpy as np

SKELETON = "__skeleton__"
FORMAT = "gradxform.checkpoint"
VERSION = 1

# The dtypes of ml_dtypes (bfloat16, float8_*, int4, ...): ``.npy`` cannot describe them
# (not even those numpy gives a kind "f" or "c"), so they are stored as their bits.
_ML_DTYPES = {
    np.dtype(value).name: np.dtype(value)
    for value in vars(ml_dtypes).values()
    if isinstance(value, type) and issubclass(value, np.generic)
}
_PLAIN_KINDS = "biufcmMSU"  # the other dtypes kept: bool, numbers, datetimes, bytes, text
_FACTORIES = {
    name: factory
    for name, factory in (
        ("list", list), ("dict", dict), ("set", set), ("tuple", tuple), ("int", int), ("float", float),
        ("complex", complex), ("str", str), ("bool", bool), ("OrderedDict", collections.OrderedDict),
    )
}
FACTORY_NAMES = tuple(_FACTORIES)
# The dict types kept, by their names in the file (Counter: torch's MultiStepLR milestones).
_DICTS = {dict: "dict", collections.OrderedDict: "OrderedDict", collections.defaultdict: "defaultdict",
          collections.Counter: "Counter"}
_DICT_TYPES = {name: cls for cls, name in _DICTS.items()}
_SEQUENCES = {"list": list, "tuple": tuple}
_SCALARS = ("none", "bool", "int", "str", "float", "complex")
_ARRAY_KINDS = ("jax", "numpy", "numpy_scalar")
_MAX_NAME = 1000  # characters of an entry's name: a longer path keeps its end
_HEX16 = re.compile(r"[0-9a-f]{16}")


def is_namedtuple_class(cls) -> bool:
    return isinstance(cls, type) and issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple)


def type_name(cls: type) -> str:
    """How the file names a NamedTuple class: ``"module.QualName"``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def where(path: str) -> str:
    """``path 'a/b/c'``, or ``the root``, for messages."""
    return f"path {path!r}" if path else "the root"


def _float_bits(value: float) -> str:
    return struct.pack(">d", value).hex()


def _encode_scalar(value) -> dict | None:
    """The node of a Python scalar that is kept, or None."""
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


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


def _array_dtype(dtype: np.dtype, at: str) -> tuple[str, np.dtype]:
    """(The dtype's name in the skeleton, the dtype its entry is stored with)."""
    if dtype.name in _ML_DTYPES and _ML_DTYPES[dtype.name] == dtype:  # (np.dtype(None) is float64)
        return dtype.name, np.dtype(f"u{dtype.itemsize}")
    if dtype.kind not in _PLAIN_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise TypeError(
            f"checkpoint cannot store an array of dtype {dtype} at {at}: only numeric, boolean, datetime, "
            "bytes and str dtypes (and the ml_dtypes types) are kept; object and structured arrays would "
            "need pickle"
        )
    try:  # the name, when it gives the dtype back (byte order included); else numpy's code
        same = np.dtype(dtype.name) == dtype
    except TypeError:  # "str64", "bytes16"
        same = False
    return (dtype.name if same else dtype.str), dtype


def flatten(tree: Any) -> dict[str, np.ndarray]:
    """``{entry name: array}`` for the arrays of ``tree``, and its skeleton (see the module)."""
    arrays: dict[str, np.ndarray] = {}
    nodes: list[dict] = []
    parents: list[tuple[int, str]] = []  # per node: (parent node, label)

    def path(index: int) -> str:
        labels = []
        while parents[index][0] >= 0:
            index, label = parents[index]
            labels.append(label)
        return "/".join(reversed(labels))

    stack = [(tree, -1, 0, "")]  # (value, parent node, position among its children, label)
    while stack:
        value, parent, position, label = stack.pop()
        index = len(nodes)
        parents.append((parent, label))
        if parent >= 0:
            nodes[parent]["children"][position] = index
        node, children = _encode(value, lambda: path(index), arrays)
        nodes.append(node)
        # Pushed last first, so that children are numbered in order, after their parent.
        for position in reversed(range(len(children))):
            label, child = children[position]
            stack.append((child, index, position, label))
    document = {"format": FORMAT, "version": VERSION, "nodes": nodes}
    arrays[SKELETON] = np.frombuffer(json.dumps(document, separators=(",", ":")).encode("utf-8"), np.uint8)
    return arrays


def _encode(value, path: Callable[[], str], arrays: dict) -> tuple[dict, list]:
    """(The node of ``value``, its children as ``(label, child)`` pairs); an array's
    entry is added to ``arrays``."""
    scalar = _encode_scalar(value)
    if scalar is not None:
        return scalar, []
    kind = type(value)
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        array = np.asarray(value)
        dtype_name, stored = _array_dtype(array.dtype, where(path()))
        base = path() or "root"
        if len(base) > _MAX_NAME:
            base = "..." + base[-_MAX_NAME:]
        name, suffix = base, 0
        while name in arrays or name == SKELETON:
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
                    f"{where(path())}: keys must be str, int, bool, float, complex or None"
                )
            keys.append(encoded)
        node = {"type": _DICTS[kind], "keys": keys, "children": [None] * len(keys)}
        if kind is collections.defaultdict:
            factory = value.default_factory
            name = next((n for n, f in _FACTORIES.items() if f is factory), None)
            if factory is not None and name is None:
                raise TypeError(
                    f"checkpoint cannot store the defaultdict at {where(path())}: its default_factory "
                    f"{factory!r} is code; only None and {', '.join(_FACTORIES)} are kept (or make it a dict)"
                )
            node["default_factory"] = name
        return node, [(str(k), v) for k, v in value.items()]
    if is_namedtuple_class(kind):
        node = {"type": "namedtuple", "class": type_name(kind), "fields": list(kind._fields),
                "children": [None] * len(value)}
        return node, list(zip(kind._fields, value))
    if kind is list or kind is tuple:
        return {"type": kind.__name__, "children": [None] * len(value)}, [(str(i), v) for i, v in enumerate(value)]
    raise TypeError(
        f"checkpoint cannot store a {kind.__module__}.{kind.__qualname__} at {where(path())}: only dicts (and "
        "OrderedDict, defaultdict, Counter), lists, tuples, NamedTuples, arrays, numpy scalars, None, bool, int, "
        "float, complex and str are kept"
    )


# ---------------------------------------------------------------------------------------
# Reading the skeleton
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False, slots=True)
class _Node:
    """One node of a checked skeleton."""

    kind: str  # "none" ... "complex", "array", "list", "tuple", "namedtuple", or a dict type
    parent: int = -1
    label: str = ""  # its place in its parent (key, field name or index) as text
    children: list = dataclasses.field(default_factory=list)
    value: Any = None  # a scalar's
    keys: list = dataclasses.field(default_factory=list)  # a dict's, one per child
    factory: str | None = None  # a defaultdict's
    class_name: str = ""  # a namedtuple's
    fields: list = dataclasses.field(default_factory=list)
    entry: str = ""  # an array's
    dtype: Any = None
    stored: Any = None  # its entry's dtype
    shape: tuple = ()
    array_kind: str = ""


def _malformed(what: str) -> ValueError:
    return ValueError(f"malformed checkpoint skeleton: {what}")


def _decode_float(bits) -> float:
    if not isinstance(bits, str) or not _HEX16.fullmatch(bits):
        raise _malformed(f"float bits {bits!r} are not 16 hex digits")
    return struct.unpack(">d", bytes.fromhex(bits))[0]


def _decode_scalar(node, what: str):
    if not isinstance(node, dict):
        raise _malformed(f"{what} is not an object")
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
        return _ML_DTYPES[name], np.dtype(f"u{_ML_DTYPES[name].itemsize}")
    try:
        dtype = np.dtype(name)  # parses the text, runs nothing
    except (TypeError, ValueError, OverflowError):
        raise _malformed(f"{what}: dtype {name!r}") from None
    if dtype.kind not in _PLAIN_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise _malformed(f"{what}: dtype {name!r} is not one that checkpoints hold")
    return dtype, dtype


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _document(flat: Mapping) -> list:
    """The skeleton's list of nodes, as JSON gives it."""
    if SKELETON not in flat:
        raise ValueError(f"not a gradxform checkpoint: it has no {SKELETON!r} entry")
    raw = np.asarray(flat[SKELETON])
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise _malformed(f"the {SKELETON!r} entry is a {raw.dtype} array of shape {raw.shape}, not uint8 bytes")
    data = raw.tobytes()
    try:
        document = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        document = None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        older = " (it looks like a pickle)" if data[:1] == b"\x80" else ""
        raise ValueError(
            f"checkpoint's {SKELETON!r} entry is not the JSON this gradxform writes{older}. Files written by "
            "older gradxform versions held a pickled skeleton, which is never loaded, as unpickling can run "
            "any code: if you trust such a file, load it with the gradxform version that wrote it and save "
            "it again with this one"
        )
    version, nodes = document.get("version"), document.get("nodes")
    if type(version) is not int or version > VERSION:
        raise ValueError(f"checkpoint format version {version!r}: this gradxform reads version {VERSION} and older")
    if not isinstance(nodes, list) or not nodes:
        raise _malformed("no nodes")
    return nodes


def read_skeleton(flat: Mapping) -> list[_Node]:
    """The checked nodes of ``flat``'s skeleton: each node but the root in exactly one
    container, after it; every field of the type its node needs."""
    raw_nodes = _document(flat)
    count = len(raw_nodes)
    nodes: list[_Node] = []
    parents: list = [(-1, "")] + [None] * (count - 1)  # per node: (its container, its label)
    entries: set = set()
    for index, raw in enumerate(raw_nodes):
        what = f"node {index}"
        if not isinstance(raw, dict):
            raise _malformed(f"{what} is not an object")
        kind = raw.get("type")
        if not isinstance(kind, str):
            raise _malformed(f"{what}: unknown type {kind!r}")
        node = _Node(kind)
        nodes.append(node)
        if kind in _SCALARS:
            node.value = _decode_scalar(raw, what)
            continue
        if kind == "array":
            node.entry, shape, node.array_kind = raw.get("entry"), raw.get("shape"), raw.get("kind")
            if not isinstance(node.entry, str) or node.entry == SKELETON or node.entry in entries:
                raise _malformed(f"{what}: entry {node.entry!r} (each array has its own)")
            entries.add(node.entry)
            node.dtype, node.stored = _parse_dtype(raw.get("dtype"), what)
            if not isinstance(shape, list) or any(type(n) is not int or n < 0 for n in shape):
                raise _malformed(f"{what}: shape {shape!r}")
            node.shape = tuple(shape)
            if node.array_kind not in _ARRAY_KINDS or (node.array_kind == "numpy_scalar" and shape):
                raise _malformed(f"{what}: array kind {node.array_kind!r}")
            if node.array_kind == "jax" and node.dtype.kind not in "biufc" and node.dtype.name not in _ML_DTYPES:
                raise _malformed(f"{what}: a JAX array of dtype {node.dtype}")
            continue
        if kind not in _SEQUENCES and kind != "namedtuple" and kind not in _DICTS.values():
            raise _malformed(f"{what}: unknown type {kind!r}")
        children = raw.get("children")
        if not isinstance(children, list) or any(type(c) is not int or not index < c < count for c in children):
            raise _malformed(f"{what}: children must be indices of later nodes")
        node.children = children
        if kind in _SEQUENCES:
            labels = [str(i) for i in range(len(children))]
        elif kind == "namedtuple":
            node.class_name, node.fields = raw.get("class"), raw.get("fields")
            if (not isinstance(node.class_name, str) or not isinstance(node.fields, list)
                    or len(node.fields) != len(children) or any(not isinstance(f, str) for f in node.fields)):
                raise _malformed(f"{what}: a namedtuple needs a class name and one field name per child")
            labels = node.fields
        else:  # a dict
            keys = raw.get("keys")
            if not isinstance(keys, list) or len(keys) != len(children):
                raise _malformed(f"{what}: a dict needs one key node per child")
            node.keys = [_decode_scalar(key, f"{what} key") for key in keys]
            if len(dict.fromkeys(node.keys)) != len(node.keys):  # True and 1 are one key too
                raise _malformed(f"{what}: repeated dict key")
            node.factory = raw.get("default_factory")
            if kind == "defaultdict" and node.factory is not None and (
                    not isinstance(node.factory, str) or node.factory not in _FACTORIES):
                raise _malformed(f"{what}: default_factory {node.factory!r}")
            labels = [str(key) for key in node.keys]
        for child, label in zip(children, labels):
            if parents[child] is not None:
                raise _malformed(f"node {child} has two parents")
            parents[child] = (index, label)
    for index, node in enumerate(nodes):
        if parents[index] is None:
            raise _malformed(f"node {index} is in no container")
        node.parent, node.label = parents[index]
    return nodes


def path(nodes: list[_Node], index: int) -> str:
    """``"a/b/c"``: the labels from the root to ``nodes[index]``."""
    labels = []
    while nodes[index].parent >= 0:
        labels.append(nodes[index].label)
        index = nodes[index].parent
    return "/".join(reversed(labels))


# ---------------------------------------------------------------------------------------
# Rebuilding the tree
# ---------------------------------------------------------------------------------------


def _describe(node: _Node) -> str:
    if node.kind == "array":
        what = {"jax": "JAX array", "numpy": "numpy array", "numpy_scalar": "numpy scalar"}[node.array_kind]
        return f"a {what} of dtype {node.dtype} and shape {node.shape}"
    if node.kind == "namedtuple":
        return f"a {node.class_name} NamedTuple"
    if node.kind in _SCALARS:
        return f"a {node.kind} ({node.value!r})"
    return f"a {node.kind} of {len(node.children)} items"


def _is_target_array(value) -> bool:
    return isinstance(value, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct))


def _describe_target(value) -> str:
    kind = type(value)
    if _is_target_array(value):
        return f"a {kind.__name__} of dtype {np.dtype(value.dtype)} and shape {tuple(value.shape)}"
    if is_namedtuple_class(kind):
        return f"a {type_name(kind)} NamedTuple"
    if kind in (list, tuple) or kind in _DICTS:
        return f"a {kind.__name__} of {len(value)} items"
    return f"a {kind.__name__} ({value!r})"


def _match_target(nodes: list[_Node], target) -> list:
    """The part of ``target`` for each node, top down; ``ValueError`` where they differ."""
    targets: list = [None] * len(nodes)
    targets[0] = target
    for index, node in enumerate(nodes):
        value, kind = targets[index], node.kind
        value_type = type(value)
        if not (_is_target_array(value) or _encode_scalar(value) is not None or value_type in (list, tuple)
                or value_type in _DICTS or is_namedtuple_class(value_type)):
            raise TypeError(
                f"the target holds a {value_type.__module__}.{value_type.__qualname__} at "
                f"{where(path(nodes, index))}, which no checkpoint holds"
            )
        detail = None
        if kind == "array":
            same = (_is_target_array(value) and np.dtype(value.dtype) == node.dtype
                    and tuple(value.shape) == node.shape)
        elif kind in _SCALARS:
            same = (_encode_scalar(value) or {}).get("type") == kind
        elif kind == "namedtuple":
            same = (is_namedtuple_class(value_type) and type_name(value_type) == node.class_name
                    and list(value_type._fields) == node.fields)
        elif kind in _SEQUENCES:
            same = value_type is _SEQUENCES[kind] and len(value) == len(node.children)
        else:
            same = _DICTS.get(value_type) == kind
            if same:
                saved = {key: (key, child) for key, child in zip(node.keys, node.children)}
                for key in value:
                    if key not in saved or type(saved[key][0]) is not type(key):  # True is not 1
                        detail = f"the target has the key {key!r}, which the checkpoint does not"
                        break
                    targets[saved[key][1]] = value[key]
                else:
                    missing = [key for key in node.keys if key not in value]
                    if missing:
                        detail = f"the checkpoint has the key {missing[0]!r}, which the target does not"
        if not same or detail:
            raise ValueError(
                f"checkpoint does not match the target at {where(path(nodes, index))}: the checkpoint holds "
                f"{_describe(node)}, the target {_describe_target(value)}" + (f": {detail}" if detail else "")
            )
        if kind == "namedtuple" or kind in _SEQUENCES:
            for child, part in zip(node.children, value):
                targets[child] = part
    return targets


def _entry_array(node: _Node, stored, at: Callable[[], str]) -> np.ndarray:
    """The array of ``node`` from its entry ``stored``, whose dtype and shape are checked."""
    array = np.asarray(stored)
    if array.dtype != node.stored or array.shape != node.shape:
        raise ValueError(
            f"checkpoint entry {node.entry!r} at {at()} is a {array.dtype} array of shape {array.shape}, but "
            f"the skeleton records {node.stored} of shape {node.shape}"
        )
    return array.view(node.dtype) if array.dtype != node.dtype else array


def _check_jax_dtype(node: _Node, restored: jax.Array, at: Callable[[], str]) -> None:
    if restored.dtype != node.dtype:
        raise ValueError(
            f"checkpoint entry {node.entry!r} at {at()} was saved as a {node.dtype} JAX array, which JAX makes "
            f"{restored.dtype} here: load it with jax_enable_x64 set as when it was saved"
        )


def unflatten(flat: Mapping, target: Any, resolve: Callable[[str, str], type]) -> Any:
    """The tree that :func:`flatten` made ``flat`` from, its entries checked.

    Args:
      flat: the entries (a mapping: a dict, or numpy's ``NpzFile``).
      target: None, or the tree to match, which gives the containers and array kinds.
      resolve: without a target, ``(class name, where) -> NamedTuple class``; raises
        ``ValueError`` for a class that is not allowed.
    """
    nodes = read_skeleton(flat)
    arrays = {node.entry: index for index, node in enumerate(nodes) if node.kind == "array"}
    names = set(flat) - {SKELETON}
    for entry, index in arrays.items():
        if entry not in names:
            raise ValueError(f"checkpoint has no entry {entry!r} for the array at {where(path(nodes, index))}")
    extra = sorted(names - set(arrays))
    if extra:
        raise ValueError(f"checkpoint entries {extra} are not in its skeleton (no path holds them)")

    # What each container becomes: the target's part, or (NamedTuples) an allowed class.
    targets = _match_target(nodes, target) if target is not None else [None] * len(nodes)
    classes = {}
    if target is None:
        for index, node in enumerate(nodes):
            if node.kind == "namedtuple":
                cls = resolve(node.class_name, where(path(nodes, index)))
                if list(cls._fields) != node.fields:
                    raise ValueError(
                        f"checkpoint holds a {node.class_name} at {where(path(nodes, index))} with the fields "
                        f"{tuple(node.fields)}, but that class has the fields {cls._fields}"
                    )
                classes[index] = cls

    values: list = [None] * len(nodes)
    # The arrays first: the JAX arrays without a sharding go to the device in one call.
    batch = []
    for index in arrays.values():
        node, part = nodes[index], targets[index]
        at = lambda index=index: where(path(nodes, index))  # noqa: E731 (for messages only)
        array = _entry_array(node, flat[node.entry], at)
        kind = node.array_kind if target is None else (
            "numpy" if isinstance(part, np.ndarray) else "numpy_scalar" if isinstance(part, np.generic) else "jax")
        if kind == "numpy":
            values[index] = array
        elif kind == "numpy_scalar":
            values[index] = array[()]
        elif getattr(part, "sharding", None) is not None:  # the target's placement
            values[index] = jax.make_array_from_callback(array.shape, part.sharding, lambda i, a=array: a[i])
            _check_jax_dtype(node, values[index], at)
        else:
            batch.append((index, array))
    for (index, _), restored in zip(batch, jax.device_put([array for _, array in batch])):
        _check_jax_dtype(nodes[index], restored, lambda index=index: where(path(nodes, index)))
        values[index] = restored

    for index in reversed(range(len(nodes))):  # children come after their container
        node, part = nodes[index], targets[index]
        if node.kind in _SCALARS:
            values[index] = node.value
            continue
        if node.kind == "array":
            continue
        items = [values[child] for child in node.children]
        for child in node.children:
            values[child] = None
        if node.kind in _SEQUENCES:
            values[index] = _SEQUENCES[node.kind](items)
        elif node.kind == "namedtuple":
            values[index] = (type(part) if target is not None else classes[index])(*items)
        else:  # a dict; with a target, in the target's key order
            by_key = dict(zip(node.keys, items))
            new = _DICT_TYPES[node.kind]()
            if node.kind == "defaultdict":
                new.default_factory = part.default_factory if target is not None else _FACTORIES.get(node.factory)
            for key in (part if target is not None else by_key):
                new[key] = by_key[key]  # (Counter.update would count)
            values[index] = new
    return values[0]

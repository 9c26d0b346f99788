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
``collections.Counter``, ``collections.defaultdict`` (with no factory, or one of ``list
dict set tuple int float complex str bool OrderedDict``), ``list``, ``tuple``, NamedTuples, ``None``, ``bool``,
``int``, ``float`` and ``complex`` (bit for bit: NaN payloads, infinities and ``-0.0``
included), ``str``, and arrays: JAX arrays, numpy arrays and numpy scalars, each coming
back as what it was (JAX arrays on the default device, or with a target's sharding).

The format (what ``numpy.load`` shows):

* one entry per array, named by its path: dict keys, NamedTuple field names and
  list/tuple indices joined with ``/`` (``"inner_state/0/exp_avg/w"``), or ``"root"``
  when the whole tree is one array (a path longer than 1000 characters is cut to
  ``"..."`` and its last 1000). A name already taken (a key holding ``/``) gets a
  suffix ``~1``, ``~2``, ... so that no leaf overwrites another;
* an array of a dtype that the ``.npy`` format cannot describe (``bfloat16`` and the
  other ``ml_dtypes`` types: float8, int4, ...) is stored as the unsigned integers of
  the same width and shape holding its bits, and reinterpreted on load;
* an entry ``"__skeleton__"``: a ``uint8`` array holding UTF-8 JSON,
  ``{"format": "gradxform.checkpoint", "version": 1, "nodes": [...]}``. The nodes form a
  flat table, the root first, each container listing its children by index (children
  come after their container, each in one container), so that reading and writing need
  no recursion, however deep the tree. A node is one of
  ``{"type": "dict", "keys": [...], "children": [...]}`` (also ``"OrderedDict"``,
  ``"Counter"``, and ``"defaultdict"`` with ``"default_factory"``), ``{"type": "list"|"tuple",
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

import contextlib
import errno
import os
import secrets
import sys
import zipfile
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _checkpoint_format as _format

__all__ = ["from_numpy_dict", "from_orbax", "load", "register_state_type", "save", "to_numpy_dict", "to_orbax"]

# NamedTuple classes given to register_state_type, by the name a file gives them.
_REGISTERED: dict[str, type] = {}


# ---------------------------------------------------------------------------------------
# NamedTuple classes
# ---------------------------------------------------------------------------------------


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
    if not _format.is_namedtuple_class(cls):
        raise TypeError(f"register_state_type takes a NamedTuple class, not {cls!r}")
    _REGISTERED[_format.type_name(cls)] = cls
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
            if _format.is_namedtuple_class(value) and value.__module__ == module_name:
                allowed[_format.type_name(value)] = value
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
# In memory
# ---------------------------------------------------------------------------------------


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
    return _format.flatten(tree)


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
    allowed: dict[str, type] = {}

    def resolve(name: str, where: str) -> type:
        if not allowed:
            allowed.update(_allowed_state_types())
        if name not in allowed:
            raise _unknown_type(name, where)
        return allowed[name]

    return _format.unflatten(flat, target, resolve)


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
      OSError: if writing fails; the file at ``path`` is then as it was, and the
        temporary file is removed.

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
    except OSError:  # Windows cannot open a directory to sync it
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

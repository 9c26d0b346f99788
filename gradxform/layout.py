"""Memory layout: run a transformation over a few flat buffers instead of leaf by leaf.

A model with many small leaves pays a fixed cost per leaf in every compiled step: one
loop per leaf and per state buffer, and one argument and one result per leaf at the
``jax.jit`` boundary. :func:`flatten` keeps the optimizer state of the small leaves as
flat vectors, one per dtype (the "multi-tensor" idea of torch's foreach and fused
kernels, done once for every transformation), so the update of thousands of small
leaves is a handful of loops. The public API stays pytree in, pytree out.

Large leaves are left alone (each is its own buffer, raveled at no cost): packing them
would copy the parameters and gradients into the buffers at every step, and, measured
on the CPU (``benchmarks/step_bench.py``), one loop over a buffer far larger than the
caches runs slower than the same work leaf by leaf. Small leaves are packed into
buffers of at most ``2**20`` values for the same reason.

For element-wise rules (every optimizer here except :func:`~gradxform.adafactor`, whose
second moment is factored per matrix, :func:`~gradxform.muon`, which works on whole
matrices, and :func:`~gradxform.lbfgs`), the flattened transformation computes the same
operations on the same numbers; results agree to the last bit or two (XLA may round an
operation differently in a vectorized loop body and in its scalar tail). Global
reductions (a global norm) see the same values, summed in another order.

When it wins (measured in ``benchmarks/RESULTS.md``; see the "Performance" guide): the
step time of many small leaves, and the compile time of leaves of many different shapes.
When it loses: the compile time and compile memory of thousands of leaves of a few
shapes, since splitting the flat updates back into the leaves gives one distinct slice
kernel per leaf, whereas a leaf-by-leaf step compiles one kernel for all the leaves of a
shape.

To also remove the per-leaf cost at the ``jax.jit`` boundary in a model of many small
leaves, keep the parameters themselves flat (:func:`jax.flatten_util.ravel_pytree`) and
unravel them inside the loss.

Sharding: a flat buffer gets the sharding that XLA gives the concatenation of the
leaves. That is the leaf's own sharding along its leading axis for a single sharded
leaf, and replication for several sharded leaves (their tiles do not line up in one
vector). To split the flat buffers over devices anyway, wrap the result in
:func:`gradxform.shard_state`, which shards them along a mesh axis. The updates come
back with the shardings of the incoming updates.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import _numerics, base


class FlattenState(NamedTuple):
    """State of :func:`flatten`.

    Attributes:
      inner_state: the wrapped transformation's state, built over a tuple of 1-D
        buffers: the small leaves packed per dtype, and each large leaf on its own
        (ordered by their first leaf).
      layout: one empty array per buffer, of shape ``[0, size]`` and the buffer's
        dtype. It records the layout in a form ``jax.jit`` carries, so that an update
        tree with other sizes or dtypes is refused instead of broadcast.
    """

    inner_state: Any
    layout: tuple


def _is_sparse(x) -> bool:
    return type(x).__name__ in ("BCOO", "BCSR") and hasattr(x, "todense")


class _Layout(NamedTuple):
    treedef: Any
    shapes: tuple
    dtypes: tuple
    groups: tuple  # one tuple of leaf indices per buffer
    group_dtypes: tuple


def _layout(tree, what: str, max_leaf_size: int | None) -> _Layout:
    # ``None`` is an empty subtree, as everywhere in JAX (and optax): ``None`` and
    # ``{"a": None}`` flatten to no buffer at all.
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_sparse)
    shapes, dtypes = [], []
    for path, leaf in leaves_with_path:
        if _is_sparse(leaf):
            raise TypeError(
                f"gradxform.flatten: {what} leaf at {jax.tree_util.keystr(path) or '<root>'} "
                f"is {type(leaf).__name__}; flatten needs dense arrays"
            )
        shapes.append(tuple(np.shape(leaf)))
        dtypes.append(jnp.result_type(leaf))
    groups = _pack(shapes, dtypes, max_leaf_size)
    return _Layout(treedef, tuple(shapes), tuple(dtypes), groups, tuple(dtypes[g[0]] for g in groups))


def _pack(shapes, dtypes, max_leaf_size: int | None) -> tuple:
    """Groups leaf indices into buffers, ordered by their first leaf.

    A leaf of more than ``max_leaf_size`` values is a buffer of its own (raveling it is
    free: no copy). The others are packed, in order and per dtype, into buffers of at
    most ``max(max_leaf_size, _BUFFER_SIZE)`` values. ``None``: one buffer per dtype.
    """
    limit = None if max_leaf_size is None else max(max_leaf_size, _BUFFER_SIZE)
    groups: list[list[int]] = []
    open_group: dict[Any, tuple[list[int], int]] = {}  # dtype -> (indices, size)
    for i, (shape, dtype) in enumerate(zip(shapes, dtypes)):
        size = int(np.prod(shape, dtype=np.int64))
        if max_leaf_size is not None and size > max_leaf_size:
            groups.append([i])
            continue
        current = open_group.get(dtype)
        if current is None or (limit is not None and current[1] + size > limit):
            current = ([], 0)
            groups.append(current[0])
        current[0].append(i)
        open_group[dtype] = (current[0], current[1] + size)
    return tuple(tuple(g) for g in groups)


def _ravel(tree, layout: _Layout):
    leaves = layout.treedef.flatten_up_to(tree)
    return tuple(
        jnp.concatenate([jnp.ravel(leaves[i]) for i in group])
        if len(group) > 1
        else jnp.ravel(leaves[group[0]])
        for group in layout.groups
    )


def _unravel(flat, layout: _Layout):
    leaves = [None] * len(layout.shapes)
    for buffer, group in zip(flat, layout.groups):
        sizes = [int(np.prod(layout.shapes[i], dtype=np.int64)) for i in group]
        pieces = jnp.split(buffer, np.cumsum(sizes)[:-1]) if len(group) > 1 else [buffer]
        for i, piece in zip(group, pieces):
            leaves[i] = piece.reshape(layout.shapes[i])
    return layout.treedef.unflatten(leaves)


_BUFFER_SIZE = 1 << 20
"""The largest packed buffer, in values (4 MiB of float32)."""


def flatten(
    inner: base.GradientTransformation, *, max_leaf_size: int | None = 1 << 16
) -> base.GradientTransformation:
    """Runs ``inner`` over a few flat buffers instead of leaf by leaf.

    Updates (and ``params``, when given) of the small leaves are concatenated into 1-D
    buffers, one per dtype (several when they hold more than ``2**20`` values), inside
    the compiled step; a leaf of more than ``max_leaf_size`` values is a buffer of its
    own (raveled, not copied). ``inner`` updates those buffers; its updates are split
    back into the original tree. The state of ``inner`` (moments, accumulators) lives in
    the flat layout between steps. Updates must have their parameters' dtypes and shapes.

    Use it for element-wise rules: see the module docstring. Shape-dependent rules
    (``adafactor``, ``muon``) would see 1-D vectors instead of matrices.

    Args:
      inner: the transformation to run, e.g. ``gradxform.adam(1e-3)``.
      max_leaf_size: leaves of more values than this keep a buffer of their own
        (default ``2**16``); ``None`` packs every leaf, one buffer per dtype.

    Returns:
      A transformation with state :class:`FlattenState`. :func:`gradxform.get_hyperparams`
      and :func:`gradxform.set_hyperparams` see through it.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> params = {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}
      >>> tx = gradxform.flatten(gradxform.adam(0.1))
      >>> state = tx.init(params)
      >>> [b.shape for b in state.inner_state.inner_state[0].exp_avg]  # 2 + 4 values
      [(6,)]
      >>> updates, state = tx.update(params, state, params)
      >>> updates["w"].shape, updates["b"].shape
      ((2, 2), (2,))
    """
    if max_leaf_size is not None and (
        isinstance(max_leaf_size, bool) or not isinstance(max_leaf_size, int) or max_leaf_size < 1
    ):
        raise ValueError(f"max_leaf_size must be None or a positive int, got {max_leaf_size!r}")
    takes_extra = base._accepts_extra_args(inner.update)

    def init(params):
        layout = _layout(params, "params", max_leaf_size)
        flat = _ravel(params, layout)
        return FlattenState(
            inner.init(flat),
            tuple(_numerics.replicated_like(jnp.zeros((0, b.size), b.dtype), b) for b in flat),
        )

    def update(updates, state, params=None, **extra_args):
        layout = _layout(updates, "updates", max_leaf_size)
        flat_updates = _ravel(updates, layout)
        expected = [(int(a.shape[1]), jnp.dtype(a.dtype)) for a in state.layout]
        got = [(int(b.size), jnp.dtype(b.dtype)) for b in flat_updates]
        if got != expected:
            raise ValueError(
                f"gradxform.flatten: the state holds buffers of (size, dtype) {expected}, "
                f"the updates give {got}; updates must match the params given to init"
            )
        flat_params = None
        if params is not None:
            param_layout = _layout(params, "params", max_leaf_size)
            if (
                param_layout.treedef != layout.treedef
                or param_layout.dtypes != layout.dtypes
                or param_layout.shapes != layout.shapes
            ):
                raise ValueError(
                    "gradxform.flatten: updates and params differ in shapes or dtypes, or in tree structure; "
                    "flatten needs updates with their parameters' shapes and dtypes"
                )
            flat_params = _ravel(params, layout)
        if takes_extra:
            new_updates, inner_state = inner.update(
                flat_updates, state.inner_state, flat_params, **extra_args
            )
        else:
            new_updates, inner_state = inner.update(flat_updates, state.inner_state, flat_params)
        # Each update leaf is placed as its parameter (or incoming update), and the flat
        # state stays where init put it.
        new_tree = jax.tree.map(
            _numerics.like_param, _unravel(new_updates, layout), updates if params is None else params
        )
        inner_state = _numerics.keep_placement(inner_state, state.inner_state)
        return new_tree, FlattenState(inner_state, state.layout)

    return base.GradientTransformation(init, update)

"""ZeRO-style sharding of optimizer state over a data-parallel mesh axis.

Every gradxform optimizer already places its state as its parameters are placed (see
:mod:`gradxform._numerics`): a state leaf has its parameter's sharding. In plain data
parallelism the parameters are *replicated*, and so is their state, which then costs its
full size on every device. :func:`shard_state` splits the state instead, along one mesh
axis (ZeRO stage 1), and optionally the update computation too: each device then updates
only its slice (a reduce-scatter of the gradients in, an all-gather of the updates out,
both inserted by XLA).

Nothing here moves data by hand: the placement is ``jax.lax.with_sharding_constraint``
with a :class:`jax.sharding.NamedSharding` on a :class:`jax.sharding.Mesh`, and XLA's
SPMD partitioner does the rest, on one host or many (``jax.distributed.initialize()``).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gradxform import _numerics, _treecheck, base


def _is_sparse(x) -> bool:
    return _treecheck.is_sparse(x)


def _spec(shape: Sequence[int], axis, size: int) -> PartitionSpec:
    """Splits the largest dimension divisible by ``size`` (the first of equal ones)."""
    candidates = [i for i, d in enumerate(shape) if d >= size and d % size == 0]
    if not candidates:
        return PartitionSpec()
    dim = max(candidates, key=lambda i: (shape[i], -i))
    return PartitionSpec(*([None] * dim), axis)


def shard_state(
    inner: base.GradientTransformation,
    mesh: Mesh,
    axis_name: str | tuple[str, ...] = "data",
    *,
    shard_update: bool = True,
) -> base.GradientTransformation:
    """Shards ``inner``'s state over a mesh axis (ZeRO), whatever the parameters' sharding.

    Each array in the state gets a :class:`~jax.sharding.NamedSharding` on ``mesh`` that
    splits one dimension over ``axis_name``: the largest dimension whose size is a
    multiple of the axis size (the first, among equal ones). A leaf with no such dimension
    (a scalar: step counts and hyperparameters; a vector shorter than the axis or of
    another size) is replicated. State memory per device is then the state's size divided
    by the axis size, plus those replicated leaves.

    With ``shard_update=True`` the update itself is computed on the slices: the incoming
    updates (gradients) and ``params`` are constrained to the same per-shape sharding as
    the state before ``inner`` runs (XLA turns this into a reduce-scatter, or a local
    slice of replicated gradients). With ``shard_update=False`` only the state is
    constrained, and XLA chooses where to compute. Either way the updates leave with the
    sharding the parameters had (the incoming updates', without ``params``): an
    all-gather, so that ``apply_updates`` keeps the parameters' layout.

    The state keeps ``inner``'s structure (``get_hyperparams`` and ``set_hyperparams``
    work as before), and the numbers are ``inner``'s: element-wise rules give the same
    bits; rules with reductions over a sharded dimension (Adafactor's factors, Muon's
    matrix products, norms) may sum in another order, a rounding-level difference.
    Sparse (BCOO) updates are passed through unconstrained.

    Works under ``jax.jit`` (the intended use) and eagerly, where each array is placed
    at once. It also shards the flat buffers of :func:`gradxform.flatten` and
    :func:`gradxform.lbfgs`.

    Args:
      inner: the transformation whose state to shard, e.g. ``gradxform.adamw(1e-3)``.
      mesh: the device mesh.
      axis_name: the mesh axis to split over (usually the data-parallel one), or a tuple
        of axes, split over together (e.g. ``("data", "model")``: all devices).
      shard_update: also compute the update on the slices (see above).

    Returns:
      A transformation with ``inner``'s state, sharded.

    Example:
      >>> import jax, jax.numpy as jnp, numpy as np, gradxform
      >>> from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
      >>> mesh = Mesh(np.array(jax.devices()), ("data",))
      >>> tx = gradxform.shard_state(gradxform.adam(1e-3), mesh)
      >>> params = {"w": jnp.ones((8, 4))}
      >>> state = jax.jit(tx.init)(params)
      >>> exp_avg = state.inner_state[0].exp_avg["w"]  # rows split over "data"
      >>> exp_avg.sharding.is_equivalent_to(NamedSharding(mesh, P("data", None)), 2)
      True
      >>> updates, state = jax.jit(tx.update)(params, state, params)
      >>> updates["w"].shape
      (8, 4)
    """
    axes = (axis_name,) if isinstance(axis_name, str) else tuple(axis_name)
    for name in axes:
        if name not in mesh.shape:
            raise ValueError(f"shard_state: the mesh has axes {tuple(mesh.shape)}, not {name!r}")
    size = math.prod(mesh.shape[name] for name in axes)
    axis = axes[0] if len(axes) == 1 else axes
    takes_extra = base._accepts_extra_args(inner.update)

    def place(tree):
        def constrain(x):
            if x is None or _is_sparse(x):
                return x
            sharding = NamedSharding(mesh, _spec(jax.numpy.shape(x), axis, size))
            return jax.lax.with_sharding_constraint(x, sharding)

        return jax.tree.map(constrain, tree, is_leaf=_is_sparse)

    def init(params):
        return place(inner.init(params))

    def update(updates, state, params=None, **extra_args):
        incoming = updates if params is None else params
        if shard_update:
            updates = place(updates)
            params = None if params is None else place(params)
        if takes_extra:
            new_updates, new_state = inner.update(updates, state, params, **extra_args)
        else:
            new_updates, new_state = inner.update(updates, state, params)
        new_updates = jax.tree.map(
            lambda u, g: u if _is_sparse(u) or _is_sparse(g) else _numerics.like_param(u, g),
            new_updates,
            incoming,
            is_leaf=_is_sparse,
        )
        return new_updates, place(new_state)

    return base.GradientTransformation(init, update)


__all__ = ["shard_state"]

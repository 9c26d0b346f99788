"""Private numerical helpers shared by every update rule.

Conventions, chosen to reproduce torch 2.13's single-tensor (for-loop) optimizers:

* Hyperparameters are scalar arrays of the default float type (float64 when
  ``jax_enable_x64`` is on, as torch's Python floats are doubles). Scalar coefficients
  (bias corrections, step sizes) are computed in that precision and cast to the
  parameter's precision where they meet a tensor, as torch casts a Python scalar.
* Per-parameter scalar state that torch keeps in a float32 tensor (``eta``, ``mu``,
  ``mu_product``) is float32 here too, rounded where torch rounds it.
* Complex leaves are handled as torch's ``view_as_real`` does: real and imaginary parts
  are independent real numbers.
* bfloat16/float16 leaves are computed in float32 (torch's "opmath"); buffers are stored
  in their own dtype.
* Placement: a buffer shaped as its parameter gets the parameter's sharding, a reduced
  buffer (Adafactor's factors) the sharding of the dimensions it keeps, and scalar
  state is replicated over the parameter's devices (:func:`like_param`,
  :func:`reduced_like`, :func:`replicated_like`). Under ``jax.jit`` this is done with
  ``jax.experimental.shard_alike``, which costs no computation: the zeros are never
  gathered on one device, and the values are those of plain ``jnp.zeros``. jax 0.11
  removed ``shard_alike``; there the same tie is rebuilt (:func:`shard_as`).
* Buffers: no two leaves of a state share a buffer, and none is a buffer of the
  parameters or of an array the caller passed in (a hyperparameter), so that the usual
  ``jax.jit(step, donate_argnums=(0, 1))`` can donate the parameters and the state. JAX
  returns its input unchanged from ``jnp.asarray``, ``astype`` to the same dtype and
  ``jnp.full`` of shape ``()``: each scalar state leaf is made with a call of its own
  (``jnp.zeros``) or copied (``jnp.array(..., copy=True)``).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

try:
    from jax.experimental.shard_alike import shard_alike as _shard_alike
except ImportError:  # jax >= 0.11 removed it: the same tie is rebuilt below
    _shard_alike = None

TORCH_SCALAR_DTYPE = jnp.float32
"""dtype of torch's per-parameter scalar state (``torch.get_default_dtype()``)."""


def hyper_dtype():
    """The dtype of hyperparameters: float64 under ``jax_enable_x64``, else float32.

    (``jax.dtypes.canonicalize_dtype``: the same dtype as ``jnp.result_type(float)`` in
    0.3 µs instead of 4; torch_compat's steps ask for it at every step.)"""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def real_dtype(dtype) -> jnp.dtype:
    """float32 for complex64, float64 for complex128, the dtype itself otherwise."""
    return jnp.finfo(dtype).dtype


def compute_dtype(dtype) -> jnp.dtype:
    """The dtype arithmetic runs in for a leaf of ``dtype`` (float32 for 16-bit floats)."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32:
        return jnp.dtype(jnp.float32)
    return dtype


def buffer_dtype(param_dtype, state_dtype=None) -> jnp.dtype:
    """dtype of a moment buffer: ``state_dtype`` if given (complex for complex params)."""
    param_dtype = jnp.dtype(param_dtype)
    if state_dtype is None:
        return param_dtype
    state_dtype = jnp.dtype(state_dtype)
    if jnp.issubdtype(param_dtype, jnp.complexfloating) and not jnp.issubdtype(
        state_dtype, jnp.complexfloating
    ):
        return jnp.result_type(state_dtype, jnp.complex64)
    return state_dtype


def scalar(value, like) -> jax.Array:
    """Casts a hyperparameter or coefficient to the real dtype of array ``like``."""
    return jnp.asarray(value).astype(real_dtype(like.dtype))


def once_per_dtype(fn: Callable[[jnp.dtype], Any]) -> Callable[[Any], Any]:
    """``fn`` of a real dtype, called once per real dtype however many leaves ask.

    The returned function takes any dtype (complex64 asks for float32, as
    :func:`real_dtype`) and returns ``fn``'s result for its real dtype, computed on the
    first call only. An update rule applied leaf by leaf would otherwise trace the same
    scalar work (casts, comparisons) once per leaf: identical work that costs tracing time
    and HLO instructions for every leaf of the tree.

    >>> import jax.numpy as jnp
    >>> calls = []
    >>> halves = once_per_dtype(lambda real: calls.append(real) or jnp.asarray(0.5, real))
    >>> halves(jnp.float32) is halves(jnp.complex64), len(calls)
    (True, 1)
    """
    cache = {}

    def for_dtype(dtype):
        real = real_dtype(dtype)
        if real not in cache:
            cache[real] = fn(real)
        return cache[real]

    return for_dtype


def cast_once(*values):
    """A function of a dtype that returns ``values`` cast to its real dtype (as
    :func:`scalar` does), casting them once per dtype however many leaves ask
    (:func:`once_per_dtype`).

    >>> import jax.numpy as jnp
    >>> coefficients = cast_once(jnp.asarray(0.1), jnp.asarray(2.0))
    >>> [c.dtype.name for c in coefficients(jnp.bfloat16)]
    ['bfloat16', 'bfloat16']
    >>> coefficients(jnp.float32) is coefficients(jnp.complex64)  # one real dtype
    True
    """
    return once_per_dtype(lambda real: tuple(jnp.asarray(v).astype(real) for v in values))


def as_real(x: jax.Array) -> jax.Array:
    """torch's ``view_as_real``: a complex array as a real one with a trailing axis of 2."""
    if jnp.iscomplexobj(x):
        return jnp.stack([x.real, x.imag], axis=-1)
    return x


def as_complex(x: jax.Array) -> jax.Array:
    """Inverse of :func:`as_real` (``view_as_complex``)."""
    return jax.lax.complex(x[..., 0], x[..., 1])


def lerp(start, end, weight):
    """torch's ``lerp``, with its two formulas split at ``|weight| < 0.5``.

    torch computes ``start + weight * (end - start)`` for ``|weight| < 0.5``, else
    ``end - (end - start) * (1 - weight)``. Both are ``base + coefficient * (end -
    start)``, with ``(start, weight)`` or ``(end, -(1 - weight))``: negating is exact
    and ``a - b`` is ``a + (-b)`` in IEEE arithmetic, so choosing the base and the
    coefficient first gives the numbers of the two formulas bit for bit (as XLA compiles
    them: ``tests/test_numerics.py``), with one formula computed instead of both (a
    scalar ``weight`` chooses them once for the whole array).

    ``weight`` is a number, or the pair :func:`lerp_weight` made from it (for a weight
    shared by many leaves: its scalar work is then done once, not once per leaf).

    >>> import jax.numpy as jnp
    >>> lerp(jnp.array([0.0, 1.0]), jnp.array([1.0, 3.0]), 0.25).tolist()
    [0.25, 1.5]
    >>> lerp(jnp.array([0.0, 1.0]), jnp.array([1.0, 3.0]), 0.75).tolist()
    [0.75, 2.5]
    >>> lerp(jnp.array([0.0, 1.0]), jnp.array([1.0, 3.0]), lerp_weight(0.75, jnp.float32)).tolist()
    [0.75, 2.5]
    """
    small, coefficient = weight if isinstance(weight, tuple) else lerp_weight(weight, start.dtype)
    # lax.select, not jnp.where: the same program, without a jitted call to trace for
    # every new leaf shape.
    base = jax.lax.select(jnp.broadcast_to(small, jnp.shape(start)), start, end)
    return base + coefficient * (end - start)


def lerp_weight(weight, dtype) -> tuple[jax.Array, jax.Array]:
    """:func:`lerp`'s choice for a scalar ``weight`` cast to ``dtype``'s real dtype:
    ``(|weight| < 0.5, weight or -(1 - weight))``.

    With a traced ``weight`` XLA copies this cheap scalar work into the kernel of every
    leaf that uses it (``benchmarks/kernel_variants.py``: 7 instructions and about 60 KB
    of compile memory per leaf for Adam). Making the choice behind a ``lax.cond`` would
    keep it out of the kernels, but XLA then compiles the kernels so that a few elements
    differ in their last bit, so it is not done.

    >>> [x.tolist() for x in lerp_weight(0.75, jnp.float32)]
    [False, -0.25]
    """
    weight = jnp.asarray(weight).astype(real_dtype(dtype))
    small = jnp.abs(weight) < 0.5
    return small, jnp.where(small, weight, -(1 - weight))


_SAME_SIZE_INT = {8: jnp.int64, 4: jnp.int32, 2: jnp.int16}


def max_abs(v) -> jax.Array:
    """``jnp.max(jnp.abs(v))`` of a real floating vector, 0 when ``v`` is empty.

    Computed as the largest of the magnitudes' bit patterns: with the sign bit cleared,
    IEEE floats order as their bits do read as integers (zero, subnormals, normals,
    infinity, then NaN). So the result is the largest magnitude exactly, and NaN where
    ``v`` holds one (its payload may differ from ``jnp.max``'s; the callers only compare
    it or test it with ``isfinite``). One difference from ``jnp.max``: XLA's CPU backend
    reads subnormals as zero in its floating maximum, and returns 0 where the largest
    magnitude is subnormal; this returns that subnormal, which the CPU's comparisons
    read as zero too.

    Why: XLA's CPU backend runs the integer maximum faster than the floating one with its
    NaN rule. Over 1000 float64 values alone in a small loop this took 0.27 us against
    0.78 (a sum 0.23); inside the one function jax 0.12 compiles ``minimize``'s loop into,
    it is a scalar loop at about twice a sum's time, and still took ``minimize`` to
    0.87-0.90x its time with the floating one (``benchmarks/RESULTS.md``). An L-BFGS
    iteration takes two (its gradient test and the line search's ``max|d|``).
    """
    v = jnp.asarray(v)
    if v.size == 0:
        return jnp.zeros([], v.dtype)
    if not jnp.issubdtype(v.dtype, jnp.floating) or v.dtype.itemsize not in _SAME_SIZE_INT:
        return jnp.max(jnp.abs(v))
    ints = _SAME_SIZE_INT[v.dtype.itemsize]
    magnitudes = jax.lax.bitcast_convert_type(v, ints) & jnp.asarray(jnp.iinfo(ints).max, ints)
    return jax.lax.bitcast_convert_type(jnp.max(magnitudes), v.dtype)


def all_finite(*vectors) -> jax.Array:
    """Whether every entry of the floating ``vectors`` is finite (a bool scalar).

    Computed as one sum of ``v * 0`` over them all, which is 0 where every entry is
    finite and NaN where one is infinite or NaN. Inside a loop that jax 0.12 compiles
    into one function, XLA's CPU backend runs this sum in about half the time of the
    integer maximum of ``max_abs`` (both as scalar loops there): ``minimize`` on
    Rosenbrock-1000 takes 0.88x the time it took with ``isfinite(max_abs(...))``
    (``benchmarks/RESULTS.md``). The vectors must have one shape (none is broadcast).
    """
    vectors = [jnp.asarray(v) for v in vectors]
    if len({v.shape for v in vectors}) > 1:
        raise ValueError(f"all_finite: vectors of different shapes: {[v.shape for v in vectors]}")
    total = functools.reduce(jnp.add, [v * 0 for v in vectors])
    return jnp.isfinite(jnp.sum(total))


def _placed(p) -> bool:
    """Whether state built for ``p`` must be placed as ``p``: traced, or on several devices.

    A concrete array on one device (or a numpy array, a Python number) needs nothing: its
    state is made on the default device, as before. Nor does anything when JAX has a
    single device in all: there is no other placement, and ``shard_alike`` would only add
    two operations per leaf to a jitted ``init`` (at 1000 leaves, 19 MB more memory to
    compile it and 1.4x its time, ``benchmarks/leaves_scaling.py``).
    """
    if isinstance(p, jax.core.Tracer):
        return jax.device_count() > 1
    return isinstance(p, jax.Array) and len(p.sharding.device_set) > 1


def _sharding_group_tie():
    """``shard_alike``'s tie, rebuilt for jax >= 0.11, which removed it; None where this
    jax lacks what it needs.

    A primitive that returns ``x`` and puts ``x`` and ``like`` in one Shardy sharding
    group (``sdy.sharding_group``), which is what ``shard_alike`` lowered to: XLA gives
    both the same sharding, and nothing is computed. It uses jax's internal modules
    (``jax._src``), as no public API offers the group any more. With Shardy turned off
    (``jax_use_shardy_partitioner=False``) it is GSPMD's shard group, as ``shard_alike``'s
    was.
    """
    try:
        import itertools
        from functools import partial

        from jax._src import core, dispatch
        from jax._src.interpreters import batching, mlir
        from jax._src.lib import xla_client as xc
        from jax._src.lib.mlir import dialects

        dialects.sdy.sharding_group  # noqa: B018 -- present, or no tie at all
    except (ImportError, AttributeError):
        return None
    group_ids = itertools.count()
    tie_p = core.Primitive("gradxform_shard_as")
    tie_p.def_impl(partial(dispatch.apply_primitive, tie_p))
    tie_p.def_abstract_eval(lambda x, like: x)

    def lower(ctx, x, like):
        group = next(group_ids)
        if getattr(jax.config, "jax_use_shardy_partitioner", True):
            dialects.sdy.sharding_group(x, group)
            dialects.sdy.sharding_group(like, group)
            return [x]
        # GSPMD, where the user turned Shardy off: its own shard group, as shard_alike's.
        group_sharding = xc.OpSharding()
        group_sharding.type = xc.OpSharding.Type.UNKNOWN
        group_sharding.is_shard_group = True
        group_sharding.shard_group_id = group
        group_sharding.shard_group_type = xc.OpSharding.ShardGroupType.AS
        x_aval, like_aval = ctx.avals_in
        mlir.wrap_with_sharding_op(ctx, like, like_aval, group_sharding, has_side_effect=True)
        return [mlir.wrap_with_sharding_op(ctx, x, x_aval, group_sharding, has_side_effect=True)]

    def batch(args, dims):
        (x, like), (x_dim, like_dim) = args, dims
        if x_dim == like_dim:
            return tie_p.bind(x, like), x_dim
        return x, x_dim  # batched differently: left untied

    mlir.register_lowering(tie_p, lower)
    batching.primitive_batchers[tie_p] = batch

    @jax.custom_jvp
    def tie(x, like):
        return tie_p.bind(x, like)

    @tie.defjvp
    def tie_jvp(primals, tangents):
        return tie(*primals), tangents[0]

    return tie


_tie = (lambda x, like: _shard_alike(x, like)[0]) if _shard_alike is not None else _sharding_group_tie()
"""The tie :func:`shard_as` uses under ``jax.jit``: jax's ``shard_alike`` where it exists,
else the rebuilt one; None where neither does."""


def shard_as(x, like):
    """``x`` with the sharding of ``like`` (an array of the same shape); its values are
    unchanged, and ``like``'s values are never computed.

    Concrete arrays are put on ``like``'s devices. Under ``jax.jit``, the two are tied
    with ``jax.experimental.shard_alike`` (jax up to 0.10) or the same tie rebuilt
    (:func:`_sharding_group_tie`, later jax); where neither exists, ``x`` is returned
    as it is and XLA places it.
    """
    if not isinstance(like, jax.core.Tracer) and not isinstance(x, jax.core.Tracer):
        return jax.device_put(x, like.sharding)
    return x if _tie is None else _tie(x, like)


def like_param(buffer, p):
    """``buffer`` (of ``p``'s shape) with the sharding of ``p``; its values are unchanged."""
    if not _placed(p):
        return buffer
    return shard_as(buffer, p)


def reduced_like(shape, dtype, p, axis):
    """Zeros of ``shape``, ``p`` reduced over ``axis`` with ``keepdims``: the kept dimensions
    keep ``p``'s sharding, the reduced ones (of size 1) are replicated."""
    zeros = jnp.zeros(shape, dtype)
    if not _placed(p):
        return zeros
    # Tied to a reduction of ``p`` itself, which is never computed (only its sharding is
    # used); a reduction of constant zeros could be folded away before XLA propagates.
    return shard_as(zeros, jnp.sum(p, axis=axis, keepdims=True))


def replicated_like(x, p):
    """``x`` (a scalar or small array) replicated over the devices that hold ``p``."""
    x = jnp.asarray(x)
    if not _placed(p):
        return x
    return shard_as(x, jnp.broadcast_to(jnp.sum(p), x.shape))  # never computed


def replicate_over_params(tree, params):
    """:func:`replicated_like` on each leaf of ``tree``, over the devices of the first
    leaf of ``params`` (no change when ``params`` has no leaves)."""
    leaves = jax.tree.leaves(params)
    if not leaves or not _placed(leaves[0]):
        return tree
    return jax.tree.map(lambda x: replicated_like(x, leaves[0]), tree)


def keep_placement(new, old):
    """``new`` (a state) with the sharding of ``old`` (the same state one update earlier),
    leaf by leaf, so that an update never moves its state."""
    return jax.tree.map(like_param, new, old)


def zeros_like_buffer(params, state_dtype=None):
    """Zero buffers shaped and sharded as ``params``, in :func:`buffer_dtype`."""
    return jax.tree.map(
        lambda p: like_param(jnp.zeros(jnp.shape(p), buffer_dtype(jnp.result_type(p), state_dtype)), p),
        params,
    )


def full_like_buffer(params, value, state_dtype=None):
    """Buffers filled with ``value`` (``value + value*1j`` for complex leaves, as torch)."""

    def make(p):
        dtype = buffer_dtype(jnp.result_type(p), state_dtype)
        # A new array (``jnp.full`` of shape ``()`` returns its fill as it is): a 0-d leaf's
        # buffer must not be the hyperparameter array ``value`` (see :func:`per_leaf_scalars`).
        fill = jnp.array(jnp.asarray(value).astype(real_dtype(dtype)), copy=True)
        if jnp.issubdtype(dtype, jnp.complexfloating):
            fill = jax.lax.complex(fill, fill)
        return like_param(jnp.full(jnp.shape(p), fill, dtype), p)

    return jax.tree.map(make, params)


def per_leaf_scalars(params, value, dtype=TORCH_SCALAR_DTYPE):
    """One scalar per parameter leaf: the per-leaf form of scalar state (see
    :func:`scalar_rule`), as torch keeps ``state["step"]``, ``eta``, ... per parameter.

    Each is a new array: ``value`` may be a hyperparameter array held elsewhere in the
    state, and no two leaves of a state may share a buffer (``jax.jit(...,
    donate_argnums=...)`` refuses to donate one buffer twice).
    """
    return jax.tree.map(lambda p: replicated_like(jnp.array(value, dtype, copy=True), p), params)


def shared_scalar(params, value, dtype=TORCH_SCALAR_DTYPE):
    """One scalar for all the leaves of ``params``: the shared form of scalar state (see
    :func:`scalar_rule`), a new array replicated over the devices of ``params``.

    >>> import jax.numpy as jnp
    >>> shared_scalar({"a": jnp.zeros(2), "b": jnp.zeros(3)}, 0, jnp.int32)
    Array(0, dtype=int32)
    """
    return replicate_over_params(jnp.array(value, dtype, copy=True), params)


def shared_step(params):
    """The step counter of a transformation: one int32 zero for all of ``params``, as
    optax's ``count`` (torch_compat gives it to each parameter of a step group as torch's
    per-parameter ``step``)."""
    return shared_scalar(params, 0, jnp.int32)


def is_shared(value) -> bool:
    """Whether scalar state ``value`` is in the shared form (one array), not a tree."""
    return jax.tree_util.treedef_is_leaf(jax.tree.structure(value))


def scalar_rule(rule: Callable[..., tuple], updates, *values) -> tuple[list, tuple]:
    """Runs the scalar part of an update rule once per transformation, or once per leaf.

    A transformation's scalar state (the step count, NAdam's ``mu_product``, ASGD's
    ``eta`` and ``mu``) comes in one of two forms, and ``update`` accepts both:

    * shared (what ``init`` makes): one scalar array for all the leaves, as optax's
      ``count``. ``rule`` runs once, so every scalar coefficient (bias corrections,
      step-dependent factors) is computed once, not once per leaf;
    * per leaf: a tree of scalars with the structure of ``updates``, as torch keeps
      ``state["step"]`` per parameter (a parameter whose first gradient came later has a
      smaller step). ``rule`` runs once per leaf. torch_compat does not need it: it calls
      ``update`` in the shared form once per group of parameters sharing a step.

    The new values keep the form they came in. With a single-array ``updates`` both
    forms are the same array.

    Args:
      rule: ``rule(*scalars) -> (new_scalars, coefficients)``, with ``new_scalars`` a
        tuple of one array per value, and ``coefficients`` anything the leaf function
        needs (typically a :func:`cast_once` function of a dtype).
      updates: the update tree.
      *values: the scalar state fields, all in the same form.

    Returns:
      ``(coefficients, new_values)``: a list with one coefficients entry per leaf of
      ``updates`` (the same object for every leaf in the shared form), and the tuple of
      the new values in the form given.

    Raises:
      ValueError: if some of ``values`` are shared and others per leaf.

    >>> import jax.numpy as jnp
    >>> rule = lambda step: ((step + 1,), 2 * (step + 1))
    >>> updates = {"a": jnp.zeros(2), "b": jnp.zeros(3)}
    >>> coefficients, (step,) = scalar_rule(rule, updates, jnp.asarray(4))
    >>> [int(c) for c in coefficients], int(step)
    ([10, 10], 5)
    >>> _, (steps,) = scalar_rule(rule, updates, {"a": jnp.asarray(1), "b": jnp.asarray(7)})
    >>> {k: int(v) for k, v in steps.items()}
    {'a': 2, 'b': 8}
    """
    treedef = jax.tree.structure(updates)
    shared = [is_shared(v) for v in values]
    if all(shared):
        new, coefficients = rule(*values)
        return [coefficients] * treedef.num_leaves, tuple(new)
    if any(shared):
        raise ValueError(
            "the optimizer state's scalar fields mix the shared form (one array) and the "
            "per-leaf form (a tree like the updates); give them all in one form"
        )
    results = [rule(*scalars) for scalars in zip(*(treedef.flatten_up_to(v) for v in values))]
    new = tuple(treedef.unflatten(list(column)) for column in zip(*(r[0] for r in results)))
    return [r[1] for r in results], new


def has_no_leaves(tree) -> bool:
    """Whether ``tree`` holds no array at all: ``{}``, ``[]``, ``None``, ``{"a": None}``.

    Such updates have nothing to compute and no per-parameter state: every transformation
    returns them as they are (the same structure, as optax does) and its state unchanged,
    and needs no ``params`` for them.
    """
    return not jax.tree.leaves(tree)


def leafwise(fn: Callable[..., tuple], updates, *trees, num_outputs: int, per_leaf: list | None = None):
    """Maps ``fn`` over matching leaves of ``updates`` and ``trees``.

    ``fn`` gets real arrays: a complex leaf (and the matching leaves of the other trees)
    is passed through :func:`as_real`, and ``fn``'s outputs are turned back into complex
    arrays. ``fn`` returns a tuple of ``num_outputs`` arrays; the result is a tuple of
    ``num_outputs`` trees shaped like ``updates``. A tree given as ``None`` gives ``None``
    leaves to ``fn``. ``per_leaf``, a list with one entry per leaf (the coefficients of
    :func:`scalar_rule`), gives ``fn`` its last argument as it is.
    """
    treedef = jax.tree.structure(updates)
    leaf_lists = [jax.tree.leaves(updates)]
    for tree in trees:
        if tree is None:
            leaf_lists.append([None] * treedef.num_leaves)
        else:
            leaf_lists.append(treedef.flatten_up_to(tree))
    outputs = [[] for _ in range(num_outputs)]
    extras = [()] * treedef.num_leaves if per_leaf is None else [(e,) for e in per_leaf]
    for leaves, extra in zip(zip(*leaf_lists), extras):
        is_complex = any(leaf is not None and jnp.iscomplexobj(leaf) for leaf in leaves)
        if is_complex:
            leaves = [None if leaf is None else as_real(leaf) for leaf in leaves]
        results = fn(*leaves, *extra)
        if len(results) != num_outputs:
            raise AssertionError("leaf function returned the wrong number of outputs")
        for out, result in zip(outputs, results):
            if is_complex and result is not None and jnp.ndim(result) > 0 and not jnp.iscomplexobj(result):
                result = as_complex(result)
            out.append(result)
    return tuple(
        None if all(r is None for r in out) else treedef.unflatten(out) for out in outputs
    )


def tree_cast(tree: Any, like: Any):
    """Casts each leaf of ``tree`` to the dtype of the matching leaf of ``like``."""
    return jax.tree.map(lambda x, ref: jnp.asarray(x).astype(jnp.result_type(ref)), tree, like)

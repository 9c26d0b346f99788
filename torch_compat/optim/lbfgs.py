"""``LBFGS``: torch.optim.LBFGS with ``step(closure)``, on gradxform's L-BFGS state machine."""

from __future__ import annotations

import functools
import weakref
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from gradxform import _internal
from gradxform._internal import lbfgs_core as core
from torch_compat.optim._from_spec import make_init, scalar
from torch_compat.optim.optimizer import Optimizer


_CACHED = ("d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad", "prev_loss")
"""The state keys torch writes at the end of a step (from its cached tensors)."""
_LISTS = ("old_dirs", "old_stps", "ro")
"""The state keys torch keeps as lists of tensors, one per curvature pair."""
_KEEP_BYTES = 16 * 2**20
"""The largest history (both ``[history_size, n]`` buffers) a step keeps for the next
one, in bytes (see ``LBFGS._keep``)."""


@functools.lru_cache(maxsize=64)
def _compiled_calls(history_size: int, line_search_fn: str | None) -> tuple[Callable, Callable]:
    """``(start, advance)``, the two jitted calls of a step, per structure; each returns
    the packed run (see :func:`_pack`), the next point to evaluate, unflattened into the
    parameters' shapes, and the report (:func:`_report`).

    * ``start(counts, saved, history, ring, value, grads, params, dynamic)`` begins the
      step from torch's state (``counts`` is ``(func_evals, n_iter)``; ``saved`` holds
      torch's cached tensors but the history; ``history`` is ``(old_dirs, old_stps)``
      and ``ring`` a packed run whose ``ro``, ``history_start`` and ``history_len`` go
      with it, as :meth:`LBFGS._saved` gathers them) and takes the first evaluation, at
      ``params`` themselves. The state is rebuilt here, not by eager operations per key,
      and the step's first dispatch is also its first evaluation's. ``history`` is
      donated.
    * ``advance(small, history, value, grads, params, dynamic)`` takes each later
      evaluation. Its history buffers are donated (updated in place).

    Each traces only its own case of ``lbfgs_tell`` (the first evaluation, or a later
    one), with no branch on the phase. Cached for the 64 structures used last; the
    compiled functions refer to no optimizer or parameter (they are their arguments).
    The other options are traced values, so changing ``lr``, ``max_iter``, ``max_eval``
    or the tolerances never recompiles.
    """
    static = core.LbfgsOptions(history_size=history_size, line_search_fn=line_search_fn)

    def start(counts, saved, history, ring, value, grads, params, dynamic):
        x, unflatten = _placed_unflatten(params)
        state = core.init_state(x.size, x.dtype, history_size)
        state = state._replace(func_evals=jnp.asarray(counts[0], jnp.int32), n_iter=jnp.asarray(counts[1], jnp.int32))
        state = _restored(state, saved, history, ring, x.dtype)
        return evaluated(core.lbfgs_begin(state, x), value, grads, unflatten, dynamic, first=True)

    def advance(small, history, value, grads, params, dynamic):
        unflatten = _placed_unflatten(params)[1]
        return evaluated(_unpack(small, history), value, grads, unflatten, dynamic, first=False)

    def evaluated(before, value, grads, unflatten, dynamic, first):
        grad = core.flatten(grads)[0].astype(before.x.dtype)
        run = core.lbfgs_tell(before, value, grad, static._replace(**dynamic), first=first)
        # At most one curvature pair is stored per evaluation (at an iteration's start).
        pushed = (run.state.history_len != before.state.history_len) | (
            run.state.history_start != before.state.history_start)
        return *_pack(run), unflatten(core.lbfgs_trial(run)), _report(run, pushed)

    return jax.jit(start, donate_argnums=2), jax.jit(advance, donate_argnums=1)


def _placed_unflatten(params):
    """``core.flatten``, whose ``unflatten`` gives each leaf its parameter's sharding
    (the flat vector's is XLA's choice: a sharded parameter must not come back gathered)."""
    x, unflatten = core.flatten(params)
    return x, lambda v: jax.tree.map(_internal.like_param, unflatten(v), params)


def _report(run, pushed):
    """What the Python loop reads after each evaluation, as one int32 vector (one host
    transfer; :func:`_read_report` reads it): the flags, the scalars torch's state takes
    from the run (:meth:`LBFGS._torch_state`) and the bits of ``t`` and ``prev_loss``.

    The flags: bit 0 set when the step is done, bit 1 when torch would have raised
    (``torch_error``), bit 2 when the evaluation stored a curvature pair (the loop counts
    them). The scalars: ``[n_iter of this step, status, func_evals, n_iter,
    history_len]``. So the end of a step reads nothing more from the device than the last
    report: :func:`_finish` only makes torch's tensors."""
    done, error = (run.phase == core.DONE).astype(jnp.int32), run.torch_error.astype(jnp.int32)
    flags = done + 2 * error + 4 * jnp.asarray(pushed).astype(jnp.int32)
    state = run.state
    ints = jnp.stack([flags, run.n_iter, run.status, state.func_evals, state.n_iter, state.history_len])
    floats = jax.lax.bitcast_convert_type(jnp.stack([state.t, state.prev_loss]), jnp.int32)
    return jnp.concatenate([ints.astype(jnp.int32), floats.reshape(-1)])


def _read_report(report) -> tuple[int, np.ndarray, np.ndarray]:
    """``(flags, scalars, [t, prev_loss])`` from :func:`_report`'s vector, on the host
    (the floats' bits as the run held them)."""
    report = np.asarray(report)
    return int(report[0]), report[1:6], report[6:].view(np.dtype(_internal.hyper_dtype()))


# -- a run between evaluations, packed into a few arrays -------------------------------
#
# A jitted call pays for each array it returns (a few microseconds each, as much as the
# whole L-BFGS update on a small problem), and an LbfgsRun has about 40. Between two
# evaluations the Python loop only carries the run from one call to the next, so it
# travels packed: its fields of each dtype raveled into one vector each (``small``), and
# the two [history_size, n] buffers as they are (``history``). The values are the same bits.


def _history_free(run: core.LbfgsRun) -> core.LbfgsRun:
    return run._replace(state=run.state._replace(old_dirs=None, old_stps=None))


@functools.lru_cache(maxsize=64)
def _layout(n: int, dtype, history_size: int):
    """``(treedef, [(shape, dtype)] per leaf, dtypes)`` of a history-free run."""
    zeros = jnp.zeros(n, dtype)
    template = jax.eval_shape(lambda: core.lbfgs_begin(core.init_state(n, dtype, history_size), zeros))
    leaves, treedef = jax.tree.flatten(_history_free(template))
    specs = [(leaf.shape, leaf.dtype) for leaf in leaves]
    return treedef, specs, tuple(dict.fromkeys(dt for _, dt in specs))


def _pack(run: core.LbfgsRun) -> tuple:
    """``(small, history)``: ``small`` a vector per dtype, ``history`` ``(old_dirs, old_stps)`` (traced)."""
    treedef, specs, dtypes = _layout(run.x.size, run.x.dtype, run.state.ro.size)
    leaves = jax.tree.leaves(_history_free(run))
    if [(x.shape, x.dtype) for x in leaves] != specs:  # lbfgs_tell keeps every field's shape and dtype
        raise AssertionError("the L-BFGS run's layout changed between evaluations")
    groups = tuple(jnp.concatenate([jnp.ravel(x) for x in leaves if x.dtype == dt]) for dt in dtypes)
    return groups, (run.state.old_dirs, run.state.old_stps)


def _unpack(groups: tuple, history: tuple) -> core.LbfgsRun:
    """The run that :func:`_pack` packed (traced; its layout follows from the shapes)."""
    old_dirs, old_stps = history
    history_size, n = old_dirs.shape
    treedef, specs, dtypes = _layout(n, old_dirs.dtype, history_size)
    offsets = [0] * len(dtypes)
    leaves = []
    for shape, dtype in specs:
        group = dtypes.index(dtype)
        size = int(np.prod(shape, dtype=int))
        leaves.append(groups[group][offsets[group] : offsets[group] + size].reshape(shape))
        offsets[group] += size
    run = jax.tree.unflatten(treedef, leaves)
    return run._replace(state=run.state._replace(old_dirs=old_dirs, old_stps=old_stps))


def _restored(state: core.LbfgsState, saved: dict, history: tuple, ring: tuple, dtype) -> core.LbfgsState:
    """``state`` with torch's cached tensors written in (traced), the history from
    ``history``, ``(old_dirs, old_stps)``, and the ``ro``, ``history_start`` and
    ``history_len`` of ``ring``, a packed run (see :func:`_pack`) with that history."""
    n, hyper = state.d.size, _internal.hyper_dtype()

    def cast(v, dt, shape=()):
        return jnp.asarray(v).astype(dt).reshape(shape)

    last = _unpack(ring, history).state
    return state._replace(
        d=cast(saved["d"], dtype, n),
        t=cast(saved["t"], hyper),
        old_dirs=last.old_dirs,
        old_stps=last.old_stps,
        ro=last.ro,
        history_start=last.history_start,
        history_len=last.history_len,
        H_diag=cast(saved["H_diag"], dtype),
        prev_flat_grad=cast(saved["prev_flat_grad"], dtype, n),
        prev_loss=cast(saved["prev_loss"], hyper),
    )


@jax.jit
def _ring(old_dirs: list, old_stps: list, ro: list, length, like) -> tuple:
    """torch's history lists, padded to ``history_size`` entries, as ``start``'s
    ``history`` and ``ring``: stacked in torch's order, oldest first (the ring starts at
    row 0), in a packed run. ``like``: a row of the flat parameters' size and dtype."""

    def stacked(values, shape):
        return jnp.stack([jnp.asarray(v).astype(like.dtype).reshape(shape) for v in values])

    state = core.init_state(like.size, like.dtype, len(ro))._replace(
        old_dirs=stacked(old_dirs, like.shape),
        old_stps=stacked(old_stps, like.shape),
        ro=stacked(ro, ()),
        history_len=jnp.asarray(length, jnp.int32),
    )
    small, history = _pack(core.lbfgs_begin(state, like))
    return history, small


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _fresh(n: int, dtype, history_size: int) -> tuple:
    """A fresh state as ``start`` reads it: ``(d, H_diag, history, ring)``, zeros (``d``
    stands for ``prev_flat_grad`` too) and ``H_diag`` 1, in one compiled call."""
    state = core.init_state(n, dtype, history_size)
    small, history = _pack(core.lbfgs_begin(state, state.d))
    return state.d, state.H_diag, history, small


@functools.partial(jax.jit, static_argnums=3)
def _finish(small, history, params, newest: int):
    """What the end of a step reads from the packed run, in one compiled call: the point
    ``x`` in the parameters' shapes, and torch's cached tensors, of the history only the
    ``newest`` last rows (and ``ro`` entries) in torch's order, oldest first (none with
    ``newest=0``).

    The rows older than those the step stored are those it was given, unchanged: the
    caller keeps its own arrays for them (as torch keeps its list), so that a step returns
    as many rows as it stored, not the whole history. ``newest`` is static: the caller
    passes ``min(history_size, max_iter)`` (at least the pairs a step can store) or, for a
    step that stored none, 0, so that the outputs do not depend on how many the step
    stored (two programs per structure)."""
    run = _unpack(small, history)
    state = run.state
    cached = dict(d=state.d, al=state.al, H_diag=state.H_diag, prev_flat_grad=state.prev_flat_grad)
    if newest:
        rows = (state.history_start + state.history_len - newest + jnp.arange(newest)) % state.ro.size
        cached.update(old_dirs=state.old_dirs[rows], old_stps=state.old_stps[rows], ro=state.ro[rows])
    return _placed_unflatten(params)[1](run.x), cached


def _entries(array, count: int, last: bool = True) -> list:
    """The last ``count`` entries of ``array`` (the first ones with ``last=False``), each
    an array of its own, as torch keeps its history (a list of tensors).

    A jitted call pays for each array it returns, about 1.5 µs, and about 5 µs for
    itself. So a third of the array or more comes from one ``unstack`` of it all; fewer
    entries (a step that stores a pair or two of a long history, ``al``'s valid entries
    while the history fills) come in blocks of ``_BLOCK``, and the last few one call
    each. Three programs per shape, compiled once: a program per count would compile at
    each new length of the history, about 5 ms per entry it returns."""
    if count <= 0:
        return []
    first = len(array) - count if last else 0
    if 3 * count >= len(array):
        return list(jnp.unstack(array)[first : first + count])
    out = []
    while len(out) < count:
        at = first + len(out)
        if count - len(out) < 4 or len(array) < _BLOCK:
            out.append(_entry(array, at))
        else:
            start = min(at, len(array) - _BLOCK)  # (the block stays inside the array)
            block = _block(array, start)
            out.extend(block[at - start : at - start + count - len(out)])
    return out


_BLOCK = 8


@jax.jit
def _entry(array, i):
    return jax.lax.dynamic_index_in_dim(array, i, 0, keepdims=False)


@jax.jit
def _block(array, start):
    return jnp.unstack(jax.lax.dynamic_slice_in_dim(array, start, _BLOCK))


@functools.lru_cache(maxsize=64)
def _flat_spec(layout: tuple) -> jax.ShapeDtypeStruct:
    """The shape and dtype of the flat parameter vector, for parameters of ``layout``
    (``(shape, dtype)`` per parameter): traced once per layout."""
    return jax.eval_shape(lambda params: core.flatten(params)[0], [jax.ShapeDtypeStruct(*p) for p in layout])


def _same_entries(state: dict[str, Any], refs: tuple) -> bool:
    """Whether torch's lists in ``state`` hold exactly the entries ``refs`` refer to."""
    for key, key_refs in zip(_LISTS, refs):
        entries = state.get(key)
        if not isinstance(entries, list) or len(entries) != len(key_refs):
            return False
        if not all(ref() is entry for ref, entry in zip(key_refs, entries)):
            return False
    return True


def _array(loss):
    """The closure's loss as an array (``jnp.asarray`` costs a dispatch: only where needed)."""
    return loss if isinstance(loss, jax.Array) else jnp.asarray(loss)


class LBFGS(Optimizer):
    """L-BFGS, as ``torch.optim.LBFGS``: one param group, ``step(closure)`` required.

    Each ``step`` calls ``closure`` (which must zero the gradients, compute the loss, fill
    ``.grad`` — for example with :func:`torch_compat.backward` — and return the loss, as a
    Python float or a JAX scalar) as many times as torch would, at the same points. The
    direction, two-loop recursion and strong-Wolfe line search are gradxform's
    (:mod:`gradxform.optimizers.lbfgs`, :mod:`gradxform.linesearch`), compiled; only the closure
    runs in Python. ``state`` holds torch's keys: ``func_evals``, ``n_iter``, ``d``,
    ``t``, ``old_dirs``, ``old_stps``, ``ro``, ``H_diag``, ``prev_flat_grad``,
    ``prev_loss`` and ``al``.

    Edge cases are torch's: with ``max_iter <= 0`` a step calls the closure once and
    stores ``d``, ``t``, ... as ``None``; a closure that fills the gradients but returns
    NaN leaves the iterates as they would be (the loss only enters the tolerance tests),
    and with ``line_search_fn="strong_wolfe"`` a NaN loss at a point that meets the Wolfe
    conditions in the bracketing phase raises torch's ``IndexError: list index out of
    range``, with the parameters at the line search's start and ``func_evals`` and
    ``n_iter`` as torch leaves them. Where torch would carry a non-finite gradient or step
    into the parameters, the step stops at the last point where both were finite instead.

    For a problem written as a pure JAX function, :func:`gradxform.minimize` runs the same
    iterations in one compiled loop, with no Python in between.

    Example:
      >>> import jax.numpy as jnp, torch_compat
      >>> from torch_compat import optim
      >>> model = torch_compat.as_parameters({"w": jnp.zeros(2)})
      >>> optimizer = optim.LBFGS(torch_compat.parameters(model), line_search_fn="strong_wolfe")
      >>> def closure():
      ...     optimizer.zero_grad()
      ...     return torch_compat.backward(lambda p: jnp.sum((p["w"] - 3.0) ** 2), model)
      >>> loss = optimizer.step(closure)  # the loss at the starting point
      >>> float(loss), model["w"].data.tolist()
      (18.0, [3.0, 3.0])
    """

    _spec = _internal.SPECS["lbfgs"]
    __init__ = make_init("LBFGS", __name__, _spec)

    def _construct(self, params, options: dict[str, Any]) -> None:
        """torch's constructor: checks, ``max_eval`` defaulting to ``max_iter * 5 // 4``, one group."""
        self._spec.check_torch(options, "init")
        if options["max_eval"] is None:
            options = {**options, "max_eval": options["max_iter"] * 5 // 4}
        super().__init__(params, options)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        self._params = self.param_groups[0]["params"]
        self._options = None  # (the options' values, them as arrays): see _dynamic
        self._blanks = None  # (the parameters' layout, zeros and a one): see _blank
        self._kept = None  # the last step's history as ring buffers: see _keep

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Pickling keeps torch's attributes only (defaults, state, param_groups): the
        # parameters' list and the caches are made again. (torch's own LBFGS cannot step
        # after a pickle round trip or a deepcopy: it loses its _params.)
        super().__setstate__(state)
        self._params = self.param_groups[0]["params"]
        self._options = self._blanks = self._kept = None

    # -- flat views of the parameters and gradients (complex as real pairs, as torch) ----

    def _grads(self) -> list:
        """The gradients as torch gathers them: zeros for ``None``, dense for sparse."""
        grads = []
        for p in self._params:
            g = p.grad
            if g is None:
                g = jnp.zeros(p.shape, p.dtype)
            elif isinstance(g, sparse.BCOO):
                g = g.todense()
            grads.append(g)
        return grads

    def _set_params(self, values) -> None:
        for p, value in zip(self._params, values):
            p._data = value

    # -- torch's state layout <-> gradxform's LbfgsState ----------------------------------

    def _saved(self, state: dict[str, Any], params: list, history_size: int) -> tuple[dict[str, Any], tuple, tuple, tuple | None]:
        """``(saved, history, ring, refs)``: torch's cached tensors from ``state``, as the start
        of a step reads them, and its history (the last ``history_size`` entries of its
        lists) as ring buffers. Where no step has iterated (``d`` is ``None``: torch starts
        over), a fresh state's values (:func:`_fresh`), with the same structure, so that
        one compiled start serves every step. Not ``al``: the two-loop recursion writes its
        entries before it reads them, and a step that runs none keeps torch's (see
        :meth:`_al`).

        The ring buffers the last step left (:meth:`_keep`) are used as they are when
        torch's lists still hold the very entries that step stored: else the lists are
        stacked again (:func:`_ring`), padded with zeros to ``history_size`` entries
        (never read: the compiled call reads ``history_len`` of them). ``refs``: the
        weak references to the lists' entries that the last step kept, where they still
        hold (:meth:`_keep` reuses them), else ``None``."""
        kept, self._kept = self._kept, None  # (its buffers are donated to this step)
        layout = self._param_layout(params)
        if state.get("d") is None:
            flat = _flat_spec(layout)
            row, one, history, ring = _fresh(flat.shape[0], flat.dtype, history_size)
            return dict(d=row, t=0.0, H_diag=one, prev_flat_grad=row, prev_loss=0.0), history, ring, None
        saved = {key: state[key] for key in ("d", "t", "H_diag", "prev_flat_grad", "prev_loss")}
        if isinstance(saved["H_diag"], int) and saved["H_diag"] == 1:  # torch's, before its first pair
            saved["H_diag"] = self._blank(params)["one"]
        if kept is not None and kept[0] == (history_size, layout) and _same_entries(state, kept[1]):
            return saved, *kept[2], kept[1]
        blank = self._blank(params)
        lists = [list(state[key])[-history_size:] for key in _LISTS]
        length = len(lists[0])
        pad = [[blank["row"]] * (history_size - length)] * 2 + [[blank["zero"]] * (history_size - length)]
        return saved, *_ring(*(entries + padding for entries, padding in zip(lists, pad)), length, blank["row"]), None

    def _keep(self, state: dict[str, Any], history: tuple, ring: tuple, history_size: int, params: list,
              refs: tuple | None, new: int) -> None:
        """Keeps the step's last history buffers and packed run (``history`` and ``ring``)
        for the next step, with weak references to the entries of torch's lists they hold.
        ``refs``: those of the lists the step began with (from :meth:`_saved`), or
        ``None``; the lists' entries but the ``new`` last are among them (the newest of
        the given ones), and keep their references.

        The next step then skips reading the lists in again: about 150 µs with
        ``history_size=100``, which is most of a short step's cost on a small problem. It
        keeps a second copy of the history between steps (a step holds both anyway, while
        it runs), so only up to ``_KEEP_BYTES``: beyond that the step's own work dwarfs
        the saving."""
        if history[0].nbytes * 2 > _KEEP_BYTES or state.get("d") is None:
            return
        kept = []
        for i, key in enumerate(_LISTS):
            entries = state[key]
            old = len(entries) - new if refs is not None else 0  # the entries the step was given
            try:
                made = tuple(weakref.ref(entry) for entry in entries[old:])
            except TypeError:  # an entry put in by hand that takes no weak reference (a float)
                return
            kept.append(refs[i][len(refs[i]) - old :] + made if old else made)
        self._kept = (history_size, self._param_layout(params)), tuple(kept), (history, ring)

    @staticmethod
    def _param_layout(params: list) -> tuple:
        """``(shape, dtype)`` per parameter: what the caches of flat layouts are keyed by."""
        return tuple((p.shape, p.dtype) for p in params)

    def _blank(self, params: list) -> dict[str, jax.Array]:
        """A zero row and scalar and a one, of the flat parameters' size and dtype, which
        pad torch's lists: made once per layout of the parameters (not at every step:
        each is an eager dispatch)."""
        layout = self._param_layout(params)
        if self._blanks is None or self._blanks[0] != layout:
            flat = _flat_spec(layout)
            self._blanks = layout, dict(row=jnp.zeros(flat.shape, flat.dtype), zero=jnp.zeros((), flat.dtype),
                                        one=jnp.ones((), flat.dtype))
        return self._blanks[1]

    @staticmethod
    def _torch_state(ints, floats, cached, given, new: int, history_size: int, iterated: bool) -> dict[str, Any]:
        """torch's state keys from the last report (``ints`` and ``floats``, see
        :func:`_read_report`), what :func:`_finish` returned (``cached``), ``given`` (the
        state the step began with) and ``new``, the number of curvature pairs the step
        stored that the history still holds: the history lists are ``given``'s, less the
        oldest entries dropped, plus the ``new`` ones, as torch's lists change."""
        func_evals, n_iter, length = (int(v) for v in ints[2:])
        out: dict[str, Any] = {"func_evals": func_evals, "n_iter": n_iter}
        if not iterated:
            return out
        survivors = length - new  # the newest of the given entries, as many as were not dropped
        history = {}
        for key in _LISTS:
            kept = list(given[key])[-history_size:] if survivors else []
            history[key] = kept[len(kept) - survivors :] + (_entries(cached[key], new) if new else [])
        al = LBFGS._al(ints, cached, given, history_size)
        if al is not None:
            out["al"] = al
        out.update(  # torch's order of keys
            d=cached["d"],
            t=float(floats[0]),
            **history,
            H_diag=cached["H_diag"] if length else 1,
            prev_flat_grad=cached["prev_flat_grad"],
            prev_loss=float(floats[1]),
        )
        return out

    def _dynamic(self, group: dict[str, Any]) -> dict[str, jax.Array]:
        """The options the compiled calls take as values (so that changing one never
        recompiles), as arrays: made again only when one of them changes, not at every
        step (five eager conversions)."""
        hyper = _internal.hyper_dtype()
        values = (scalar(group["lr"]), group["max_iter"], group["max_eval"], group["tolerance_grad"],
                  group["tolerance_change"], hyper)
        if self._options is None or self._options[0] != values:
            lr, max_iter, max_eval, tolerance_grad, tolerance_change, _ = values
            self._options = values, dict(
                lr=jnp.asarray(lr, hyper),
                max_iter=jnp.asarray(max_iter, jnp.int32),
                max_eval=jnp.asarray(max_eval, jnp.int32),
                tolerance_grad=jnp.asarray(tolerance_grad, hyper),
                tolerance_change=jnp.asarray(tolerance_change, hyper),
            )
        return self._options[1]

    @staticmethod
    def _al(ints, cached, given, history_size: int) -> list | None:
        """torch's ``al`` (``None`` where torch has none yet: before its second iteration).
        A step that ran no iteration leaves it as it was; else the two-loop recursion wrote
        the first ``history_len`` entries, and torch's list holds ``None`` after them."""
        steps_iterations, _, _, n_iter, length = (int(v) for v in ints)
        if steps_iterations == 0 and "al" in given:
            return given["al"]
        if n_iter < 2:
            return None
        return _entries(cached["al"], length, last=False) + [None] * (history_size - length)

    def step(self, closure: Callable[[], Any]):
        """Performs one L-BFGS step: up to ``max_iter`` iterations, calling ``closure`` as torch does.

        Returns:
          The loss returned by the first call of ``closure`` (at the starting point).
        """
        group = self.param_groups[0]
        self._spec.check_torch(group, "step")
        history_size = group["history_size"]
        start, advance = _compiled_calls(history_size, group["line_search_fn"])
        dynamic = self._dynamic(group)
        state = self.state[self._params[0]]
        params = [p.data for p in self._params]
        counts = (state.get("func_evals", 0), state.get("n_iter", 0))
        saved, history, ring, refs = self._saved(state, params, history_size)
        orig_loss = loss = closure()  # torch's first evaluation, at the parameters as they are
        small, history, trial, report = start(counts, saved, history, ring, _array(loss), self._grads(), params, dynamic)
        before, before_ints, pushed = None, None, 0
        while True:
            flags, ints, floats = _read_report(report)  # the one host sync per evaluation
            pushed += (flags >> 2) & 1
            if flags & 2:  # (only ever set by an evaluation of the line search, never the first)
                self._raise_as_torch(before, before_ints, history, params, state, history_size)
            if flags & 1:
                break
            self._set_params(trial)
            loss = closure()
            before, before_ints = small, ints
            small, history, trial, report = advance(small, history, _array(loss), self._grads(), params, dynamic)
        # (the last rows of the history: at least the pairs this step stored, if it stored any)
        newest = min(history_size, max(int(group["max_iter"]), 0)) if pushed else 0
        current, cached = _finish(small, history, params, newest)
        self._set_params(current)
        iterated = int(ints[0]) > 0 or state.get("d") is not None
        new = min(pushed, int(ints[4]))  # (a step may store more pairs than the history holds)
        new_state = self._torch_state(ints, floats, cached, state, new, history_size, iterated)
        if not iterated and int(ints[1]) == core.MAX_ITER:
            # max_iter <= 0: torch's loop did not run, and it stores its cached tensors,
            # all None (it only skips storing them when the start point is optimal).
            new_state.update(dict.fromkeys(_CACHED))
        # Updated in place, as torch's: a key keeps its place, a new one comes last (torch
        # adds al when its second iteration runs, after the keys a first step stored).
        state.update(new_state)
        self._keep(state, history, small, history_size, params, refs, new)
        return orig_loss

    def _raise_as_torch(self, before, ints, history, params, state, history_size):
        """torch's ``_strong_wolfe`` raises ``IndexError`` when the closure's value is NaN at
        a point that meets the Wolfe conditions in its bracketing phase (it indexes a
        one-point bracket at 1). Raise it too, leaving what torch leaves: the parameters at
        the line search's start, ``func_evals`` and ``n_iter`` counted up to it (and ``al``
        as its two-loop recursion wrote it), the other keys as the previous step left them.

        ``before`` is the packed run before the last evaluation, ``ints`` the scalars of
        its report; its history buffers were donated to that evaluation, so the latest
        ones (``history``) stand in: none of the entries kept here comes from them.
        """
        start, cached = _finish(before, history, params, 0)
        self._set_params(start)
        state["func_evals"], state["n_iter"] = int(ints[2]), int(ints[3])
        al = self._al(ints, cached, state, history_size)
        if al is not None:
            state["al"] = al
        raise IndexError("list index out of range")

    def _load_value(self, param, key, value):
        # Everything LBFGS keeps is flat (or a scalar): no cast to the parameter's shape.
        if key in ("func_evals", "n_iter"):
            return int(np.asarray(value))
        return super()._load_value(param, key, value)

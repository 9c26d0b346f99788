"""``LBFGS``: torch.optim.LBFGS with ``step(closure)``, on gradxform's L-BFGS state machine."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from gradxform import _internal
from gradxform._internal import lbfgs_core as core
from torch_compat.optim._from_spec import make_init, scalar
from torch_compat.optim.optimizer import Optimizer


_DYNAMIC = ("lr", "max_iter", "max_eval", "tolerance_grad", "tolerance_change")
_CACHED = ("d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad", "prev_loss")
"""The state keys torch writes at the end of a step (from its cached tensors)."""


@functools.lru_cache(maxsize=64)
def _compiled_advance(history_size: int, line_search_fn: str | None) -> Callable:
    """One jitted evaluation step per structure: flatten the gradients, ``lbfgs_tell``,
    and the next point to evaluate, unflattened into the parameters' shapes.

    Cached for the 64 structures used last; the compiled function refers to no optimizer
    or parameter (they are its arguments).

    The other options are traced values, so changing ``lr``, ``max_iter``, ``max_eval``
    or the tolerances never recompiles. One dispatch per closure call, whose run goes in
    and out packed (see :func:`_pack`); its history buffers are donated (updated in place).
    """
    static = core.LbfgsOptions(history_size=history_size, line_search_fn=line_search_fn)

    def advance(small, history, value, grads, params, dynamic):
        _, unflatten = _placed_unflatten(params)
        run = _unpack(small, history)
        grad = core.flatten(grads)[0].astype(run.x.dtype)
        run = core.lbfgs_tell(run, value, grad, static._replace(**dynamic))
        return *_pack(run), unflatten(core.lbfgs_trial(run)), _flags(run)

    return jax.jit(advance, donate_argnums=1)


def _placed_unflatten(params):
    """``core.flatten``, whose ``unflatten`` gives each leaf its parameter's sharding
    (the flat vector's is XLA's choice: a sharded parameter must not come back gathered)."""
    x, unflatten = core.flatten(params)
    return x, lambda v: jax.tree.map(_internal.like_param, unflatten(v), params)


def _flags(run):
    """What the Python loop reads after each evaluation, as one int32 (one host transfer):
    bit 0 set when the step is done, bit 1 when torch would have raised (``torch_error``)."""
    return (run.phase == core.DONE).astype(jnp.int32) + 2 * run.torch_error.astype(jnp.int32)


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


@jax.jit
def _begin(state, params):
    x, unflatten = _placed_unflatten(params)
    run = core.lbfgs_begin(state, x)
    return *_pack(run), unflatten(core.lbfgs_trial(run)), _flags(run)


@jax.jit
def _unpacked(small, history, params):
    """The packed run, and its point ``x`` in the parameters' shapes (once per step)."""
    run = _unpack(small, history)
    return run, _placed_unflatten(params)[1](run.x)


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

    def _core_state(self, state: dict[str, Any], n: int, dtype, history_size: int) -> core.LbfgsState:
        fresh = core.init_state(n, dtype, history_size)
        fresh = fresh._replace(
            func_evals=jnp.asarray(state.get("func_evals", 0), jnp.int32),
            n_iter=jnp.asarray(state.get("n_iter", 0), jnp.int32),
        )
        if state.get("d") is None:  # no step yet, or only steps of max_iter <= 0 (torch's None)
            return fresh
        hyper = _internal.hyper_dtype()
        as_vector = lambda v: jnp.asarray(np.asarray(v)).astype(dtype).reshape(n)  # noqa: E731
        dirs, stps = list(state["old_dirs"])[-history_size:], list(state["old_stps"])[-history_size:]
        ro = list(state["ro"])[-history_size:]
        length = len(dirs)
        old_dirs, old_stps, ro_array = fresh.old_dirs, fresh.old_stps, fresh.ro
        if length:
            old_dirs = old_dirs.at[:length].set(jnp.stack([as_vector(v) for v in dirs]))
            old_stps = old_stps.at[:length].set(jnp.stack([as_vector(v) for v in stps]))
            ro_array = ro_array.at[:length].set(jnp.asarray([float(np.asarray(v)) for v in ro], dtype))
        al = [0.0 if v is None else float(np.asarray(v)) for v in state.get("al", [])][:history_size]
        al_array = fresh.al.at[: len(al)].set(jnp.asarray(al, dtype)) if al else fresh.al
        return fresh._replace(
            d=as_vector(state["d"]),
            t=jnp.asarray(float(np.asarray(state["t"])), hyper),
            old_dirs=old_dirs,
            old_stps=old_stps,
            ro=ro_array,
            al=al_array,
            history_start=jnp.zeros([], jnp.int32),
            history_len=jnp.asarray(length, jnp.int32),
            H_diag=jnp.asarray(float(np.asarray(state["H_diag"])), dtype),
            prev_flat_grad=as_vector(state["prev_flat_grad"]),
            prev_loss=jnp.asarray(float(np.asarray(state["prev_loss"])), hyper),
        )

    @staticmethod
    def _torch_state(state: core.LbfgsState, history_size: int, iterated: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"func_evals": int(state.func_evals), "n_iter": int(state.n_iter)}
        if not iterated:
            return out
        length, start = int(state.history_len), int(state.history_start)
        order = [(start + i) % history_size for i in range(length)]
        if int(state.n_iter) >= 2:
            out["al"] = [state.al[i] for i in range(length)] + [None] * (history_size - length)
        out.update(
            d=state.d,
            t=float(state.t),
            old_dirs=[state.old_dirs[j] for j in order],
            old_stps=[state.old_stps[j] for j in order],
            ro=[state.ro[j] for j in order],
            H_diag=state.H_diag if length else 1,
            prev_flat_grad=state.prev_flat_grad,
            prev_loss=float(state.prev_loss),
        )
        return out

    def step(self, closure: Callable[[], Any]):
        """Performs one L-BFGS step: up to ``max_iter`` iterations, calling ``closure`` as torch does.

        Returns:
          The loss returned by the first call of ``closure`` (at the starting point).
        """
        group = self.param_groups[0]
        self._spec.check_torch(group, "step")
        history_size = group["history_size"]
        advance = _compiled_advance(history_size, group["line_search_fn"])
        hyper = _internal.hyper_dtype()
        dynamic = dict(
            lr=jnp.asarray(scalar(group["lr"]), hyper),
            max_iter=jnp.asarray(group["max_iter"], jnp.int32),
            max_eval=jnp.asarray(group["max_eval"], jnp.int32),
            tolerance_grad=jnp.asarray(group["tolerance_grad"], hyper),
            tolerance_change=jnp.asarray(group["tolerance_change"], hyper),
        )
        state = self.state[self._params[0]]
        params = [p.data for p in self._params]
        x, _ = core.flatten(params)
        small, history, trial, flags = _begin(self._core_state(state, x.size, x.dtype, history_size), params)
        orig_loss, before = None, small
        while True:
            flags = int(flags)  # the one host sync per evaluation
            if flags & 2:
                self._raise_as_torch(before, history, params, state, history_size)
            if flags & 1:
                break
            self._set_params(trial)
            loss = closure()
            if orig_loss is None:
                orig_loss = loss
            before = small
            value = loss if isinstance(loss, jax.Array) else jnp.asarray(loss)  # asarray costs a dispatch
            small, history, trial, flags = advance(small, history, value, self._grads(), params, dynamic)
        run, current = _unpacked(small, history, params)
        self._set_params(current)
        iterated = int(run.n_iter) > 0 or state.get("d") is not None
        new_state = self._torch_state(run.state, history_size, iterated)
        if not iterated and int(run.status) == core.MAX_ITER:
            # max_iter <= 0: torch's loop did not run, and it stores its cached tensors,
            # all None (it only skips storing them when the start point is optimal).
            new_state.update(dict.fromkeys(_CACHED))
        state.clear()
        state.update(new_state)
        return orig_loss

    def _raise_as_torch(self, before, history, params, state, history_size):
        """torch's ``_strong_wolfe`` raises ``IndexError`` when the closure's value is NaN at
        a point that meets the Wolfe conditions in its bracketing phase (it indexes a
        one-point bracket at 1). Raise it too, leaving what torch leaves: the parameters at
        the line search's start, ``func_evals`` and ``n_iter`` counted up to it (and ``al``
        as its two-loop recursion wrote it), the other keys as the previous step left them.

        ``before`` is the packed run before the last evaluation; its history buffers were
        donated to that evaluation, so the latest ones (``history``) stand in: none of the
        entries kept here comes from them.
        """
        run, start = _unpacked(before, history, params)
        self._set_params(start)
        partial = self._torch_state(run.state, history_size, True)
        state["func_evals"], state["n_iter"] = partial["func_evals"], partial["n_iter"]
        if "al" in partial:
            state["al"] = partial["al"]
        raise IndexError("list index out of range")

    def _load_value(self, param, key, value):
        # Everything LBFGS keeps is flat (or a scalar): no cast to the parameter's shape.
        if key in ("func_evals", "n_iter"):
            return int(np.asarray(value))
        return super()._load_value(param, key, value)

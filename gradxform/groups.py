r"""torch's param groups as one pure transformation: :func:`param_groups`.

torch gives each group of parameters its own options::

    torch.optim.AdamW([
        {"params": norms_and_biases, "weight_decay": 0.0},
        {"params": head, "lr": 1e-2},
        {"params": the_rest},
    ], lr=1e-3, weight_decay=0.1)

:func:`param_groups` does the same for a pytree of parameters, choosing each group's
leaves by a predicate, a regular expression on the leaf's path, a boolean mask, or
(optax style) a tree or function of labels. Each group runs its own optimizer over its
own leaves, and every group's hyperparameters live in the state as arrays, so
:func:`gradxform.set_hyperparams` with ``group=`` changes one group without recompiling.
All groups run inside the one ``update``: one compiled step whatever their number.
"""

from __future__ import annotations

import inspect
import re
import sys
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax

from gradxform import _paths, _treecheck, base


class ParamGroupsState(NamedTuple):
    """State of :func:`param_groups`.

    Attributes:
      inner_states: the groups' states, in the order of the groups: a tuple (the last
        entry is the default group of the unmatched leaves), or a dict keyed by label
        when the groups were given by ``labels=``. Each group's optimizer works on a
        dict ``{"a/b/c": leaf}`` of its own leaves, so its per-parameter buffers are
        keyed by the parameters' paths.
    """

    inner_states: Any


def _is_variable(x) -> bool:
    """A flax ``nnx.Variable`` (a parameter wrapped in a pytree node of one array).

    ``nnx.Optimizer`` calls ``init`` with the variables and ``update`` with bare arrays:
    a variable counts as one leaf, so that a parameter has the same path in both.
    """
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and isinstance(x, nnx.Variable)


def _leaves_with_paths(tree) -> tuple[list[tuple[str, Any]], Any]:
    """``[(path, leaf)]`` in leaf order, and the tree structure."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_variable)
    named = [(_paths.path_string(path), leaf) for path, leaf in flat]
    seen: dict[str, int] = {}
    for name, _ in named:
        seen[name] = seen.get(name, 0) + 1
    doubles = sorted(name for name, n in seen.items() if n > 1)
    if doubles:
        raise ValueError(f"param_groups: several parameters have the path {doubles[0]!r}; paths must be unique")
    return named, treedef


def _per_leaf(prefix_tree, tree, what: str) -> list:
    """The value of ``prefix_tree`` (a tree whose structure is a prefix of ``tree``'s) for
    each leaf of ``tree``, in leaf order."""
    try:
        spread = jax.tree.map(lambda value, sub: [value] * len(jax.tree.leaves(sub)), prefix_tree, tree)
    except ValueError as error:
        raise ValueError(f"param_groups: the {what} does not have the parameters' tree structure: {error}") from None
    return [value for block in jax.tree.leaves(spread, is_leaf=lambda x: isinstance(x, list)) for value in block]


def _matcher(spec, index: int) -> Callable:
    """``(named leaves, tree) -> list of bool``, for one group's ``"params"``."""
    if isinstance(spec, str):
        pattern = re.compile(spec)
        return lambda named, tree: [pattern.fullmatch(name) is not None for name, _ in named]
    if callable(spec):
        return lambda named, tree: [bool(spec(name, leaf)) for name, leaf in named]
    if isinstance(spec, (list, tuple, set)) and all(isinstance(s, str) for s in spec):
        names = set(spec)
        return lambda named, tree: [name in names for name, _ in named]
    # A mask: booleans in a tree with the parameters' structure (or a prefix of it).
    return lambda named, tree: [bool(m) for m in _per_leaf(spec, tree, f"mask of group {index}")]


def _accepted(fn: Callable) -> set[str] | None:
    """The keyword names ``fn`` takes, or None when it takes any (``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _build(optimizer_fn, options: dict, defaults: dict, where: str):
    """One group's transformation: its optimizer called with the defaults and its options."""
    options = dict(options)
    fn = options.pop("optimizer", optimizer_fn)
    if hasattr(fn, "init") and hasattr(fn, "update"):  # a transformation built by the caller
        if options:
            raise ValueError(
                f"param_groups: {where} gives a built transformation as its optimizer and also "
                f"options {sorted(options)}; give the options to the transformation instead"
            )
        return fn
    if not callable(fn):
        raise ValueError(f"param_groups: the optimizer of {where} is {fn!r}, not a function or a transformation")
    if getattr(fn, "__name__", None) == "lbfgs" and getattr(fn, "__module__", "").startswith("gradxform"):
        raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
    accepted = _accepted(fn)
    if fn is optimizer_fn or accepted is None:
        applicable = dict(defaults)
    else:  # another optimizer (Muon beside AdamW): the defaults it takes
        applicable = {k: v for k, v in defaults.items() if k in accepted}
    try:
        return fn(**{**applicable, **options})
    except TypeError as error:
        raise TypeError(f"param_groups: {where}: {error}") from None


def param_groups(
    optimizer_fn: Callable[..., base.GradientTransformation],
    groups: Sequence[Mapping[str, Any]] | Mapping[Any, Mapping[str, Any]],
    *,
    labels: Any = None,
    **defaults: Any,
) -> base.GradientTransformation:
    r"""torch's param groups: each group of leaves gets its own optimizer options.

    ``param_groups(gradxform.adamw, groups, learning_rate=1e-3, weight_decay=0.1)`` is the
    functional twin of ``torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.1)``: each
    group runs ``optimizer_fn(**{**defaults, **group_options})`` over its own leaves, and
    the numbers are torch's with the same groups.

    Each group is a dict. Its ``"params"`` chooses the leaves:

    * a predicate ``(path, leaf) -> bool``, with ``path`` the leaf's path written
      ``"a/b/c"`` (dict keys, sequence indices and attribute names joined by ``/``) and
      ``leaf`` the parameter (or, in an ``update`` without ``params``, the update); it
      should decide from the path, shape and dtype only;
    * a regular expression that must match the whole path (``r"head/.*"``);
    * a list of paths;
    * a tree of booleans with the parameters' structure (or a prefix of it): a mask.

    A leaf belongs to the first group that matches it; the leaves no group matches form
    one more group, the last, with the defaults alone (it exists, possibly empty, so that
    ``group=len(groups)`` always means "the rest"). Its other keys are the optimizer's
    options (``"learning_rate"``, ``"weight_decay"``, ...), and ``"optimizer"`` gives the
    group another optimizer: a function such as ``gradxform.muon``, which gets the
    defaults it accepts and the group's options, or a transformation already built.

    With ``labels=`` (optax's ``multi_transform`` style), ``groups`` is a dict
    ``{label: options}`` and ``labels`` a tree of labels with the parameters' structure
    (or a prefix of it), or a function ``params -> such a tree``; every leaf must have a
    label of ``groups``, and there is no default group.

    Hyperparameters stay in the state as arrays, per group:
    ``gradxform.set_hyperparams(state, group=1, learning_rate=5e-3)`` changes group 1
    without recompiling, and ``gradxform.get_hyperparams(state, group=1)`` reads it
    (``group=label`` with ``labels=``). All groups run inside the one ``update``.

    Args:
      optimizer_fn: a function of the hyperparameters returning a transformation
        (``gradxform.adamw``, ``gradxform.sgd``, ...).
      groups: a list of dicts with ``"params"``; or, with ``labels``, a dict
        ``{label: options}``.
      labels: a tree of labels or a function ``params -> labels``; see above.
      **defaults: the options of every group (each group's own options override them).

    Returns:
      A transformation whose state is a :class:`ParamGroupsState`.

    Raises:
      ValueError: for a group without ``"params"``, a group that matches no leaf of a non-empty tree (at
        ``init``), a leaf without a known label, LBFGS (torch's LBFGS refuses param groups
        too), or a group that gives a built transformation and options.
      TypeError: for an option the group's optimizer does not take.

    Example:
      >>> import jax.numpy as jnp, gradxform
      >>> params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
      >>> tx = gradxform.param_groups(gradxform.sgd, [
      ...     {"params": lambda path, leaf: leaf.ndim < 2, "learning_rate": 0.5},
      ... ], learning_rate=0.1)
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.ones((2, 2)), "b": jnp.ones(2)}, state, params)
      >>> updates["b"].tolist(), updates["w"][0].tolist()
      ([-0.5, -0.5], [-0.1, -0.1])
      >>> state = gradxform.set_hyperparams(state, group=1, learning_rate=0.01)
      >>> float(gradxform.get_hyperparams(state, group=1)["learning_rate"])
      0.01
    """
    if labels is None:
        if isinstance(groups, Mapping) or not isinstance(groups, Sequence):
            raise ValueError("param_groups: groups must be a list of dicts (or, with labels=, a dict label -> options)")
        specs = []
        for i, group in enumerate(groups):
            if not isinstance(group, Mapping):
                raise ValueError(f"param_groups: group {i} is a {type(group).__name__}, not a dict")
            if "params" not in group:
                raise ValueError(f"param_groups: group {i} has no 'params' (a predicate, a regex, a list of paths or a mask)")
            options = {k: v for k, v in group.items() if k != "params"}
            specs.append((i, _matcher(group["params"], i), options))
        keys = tuple(range(len(specs) + 1))
        transforms = [_build(optimizer_fn, options, defaults, f"group {i}") for i, _, options in specs]
        transforms.append(_build(optimizer_fn, {}, defaults, f"group {len(specs)} (the default group)"))
    else:
        if not isinstance(groups, Mapping):
            raise ValueError("param_groups: with labels=, groups must be a dict label -> options")
        for label, options in groups.items():
            if "params" in options:
                raise ValueError(f"param_groups: with labels=, group {label!r} must not give 'params'")
        keys = tuple(groups)
        transforms = [_build(optimizer_fn, groups[k], defaults, f"group {k!r}") for k in keys]
    takes_extra = [base._accepts_extra_args(t.update) for t in transforms]

    def assign(tree, check_empty: bool) -> tuple[list[tuple[str, Any]], Any, list[int]]:
        """Each leaf's group position (an index into ``keys``)."""
        named, treedef = _leaves_with_paths(tree)
        if labels is None:
            chosen = [len(specs)] * len(named)
            for position, (i, match, _) in enumerate(specs):
                hits = match(named, tree)
                if check_empty and named and not any(hits):  # an empty tree: every group is empty
                    example = ", ".join(repr(n) for n, _ in named[:4]) or "none"
                    raise ValueError(
                        f"param_groups: group {i} matches no parameter (paths are like {example})"
                    )
                for j, hit in enumerate(hits):
                    if hit and chosen[j] == len(specs):
                        chosen[j] = position
            return named, treedef, chosen
        label_tree = labels(tree) if callable(labels) else labels
        leaf_labels = _per_leaf(label_tree, tree, "labels tree")
        index = {k: i for i, k in enumerate(keys)}
        chosen = []
        for (name, _), label in zip(named, leaf_labels):
            if label not in index:
                raise ValueError(
                    f"param_groups: the parameter at {name!r} has the label {label!r}, which is not one of the groups {list(keys)}"
                )
            chosen.append(index[label])
        if check_empty:
            empty = [k for i, k in enumerate(keys) if i not in chosen]
            if empty:
                raise ValueError(f"param_groups: no parameter has the label(s) {empty}")
        return named, treedef, chosen

    def split(named, chosen, position) -> dict:
        return {name: leaf for (name, leaf), g in zip(named, chosen) if g == position}

    def wrap(states):
        if labels is None:
            return ParamGroupsState(tuple(states))
        return ParamGroupsState(dict(zip(keys, states)))

    def unwrap(state) -> list:
        inner = state.inner_states
        if len(inner) != len(keys):
            raise ValueError(f"param_groups of {len(keys)} groups got a state with {len(inner)} groups")
        return [inner[k] for k in keys] if labels is not None else list(inner)

    def init(params):
        named, _, chosen = assign(params, check_empty=True)
        return wrap([tx.init(split(named, chosen, g)) for g, tx in enumerate(transforms)])

    def update(updates, state, params=None, **extra_args):
        reference = updates if params is None else params
        named_ref, ref_def, chosen = assign(reference, check_empty=False)
        named_updates, updates_def = _leaves_with_paths(updates)
        if updates_def != ref_def:
            _treecheck.check_updates(updates, reference)  # raises, naming the path
            raise ValueError(f"param_groups: the updates' tree {updates_def} is not the parameters' {ref_def}")
        new = [None] * len(named_updates)
        new_states = []
        for g, (tx, inner, extra_ok) in enumerate(zip(transforms, unwrap(state), takes_extra)):
            sub_updates = split(named_updates, chosen, g)
            if not sub_updates:  # an empty group: nothing to do
                new_states.append(inner)
                continue
            sub_params = None if params is None else split(named_ref, chosen, g)
            kwargs = extra_args if extra_ok else {}
            sub_new, inner = tx.update(sub_updates, inner, sub_params, **kwargs)
            for j, ((name, _), group) in enumerate(zip(named_updates, chosen)):
                if group == g:
                    new[j] = sub_new[name]
            new_states.append(inner)
        return jax.tree_util.tree_unflatten(updates_def, new), wrap(new_states)

    return base.GradientTransformation(init, update)

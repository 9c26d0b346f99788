"""Work per leaf of a jitted, donated step: gradxform's optimizers beside optax's.

    python benchmarks/leaf_counts.py

For each optimizer, the step (``update`` + ``apply_updates``, parameters and state
donated) over trees of 10 and 20 float32 leaves of 16 values is traced and compiled; the
difference divided by 10 is the cost of one more leaf: jaxpr equations, instructions of
the compiled step's entry computation, and kernels (fusions). These counts do not depend
on the machine's load. gradxform's rows are given for both forms of its scalar state:
the shared one ``init`` makes, and the per-leaf one torch_compat passes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

import gradxform

SCALAR_FIELDS = ("step", "mu_product", "eta", "mu")


def per_leaf(state, keys):
    """``state`` with each shared scalar (step, ...) repeated for each leaf."""
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(
            *(
                {k: jnp.array(v, copy=True) for k in keys} if n in SCALAR_FIELDS else per_leaf(v, keys)
                for n, v in zip(state._fields, state)
            )
        )
    if isinstance(state, (tuple, list)):
        return type(state)(per_leaf(s, keys) for s in state)
    return state


def counts(tx, apply, leaves: int, form: str) -> tuple[int, int, int]:
    params = {f"{i}": jnp.zeros(16, jnp.float32) for i in range(leaves)}
    state = tx.init(params)
    if form == "per-leaf":
        state = per_leaf(state, tuple(params))

    def step(p, s, g):
        updates, s = tx.update(g, s, p)
        return apply(p, updates), s

    equations = len(jax.make_jaxpr(step)(params, state, params).jaxpr.eqns)
    text = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile().as_text()
    entry = text[text.index("ENTRY"):]
    return equations, entry.count("\n  %"), entry.count(" fusion(")


ROWS = [
    ("adam", lambda: gradxform.adam(1e-3), lambda: optax.adam(1e-3)),
    ("adamw", lambda: gradxform.adamw(1e-3), lambda: optax.adamw(1e-3)),
    ("sgd, momentum 0.9", lambda: gradxform.sgd(1e-3, momentum=0.9), lambda: optax.sgd(1e-3, momentum=0.9)),
    ("rmsprop", lambda: gradxform.rmsprop(1e-3), lambda: optax.rmsprop(1e-3)),
    ("adagrad", lambda: gradxform.adagrad(1e-3), lambda: optax.adagrad(1e-3)),
    ("adamax", lambda: gradxform.adamax(1e-3), lambda: optax.adamax(1e-3)),
    ("nadam", lambda: gradxform.nadam(1e-3), lambda: optax.nadam(1e-3)),
    ("radam", lambda: gradxform.radam(1e-3), lambda: optax.radam(1e-3)),
]


def main():
    print(f"# jax {jax.__version__}, optax {optax.__version__}; float32 leaves of 16 values; per leaf")
    print()
    print("| optimizer | gradxform (shared step) | gradxform (per-leaf steps) | optax |")
    print("|---|---|---|---|")
    for name, ours, theirs in ROWS:
        cells = []
        for make, apply, form in (
            (ours, gradxform.apply_updates, "shared"),
            (ours, gradxform.apply_updates, "per-leaf"),
            (theirs, optax.apply_updates, "shared"),
        ):
            small, large = counts(make(), apply, 10, form), counts(make(), apply, 20, form)
            cells.append(" / ".join(f"{(b - a) / 10:g}" for a, b in zip(small, large)))
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    print("Each cell: jaxpr equations / compiled instructions / kernels (fusions).")


if __name__ == "__main__":
    main()

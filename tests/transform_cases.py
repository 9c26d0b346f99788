"""Every public gradxform transformation, built with valid arguments, for table tests.

``FACTORIES`` maps each public factory of ``gradxform.__all__`` to builders of a few
variants whose states differ in layout (the first is the plain one); ``NOT_FACTORIES``
lists the public functions that build no transformation. ``test_donation.py`` fails
when a public function is in neither, so a new transformation cannot be left out of the
tables that use this module (donation, empty trees).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

import gradxform

# Public functions that are not transformation factories.
NOT_FACTORIES = {
    "all_finite",
    "average_init",  # parameter averages: functions of an AverageState, not transformations
    "ema_update",
    "swa_update",
    "apply_updates",
    "get_hyperparams",
    "get_loss_scale",
    "global_norm",
    "minimize",
    "minimize_multistart",
    "orthogonalize_via_newton_schulz",
    "set_hyperparams",
}


def _mesh():
    return Mesh(np.array(jax.devices()[:1]), ("data",))


# name -> a list of builders, each a variant whose state differs in layout (the first
# is the plain one). Built inside the test, so the x64 setting of the test applies.
FACTORIES = {
    "adadelta": [lambda: gradxform.adadelta(), lambda: gradxform.adadelta(weight_decay=0.1, maximize=True)],
    "adafactor": [lambda: gradxform.adafactor(0.1), lambda: gradxform.adafactor(0.1, weight_decay=0.1)],
    "adagrad": [lambda: gradxform.adagrad(0.1), lambda: gradxform.adagrad(0.1, lr_decay=0.01, initial_accumulator_value=0.5)],
    "adam": [lambda: gradxform.adam(0.1), lambda: gradxform.adam(0.1, weight_decay=0.1, amsgrad=True)],
    "adamax": [lambda: gradxform.adamax(0.1)],
    "adamw": [lambda: gradxform.adamw(0.1), lambda: gradxform.adamw(0.1, amsgrad=True)],
    "add_decayed_weights": [lambda: gradxform.add_decayed_weights(0.1)],
    "asgd": [lambda: gradxform.asgd(0.1), lambda: gradxform.asgd(0.1, weight_decay=0.1, t0=0.0)],
    "chain": [lambda: gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.adam(0.1))],
    "clip_by_global_norm": [lambda: gradxform.clip_by_global_norm(1.0)],
    "clip_by_value": [lambda: gradxform.clip_by_value(0.5)],
    "accumulate": [lambda: gradxform.accumulate(gradxform.adam(0.1), 2)],
    "as_matrices": [lambda: gradxform.as_matrices(gradxform.muon(0.1))],
    "param_groups": [
        lambda: gradxform.param_groups(
            gradxform.adamw, [{"params": lambda path, leaf: leaf.ndim < 2, "weight_decay": 0.0}], learning_rate=0.1
        ),
        lambda: gradxform.param_groups(
            gradxform.adamw, [{"params": r"w", "optimizer": gradxform.sgd, "momentum": 0.9}], learning_rate=0.1
        ),
    ],
    "flatten": [lambda: gradxform.flatten(gradxform.asgd(0.1)), lambda: gradxform.flatten(gradxform.adam(0.1), max_leaf_size=2)],
    "identity": [lambda: gradxform.identity()],
    "inject_hyperparams": [
        lambda: gradxform.inject_hyperparams(gradxform.scale_by_rprop, learning_rate=0.1),
        lambda: gradxform.inject_hyperparams(gradxform.scale, step_size=lambda n: -0.1 / (n + 1)),
    ],
    "loss_scaled": [
        lambda: gradxform.loss_scaled(gradxform.adam(0.1), init_scale=4.0),
        lambda: gradxform.loss_scaled(gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.sgd(0.1, momentum=0.9)),
                                      growth_interval=1),
    ],
    "lbfgs": [lambda: gradxform.lbfgs(max_iter=3), lambda: gradxform.lbfgs(max_iter=3, line_search_fn="strong_wolfe")],
    "muon": [lambda: gradxform.muon(0.1)],
    "nadam": [lambda: gradxform.nadam(0.1), lambda: gradxform.nadam(0.1, weight_decay=0.1, decoupled_weight_decay=True)],
    "negate": [lambda: gradxform.negate()],
    "radam": [lambda: gradxform.radam(0.1)],
    "reduce_on_plateau": [lambda: gradxform.chain(gradxform.sgd(0.1), gradxform.reduce_on_plateau(patience=0))],
    "rmsprop": [lambda: gradxform.rmsprop(0.1), lambda: gradxform.rmsprop(0.1, momentum=0.9, centered=True)],
    "rprop": [lambda: gradxform.rprop(0.1)],
    "scale": [lambda: gradxform.scale(-0.1)],
    "scale_by_adadelta": [lambda: gradxform.scale_by_adadelta()],
    "scale_by_adafactor": [lambda: gradxform.scale_by_adafactor()],
    "scale_by_adagrad": [lambda: gradxform.scale_by_adagrad(initial_accumulator_value=0.1)],
    "scale_by_adam": [lambda: gradxform.scale_by_adam(amsgrad=True)],
    "scale_by_adamax": [lambda: gradxform.scale_by_adamax()],
    "scale_by_asgd": [lambda: gradxform.scale_by_asgd(0.1), lambda: gradxform.scale_by_asgd(jnp.asarray(0.1, jnp.float32))],
    "scale_by_learning_rate": [lambda: gradxform.scale_by_learning_rate(0.1)],
    "scale_by_muon": [lambda: gradxform.scale_by_muon()],
    "scale_by_nadam": [lambda: gradxform.scale_by_nadam()],
    "scale_by_radam": [lambda: gradxform.scale_by_radam()],
    "scale_by_rmsprop": [lambda: gradxform.scale_by_rmsprop(momentum=0.9, centered=True)],
    "scale_by_rprop": [lambda: gradxform.scale_by_rprop(0.1), lambda: gradxform.scale_by_rprop(jnp.asarray(0.1))],
    "scale_by_sgd": [lambda: gradxform.scale_by_sgd(momentum=0.9)],
    "scale_by_sparse_adam": [lambda: gradxform.scale_by_sparse_adam()],
    "sgd": [lambda: gradxform.sgd(0.1), lambda: gradxform.sgd(0.1, momentum=0.9, weight_decay=0.1, nesterov=True)],
    "shard_state": [lambda: gradxform.shard_state(gradxform.asgd(0.1), _mesh())],
    "skip_non_finite": [lambda: gradxform.skip_non_finite(gradxform.rprop(0.1), max_consecutive_skips=2)],
    "sparse_adam": [lambda: gradxform.sparse_adam(0.1)],
}

MATRIX_ONLY = {"muon", "scale_by_muon", "as_matrices"}


def loss(params):
    return sum(jnp.sum(jnp.sin(x) + x**2) for x in jax.tree.leaves(params))


def make_params(name):
    """A small tree with a matrix, a vector and a 0-d leaf (Muon: matrices only)."""
    if name in MATRIX_ONLY:
        return {"w": jnp.ones((2, 3)), "v": jnp.full((3, 2), 0.5)}
    return {"w": jnp.ones((2, 3)), "b": jnp.linspace(-1.0, 1.0, 3), "s": jnp.asarray(1.5)}


def extra_args(name, params):
    if name == "lbfgs":
        return {"value_fn": loss}
    if name == "reduce_on_plateau":
        return {"value": loss(params)}
    return {}

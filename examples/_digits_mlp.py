"""The MLP that examples/sharded_training.py and examples/multiprocess_training.py train.

A 64 -> hidden -> 10 classifier of scikit-learn's 8x8 digits, and where its parameters
live on a ``("data", "model")`` mesh: the hidden units split over ``"model"`` (a
Megatron-style pair of layers), every parameter replicated over ``"data"``. A helper
module, not a script: the examples import it from their own folder.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

PARAM_SPECS = {"w1": P(None, "model"), "b1": P("model"), "w2": P("model", None), "b2": P()}


def init_params(key, hidden=256):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (64, hidden)) * jnp.sqrt(2.0 / 64),
        "b1": jnp.zeros(hidden),
        "w2": jax.random.normal(k2, (hidden, 10)) * jnp.sqrt(2.0 / hidden),
        "b2": jnp.zeros(10),
    }


def logits_fn(params, x):
    hidden = jax.nn.relu(x @ params["w1"] + params["b1"])
    return hidden @ params["w2"] + params["b2"]


def loss_fn(params, x, y):
    """The mean cross-entropy of integer labels ``y``."""
    logits = logits_fn(params, x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

"""Layer (b) of STYLE.md for the core: what the aliases check beyond the error table.

The table of refused options, with torch's messages, for the core, torch_compat and
torch, is ``bad_input_cases.py`` (run by ``test_bad_input.py``). Here: schedules and
traced values at construction, parameters an alias refuses at ``init`` (Muon's non-2-D
and complex ones, Adafactor's and SparseAdam's complex ones), and the hyperparameters
kept in the state (``get_hyperparams`` / ``set_hyperparams``).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest

import gradxform
from gradxform.registry import FIRST_ORDER

try:
    import torch
except ImportError:  # the gradxform half of each test still runs
    torch = None

ALIASES = FIRST_ORDER


def exactly(message):
    return re.escape(message) + "$"


@pytest.mark.parametrize("alias", ALIASES)
def test_schedules_are_not_checked_at_construction(alias):
    """A schedule's values are unknown when the transformation is built."""
    tx = getattr(gradxform, alias)(learning_rate=lambda count: 1e-3 / (1 + count))
    assert isinstance(tx, gradxform.GradientTransformation)


def test_jax_scalar_learning_rate_is_checked():
    with pytest.raises(ValueError, match=exactly("Invalid learning rate: -0.5")):
        gradxform.adam(jnp.asarray(-0.5))
    with pytest.raises(ValueError, match=exactly("Learning rate should be >= 0 but is: -0.5")):
        gradxform.adafactor(jnp.asarray(-0.5, jnp.float32))


# --------------------------------------------------------------------------- parameters


MUON_PREFIX = "Muon only supports 2D parameters whereas we found a parameter with size: "


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4), ()], ids=["vector", "3-d", "scalar"])
def test_muon_rejects_non_matrix_params_at_init(shape):
    tx = gradxform.muon(1e-3)
    params = {"w": jnp.ones((3, 4)), "bias": jnp.ones(shape)}
    with pytest.raises(ValueError, match="^" + re.escape(MUON_PREFIX)) as info:
        tx.init(params)
    message = str(info.value)
    assert str(tuple(shape)) in message
    assert "bias" in message  # says which leaf
    if torch is not None:
        with pytest.raises(ValueError, match="^" + re.escape(MUON_PREFIX)):
            torch.optim.Muon([torch.nn.Parameter(torch.ones(3, 4)), torch.nn.Parameter(torch.ones(shape))])


def test_muon_rejects_complex_params():
    """torch raises RuntimeError("Muon does not support complex parameters") at step;
    gradxform raises ValueError with that text when the state is built."""
    tx = gradxform.muon(1e-3)
    message = "Muon does not support complex parameters"
    with pytest.raises(ValueError, match=exactly(message)):
        tx.init({"w": jnp.ones((3, 4), jnp.complex64)})
    if torch is not None:
        param = torch.nn.Parameter(torch.ones(3, 4, dtype=torch.complex64))
        optimizer = torch.optim.Muon([param])
        param.grad = torch.ones(3, 4, dtype=torch.complex64)
        with pytest.raises(RuntimeError, match=exactly(message)):
            optimizer.step()


@pytest.mark.parametrize("shape", [(3,), (3, 4)], ids=["vector", "matrix"])
def test_adafactor_rejects_complex_params(shape):
    """torch raises RuntimeError("Adafactor does not support complex parameters") at step;
    gradxform raises ValueError with that text (at init or at the first update)."""
    params = jnp.ones(shape, jnp.complex64)
    tx = gradxform.adafactor(1e-2)
    with pytest.raises(ValueError, match=exactly("Adafactor does not support complex parameters")):
        state = tx.init(params)
        tx.update(params, state, params)
    if torch is not None:
        param = torch.nn.Parameter(torch.ones(shape, dtype=torch.complex64))
        optimizer = torch.optim.Adafactor([param])
        param.grad = torch.ones(shape, dtype=torch.complex64)
        with pytest.raises(RuntimeError, match=exactly("Adafactor does not support complex parameters")):
            optimizer.step()


def test_sparse_adam_rejects_complex_params():
    params = jnp.asarray([1 + 2j, 3 - 1j], jnp.complex64)
    tx = gradxform.sparse_adam(0.1)
    with pytest.raises(ValueError, match=exactly("Complex params at the root: SparseAdam does not support complex parameters")):
        tx.init(params)


def test_torch_sparse_adam_rejects_complex_params():
    """The torch behaviour the test above expects gradxform to follow."""
    if torch is None:
        pytest.skip("torch is not installed")
    message = "Complex params at indices [[0, 0]]: SparseAdam does not support complex parameters"
    with pytest.raises(ValueError, match=exactly(message)):
        torch.optim.SparseAdam([torch.nn.Parameter(torch.ones(2, dtype=torch.complex64))])


# --------------------------------------------------------------------------- hyperparameters in state


def adam_state():
    return gradxform.adam(1e-3, weight_decay=0.1).init({"w": jnp.zeros((2, 2))})


def test_set_hyperparams_rejects_unknown_name():
    with pytest.raises(KeyError, match="learning_rat"):
        gradxform.set_hyperparams(adam_state(), learning_rat=0.1)
    with pytest.raises(KeyError, match="'lr'"):
        gradxform.set_hyperparams(adam_state(), lr=0.1)


def test_set_hyperparams_rejects_a_feature_left_out_by_a_zero_coefficient():
    """A concrete 0 weight decay is left out of the state: setting it must fail loudly."""
    state = gradxform.adam(1e-3, weight_decay=0.0).init({"w": jnp.zeros(2)})
    assert "weight_decay" not in gradxform.get_hyperparams(state)
    with pytest.raises(KeyError, match="weight_decay"):
        gradxform.set_hyperparams(state, weight_decay=0.1)
    state = gradxform.sgd(0.1).init({"w": jnp.zeros(2)})
    with pytest.raises(KeyError, match="momentum"):
        gradxform.set_hyperparams(state, momentum=0.9)


@pytest.mark.parametrize("betas", [(0.9,), (0.9, 0.99, 0.999), 0.9])
def test_set_hyperparams_rejects_wrong_number_of_values(betas):
    state = adam_state()
    with pytest.raises(ValueError, match="betas"):
        gradxform.set_hyperparams(state, betas=betas)


def test_set_hyperparams_rejects_tuple_for_scalar():
    with pytest.raises(ValueError, match="eps"):
        gradxform.set_hyperparams(adam_state(), eps=(1e-8, 1e-8))


def test_set_hyperparams_leaves_the_input_state_alone():
    state = adam_state()
    new = gradxform.set_hyperparams(state, learning_rate=0.5, betas=(0.5, 0.6))
    assert float(gradxform.get_hyperparams(state)["learning_rate"]) == pytest.approx(1e-3)
    assert float(gradxform.get_hyperparams(new)["learning_rate"]) == 0.5
    assert [float(b) for b in gradxform.get_hyperparams(new)["betas"]] == [0.5, 0.6]


@pytest.mark.parametrize(
    "make_state",
    [
        lambda p: gradxform.scale(2.0).init(p),
        lambda p: gradxform.identity().init(p),
        lambda p: gradxform.scale_by_adam().init(p),
        lambda p: (gradxform.scale(2.0).init(p), gradxform.negate().init(p)),
    ],
    ids=["scale", "identity", "scale_by_adam", "chain-without"],
)
def test_get_hyperparams_without_hyperparams_raises(make_state):
    state = make_state({"w": jnp.zeros(2)})
    with pytest.raises(ValueError, match="holds no hyperparameters"):
        gradxform.get_hyperparams(state)
    with pytest.raises(ValueError, match="holds no hyperparameters"):
        gradxform.set_hyperparams(state, learning_rate=0.1)


def test_get_hyperparams_with_two_sets_asks_for_the_sub_state():
    tx = gradxform.chain(gradxform.sgd(0.1), gradxform.adam(1e-3))
    state = tx.init({"w": jnp.zeros(2)})
    with pytest.raises(ValueError, match="2 sets of hyperparameters"):
        gradxform.get_hyperparams(state)
    # The sub-states work.
    assert float(gradxform.get_hyperparams(state[1])["learning_rate"]) == pytest.approx(1e-3)


def test_get_hyperparams_finds_the_state_inside_a_chain():
    import optax

    tx = gradxform.chain(optax.clip_by_global_norm(1.0), gradxform.adam(1e-3))
    state = tx.init({"w": jnp.zeros(2)})
    assert float(gradxform.get_hyperparams(state)["learning_rate"]) == pytest.approx(1e-3)
    state = gradxform.set_hyperparams(state, learning_rate=0.25)
    assert float(gradxform.get_hyperparams(state[1])["learning_rate"]) == 0.25
    assert jax.tree.structure(state) == jax.tree.structure(tx.init({"w": jnp.zeros(2)}))

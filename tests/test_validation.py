"""Layer (b) of STYLE.md: invalid hyperparameters raise at construction, as torch does.

One table serves both sides: each row gives gradxform's call and torch 2.13's exception
type and message (read from torch/optim/*.py). gradxform must raise ValueError with that
exact text when the transformation is built; when torch is importable the same input is
given to the torch class and must raise the same type and text (at construction, or at
the first step where torch only checks there).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform

try:
    import torch
except ImportError:  # the gradxform half of each test still runs
    torch = None

TORCH_CLASSES = {
    "sgd": "SGD",
    "asgd": "ASGD",
    "rprop": "Rprop",
    "adagrad": "Adagrad",
    "adadelta": "Adadelta",
    "rmsprop": "RMSprop",
    "adam": "Adam",
    "adamw": "AdamW",
    "adamax": "Adamax",
    "sparse_adam": "SparseAdam",
    "nadam": "NAdam",
    "radam": "RAdam",
    "adafactor": "Adafactor",
    "muon": "Muon",
}
ALIASES = tuple(TORCH_CLASSES)


class TwoElementLR:
    """A learning rate given as a 2-element array: a jax array here, a tensor in torch."""


def gradxform_kwargs(kwargs):
    return {k: (jnp.asarray([0.1, 0.2]) if v is TwoElementLR else v) for k, v in kwargs.items()}


def torch_kwargs(kwargs):
    out = {}
    for key, value in kwargs.items():
        key = "lr" if key == "learning_rate" else key
        out[key] = torch.tensor([0.1, 0.2]) if value is TwoElementLR else value
    return out


def exactly(message):
    return re.escape(message) + "$"


# (alias, gradxform kwargs, torch's message, when torch raises it)
INVALID = [
    # SGD
    ("sgd", dict(learning_rate=-0.1), "Invalid learning rate: -0.1", "init"),
    ("sgd", dict(learning_rate=-1), "Invalid learning rate: -1", "init"),
    ("sgd", dict(learning_rate=np.float64(-0.5)), "Invalid learning rate: -0.5", "init"),
    ("sgd", dict(learning_rate=0.1, momentum=-0.5), "Invalid momentum value: -0.5", "init"),
    ("sgd", dict(learning_rate=0.1, weight_decay=-1e-3), "Invalid weight_decay value: -0.001", "init"),
    ("sgd", dict(learning_rate=0.1, nesterov=True), "Nesterov momentum requires a momentum and zero dampening", "init"),
    (
        "sgd",
        dict(learning_rate=0.1, momentum=0.9, dampening=0.1, nesterov=True),
        "Nesterov momentum requires a momentum and zero dampening",
        "init",
    ),
    # torch checks lr, momentum, weight_decay, then Nesterov: the first failure wins.
    ("sgd", dict(learning_rate=-1.0, momentum=-1.0), "Invalid learning rate: -1.0", "init"),
    ("sgd", dict(learning_rate=0.1, momentum=-1.0, weight_decay=-1.0), "Invalid momentum value: -1.0", "init"),
    # ASGD
    ("asgd", dict(learning_rate=-0.01), "Invalid learning rate: -0.01", "init"),
    ("asgd", dict(learning_rate=0.01, weight_decay=-0.1), "Invalid weight_decay value: -0.1", "init"),
    # Rprop
    ("rprop", dict(learning_rate=-0.01), "Invalid learning rate: -0.01", "init"),
    ("rprop", dict(learning_rate=0.01, etas=(1.5, 2.0)), "Invalid eta values: 1.5, 2.0", "init"),
    ("rprop", dict(learning_rate=0.01, etas=(0.5, 0.9)), "Invalid eta values: 0.5, 0.9", "init"),
    ("rprop", dict(learning_rate=0.01, etas=(0.0, 1.2)), "Invalid eta values: 0.0, 1.2", "init"),
    ("rprop", dict(learning_rate=0.01, etas=(0.5, 1.0)), "Invalid eta values: 0.5, 1.0", "init"),
    # Adagrad
    ("adagrad", dict(learning_rate=-0.01), "Invalid learning rate: -0.01", "init"),
    ("adagrad", dict(learning_rate=0.01, lr_decay=-0.1), "Invalid lr_decay value: -0.1", "init"),
    ("adagrad", dict(learning_rate=0.01, weight_decay=-0.1), "Invalid weight_decay value: -0.1", "init"),
    (
        "adagrad",
        dict(learning_rate=0.01, initial_accumulator_value=-1.0),
        "Invalid initial_accumulator_value value: -1.0",
        "init",
    ),
    ("adagrad", dict(learning_rate=0.01, eps=-1e-10), "Invalid epsilon value: -1e-10", "init"),
    # Adadelta
    ("adadelta", dict(learning_rate=-1.0), "Invalid learning rate: -1.0", "init"),
    ("adadelta", dict(rho=1.1), "Invalid rho value: 1.1", "init"),
    ("adadelta", dict(rho=-0.1), "Invalid rho value: -0.1", "init"),
    ("adadelta", dict(eps=-1e-6), "Invalid epsilon value: -1e-06", "init"),
    ("adadelta", dict(weight_decay=-0.5), "Invalid weight_decay value: -0.5", "init"),
    # RMSprop
    ("rmsprop", dict(learning_rate=-0.01), "Invalid learning rate: -0.01", "init"),
    ("rmsprop", dict(eps=-1e-8), "Invalid epsilon value: -1e-08", "init"),
    ("rmsprop", dict(momentum=-0.9), "Invalid momentum value: -0.9", "init"),
    ("rmsprop", dict(weight_decay=-0.1), "Invalid weight_decay value: -0.1", "init"),
    ("rmsprop", dict(alpha=-0.99), "Invalid alpha value: -0.99", "init"),
    ("rmsprop", dict(eps=-1.0, alpha=-1.0), "Invalid epsilon value: -1.0", "init"),
    # Adam, AdamW
    ("adam", dict(learning_rate=-1e-3), "Invalid learning rate: -0.001", "init"),
    ("adam", dict(eps=-1e-8), "Invalid epsilon value: -1e-08", "init"),
    ("adam", dict(betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0", "init"),
    ("adam", dict(betas=(-0.1, 0.999)), "Invalid beta parameter at index 0: -0.1", "init"),
    ("adam", dict(betas=(0.9, 1.0)), "Invalid beta parameter at index 1: 1.0", "init"),
    ("adam", dict(betas=(0.9, -0.5)), "Invalid beta parameter at index 1: -0.5", "init"),
    ("adam", dict(weight_decay=-0.01), "Invalid weight_decay value: -0.01", "init"),
    ("adam", dict(learning_rate=-1.0, eps=-1.0), "Invalid learning rate: -1.0", "init"),
    ("adam", dict(eps=-1.0, betas=(1.0, 1.0)), "Invalid epsilon value: -1.0", "init"),
    ("adam", dict(betas=(1.0, 1.0)), "Invalid beta parameter at index 0: 1.0", "init"),
    ("adamw", dict(learning_rate=-1e-3), "Invalid learning rate: -0.001", "init"),
    ("adamw", dict(eps=-1e-8), "Invalid epsilon value: -1e-08", "init"),
    ("adamw", dict(betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0", "init"),
    ("adamw", dict(betas=(0.9, 1.5)), "Invalid beta parameter at index 1: 1.5", "init"),
    ("adamw", dict(weight_decay=-0.01), "Invalid weight_decay value: -0.01", "init"),
    # Adamax
    ("adamax", dict(learning_rate=-2e-3), "Invalid learning rate: -0.002", "init"),
    ("adamax", dict(eps=-1e-8), "Invalid epsilon value: -1e-08", "init"),
    ("adamax", dict(betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0", "init"),
    ("adamax", dict(betas=(0.9, 1.0)), "Invalid beta parameter at index 1: 1.0", "init"),
    ("adamax", dict(weight_decay=-1.0), "Invalid weight_decay value: -1.0", "init"),
    # SparseAdam: lr and eps must be strictly positive
    ("sparse_adam", dict(learning_rate=0.0), "Invalid learning rate: 0.0", "init"),
    ("sparse_adam", dict(learning_rate=-1e-3), "Invalid learning rate: -0.001", "init"),
    ("sparse_adam", dict(eps=0.0), "Invalid epsilon value: 0.0", "init"),
    ("sparse_adam", dict(eps=-1e-8), "Invalid epsilon value: -1e-08", "init"),
    ("sparse_adam", dict(betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0", "init"),
    ("sparse_adam", dict(betas=(0.9, 1.0)), "Invalid beta parameter at index 1: 1.0", "init"),
    # NAdam
    ("nadam", dict(learning_rate=-2e-3), "Invalid learning rate: -0.002", "init"),
    ("nadam", dict(eps=-1e-8), "Invalid epsilon value: -1e-08", "init"),
    ("nadam", dict(betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0", "init"),
    ("nadam", dict(betas=(0.9, 1.0)), "Invalid beta parameter at index 1: 1.0", "init"),
    ("nadam", dict(weight_decay=-0.1), "Invalid weight_decay value: -0.1", "init"),
    ("nadam", dict(momentum_decay=-4e-3), "Invalid momentum_decay value: -0.004", "init"),
    # RAdam
    ("radam", dict(learning_rate=-1e-3), "Invalid learning rate: -0.001", "init"),
    ("radam", dict(eps=-1e-8), "Invalid epsilon value: -1e-08", "init"),
    ("radam", dict(betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0", "init"),
    ("radam", dict(betas=(0.9, 1.0)), "Invalid beta parameter at index 1: 1.0", "init"),
    ("radam", dict(weight_decay=-0.1), "Invalid weight_decay value: -0.1", "init"),
    # Adafactor
    ("adafactor", dict(learning_rate=-1.0), "Learning rate should be >= 0 but is: -1.0", "init"),
    ("adafactor", dict(beta2_decay=0.5), "beta2_decay should be <= 0 but is: 0.5", "init"),
    ("adafactor", dict(eps=(-1.0, 1e-3)), "epsilon1 should be >= 0 but is: -1.0", "init"),
    ("adafactor", dict(eps=(None, -1e-3)), "epsilon2 should be >= 0 but is: -0.001", "init"),
    ("adafactor", dict(d=0.5), "Clipping threshold d should be >= 1 but is: 0.5", "init"),
    ("adafactor", dict(weight_decay=-0.1), "weight_decay should be >= 0 but is: -0.1", "init"),
    # Muon
    ("muon", dict(learning_rate=-1e-3), "Learning rate should be >= 0 but is: -0.001", "init"),
    ("muon", dict(momentum=-0.5), "momentum should be >= 0 but is: -0.5", "init"),
    ("muon", dict(weight_decay=-0.1), "weight decay should be >= 0 but is: -0.1", "init"),
    ("muon", dict(adjust_lr_fn="bogus"), "Adjust learning rate function bogus is not supported", "init"),
    # torch only checks these in step(); gradxform checks them when built.
    (
        "muon",
        dict(ns_steps=100),
        "Number of steps must be less than 100 for computational efficiency",
        "step",
    ),
    ("muon", dict(ns_coefficients=(3.4445, -4.775)), "Coefficients must be a tuple of exactly 3 values", "step"),
] + [
    # Every class: a tensor learning rate must have one element.
    (alias, dict(learning_rate=TwoElementLR), "Tensor lr must be 1-element", "init")
    for alias in ALIASES
]


def case_id(case):
    alias, kwargs, _, _ = case
    parts = [f"{k}={'2-element' if v is TwoElementLR else v}" for k, v in kwargs.items()]
    return f"{alias}-" + ",".join(parts)


def torch_raises(alias, kwargs, when):
    """Builds torch's optimizer on one matrix parameter (and steps it when ``when == 'step'``);
    returns the exception raised."""
    param = torch.nn.Parameter(torch.ones(3, 2))
    cls = getattr(torch.optim, TORCH_CLASSES[alias])
    try:
        optimizer = cls([param], **torch_kwargs(kwargs))
        if when == "step":
            param.grad = torch.ones(3, 2)
            optimizer.step()
    except Exception as error:  # noqa: BLE001 - the type is what is being compared
        return error
    return None


@pytest.mark.parametrize("case", INVALID, ids=[case_id(c) for c in INVALID])
def test_invalid_hyperparameter_raises_torch_message(case):
    alias, kwargs, message, when = case
    with pytest.raises(ValueError, match=exactly(message)) as info:
        getattr(gradxform, alias)(**gradxform_kwargs(kwargs))
    assert type(info.value) is ValueError
    assert str(info.value) == message

    if torch is not None:
        error = torch_raises(alias, kwargs, when)
        assert type(error) is ValueError, f"torch raised {error!r}"
        assert str(error) == message


def test_table_covers_every_alias():
    assert {case[0] for case in INVALID} == set(ALIASES)
    assert set(ALIASES) <= set(gradxform.__all__)


# Values on the edge of what torch accepts: gradxform must accept them too.
VALID_EDGES = [
    ("sgd", dict(learning_rate=0.0, momentum=0.0, weight_decay=0.0)),
    ("sgd", dict(learning_rate=0.1, momentum=0.9, dampening=0.0, nesterov=True)),
    ("sgd", dict(learning_rate=0.1, momentum=0.9, dampening=1.0)),
    ("asgd", dict(learning_rate=0.0, weight_decay=0.0)),
    ("rprop", dict(learning_rate=0.0, etas=(1e-3, 1.001))),
    ("adagrad", dict(learning_rate=0.0, lr_decay=0.0, initial_accumulator_value=0.0, eps=0.0)),
    ("adadelta", dict(learning_rate=0.0, rho=0.0, eps=0.0)),
    ("adadelta", dict(rho=1.0)),
    ("rmsprop", dict(learning_rate=0.0, alpha=0.0, eps=0.0, momentum=0.0)),
    ("adam", dict(learning_rate=0.0, betas=(0.0, 0.0), eps=0.0, weight_decay=0.0)),
    ("adam", dict(betas=(0.999999, 0.999999), amsgrad=True)),
    ("adamw", dict(learning_rate=0.0, betas=(0.0, 0.0), eps=0.0, weight_decay=0.0)),
    ("adamax", dict(learning_rate=0.0, betas=(0.0, 0.0), eps=0.0)),
    ("sparse_adam", dict(learning_rate=1e-12, betas=(0.0, 0.0), eps=1e-12)),
    ("nadam", dict(learning_rate=0.0, momentum_decay=0.0, betas=(0.0, 0.0))),
    ("radam", dict(learning_rate=0.0, eps=0.0, betas=(0.0, 0.0))),
    ("adafactor", dict(learning_rate=0.0, beta2_decay=0.0, eps=(0.0, 0.0), d=1.0, weight_decay=0.0)),
    ("muon", dict(learning_rate=0.0, momentum=0.0, weight_decay=0.0, ns_steps=99, adjust_lr_fn="original")),
    ("muon", dict(adjust_lr_fn="match_rms_adamw")),
]


@pytest.mark.parametrize("alias,kwargs", VALID_EDGES, ids=[case_id((a, k, None, None)) for a, k in VALID_EDGES])
def test_values_on_the_edge_are_accepted(alias, kwargs):
    tx = getattr(gradxform, alias)(**kwargs)
    assert isinstance(tx, gradxform.GradientTransformation)
    if torch is not None:
        assert torch_raises(alias, kwargs, "init") is None


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

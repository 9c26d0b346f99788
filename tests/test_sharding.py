"""Sharded parameters and optimizer state, on 8 simulated CPU devices (issue #7).

The device count is fixed when jax starts (``XLA_FLAGS``), and this test session runs
on one device: ``tests/sharding_checks.py`` runs every check in one fresh process and
reports JSON, which the tests below read and assert on.

Tolerances (float32, relative to the largest magnitude of each compared tree):

* ``4e-7`` (about 3 float32 ulps) after 20 steps for all but Muon. Element-wise rules
  perform the same operations on the same numbers, each device on its slice, and agree
  to the bit in these runs (13 of the 16 transformations); but XLA may fuse a sharded
  program differently (a contracted multiply-add), worth an ulp. Adafactor, L-BFGS and
  ZeRO-sharded updates reduce over sharded dimensions (a row mean, a dot product, a
  norm): XLA sums per device and then across devices, in another order than one
  device's, which is worth a few ulps;
* Muon's Newton–Schulz iteration runs in bfloat16 (as torch's does): an ulp there is
  ``2**-8``, and the sharded matrix products round differently: ``1e-3``.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from gradxform import _numerics

# One subprocess with 8 simulated devices runs every check (about a minute): CI runs it
# with the slow tests (`python -m pytest -m slow`).
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
ALIASES = (
    "sgd asgd rprop adagrad adadelta rmsprop adam adamw adamax sparse_adam nadam radam "
    "adafactor muon lbfgs"
).split() + ["flatten(adam)"]
REDUCTION_TOLERANCE = 4e-7
MUON_TOLERANCE = 1e-3


def _run_checks(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    # Compile-bound: cheaper backend optimization (same flags for both runs compared).
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    env.pop("JAX_ENABLE_X64", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "sharding_checks.py"), *args],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# jax 0.11 removed shard_alike; gradxform then rebuilds its tie (as _numerics found at import).
TIES = (["shard_alike"] if _numerics._shard_alike is not None else []) + ["rebuilt tie"]


@pytest.fixture(scope="module", params=TIES)
def results(request):
    """Every check, with each tie this jax can run: jax's ``shard_alike`` (up to jax 0.10)
    and the tie gradxform rebuilds for jax 0.11 and later (``_numerics._sharding_group_tie``,
    forced by ``--rebuilt-tie`` where shard_alike exists)."""
    return _run_checks(*(["--rebuilt-tie"] if request.param == "rebuilt tie" else []))


def _no_error(entry):
    assert "error" not in entry, entry["error"]


@pytest.mark.parametrize("alias", ALIASES)
def test_state_follows_parameter_sharding(results, alias):
    """jit(init) and 20 jitted updates: every state leaf on all 8 devices, sharded as its
    parameter (derived for Adafactor's factors, replicated for scalars), never whole on
    one device; the parameters keep their shardings."""
    entry = results[f"alias:{alias}"]
    _no_error(entry)
    assert entry["leaves"] > 0
    assert entry["init_problems"] == []
    assert entry["update_problems"] == []
    assert entry["param_sharding_problems"] == []
    assert entry["whole_on_one_device"] == []
    assert entry["ok"]


@pytest.mark.parametrize("alias", ALIASES)
def test_sharded_steps_equal_unsharded(results, alias):
    entry = results[f"alias:{alias}"]
    _no_error(entry)
    assert entry["moved"] > 1e-2  # the 20 steps changed the parameters
    if alias == "muon":
        assert entry["param_rel_diff"] <= MUON_TOLERANCE
        assert entry["state_rel_diff"] <= REDUCTION_TOLERANCE  # the momentum buffers are float32
    else:
        assert entry["param_rel_diff"] <= REDUCTION_TOLERANCE
        # L-BFGS's state holds 1/(y.s), a quotient of tiny dot products: compared looser.
        assert entry["state_rel_diff"] <= (1e-5 if alias == "lbfgs" else REDUCTION_TOLERANCE)


def test_minimize_keeps_shardings(results):
    entry = results["minimize"]
    _no_error(entry)
    assert entry["tree_param_problems"] == []  # the solution is placed as x0
    assert entry["tree_state_devices"] == [8]  # no state leaf on one device
    assert entry["tree_param_rel_diff"] <= REDUCTION_TOLERANCE
    assert entry["tree_n_iter"][0] == entry["tree_n_iter"][1]
    # A single leaf split along its leading axis: the flat buffers are split as well.
    assert entry["one_leaf_problems"] == [], entry["one_leaf_state_specs"]


@pytest.mark.parametrize("variant", ["adamw/shard_update=True", "adamw/shard_update=False",
                                     "adafactor/shard_update=True"])
def test_zero_divides_state_memory(results, variant):
    """shard_state over 8 devices, parameters replicated: per-device state bytes (from
    addressable_shards) fall 8-fold for every array with a dimension divisible by 8; the
    rest (scalars, a 3x5 matrix) stays replicated; the results are unchanged."""
    _no_error(results["zero"])
    alias, key = variant.split("/")
    entry = results["zero"][alias][key]
    plain, zero = entry["plain_bytes_per_device"], entry["zero_bytes_per_device"]
    assert len(plain) == len(zero) == 8
    assert plain == [entry["state_bytes_total"]] * 8  # unsharded: all of it on every device
    assert len(set(zero)) == 1  # evenly spread
    assert entry["divisible_leaves_ratio"] == 8.0
    assert entry["ratio"] > (7.0 if alias == "adamw" else 4.0)
    assert entry["init_bytes_per_device"] == zero  # already so after a jitted init
    assert entry["params_replicated"]  # the updates were gathered back
    assert entry["param_rel_diff"] <= REDUCTION_TOLERANCE
    assert entry["state_rel_diff"] <= REDUCTION_TOLERANCE
    assert "P('data',)" in entry["state_specs"]


def test_zero_over_two_axes_with_model_parallel_params(results):
    entry = results["zero"]["model_parallel"]
    assert entry["param_problems"] == []
    assert entry["state_specs"]  # every buffer split over all 8 devices
    assert all("('data', 'model')" in spec for spec in entry["state_specs"].values()), entry["state_specs"]
    assert entry["param_rel_diff"] <= REDUCTION_TOLERANCE


@pytest.mark.parametrize("name", ["Adam", "Adafactor"])
def test_torch_compat_keeps_shardings(results, name):
    """Sharded Parameters: .data and lazily made state keep the parameter's sharding
    through step(); a numpy state_dict loads placed as the parameters; training then
    continues as an unsharded twin does."""
    _no_error(results["torch_compat"])
    entry = results["torch_compat"][name]
    assert entry["constructor_keeps_sharding"]
    assert entry["step_problems"] == []
    assert entry["load_problems"] == []
    assert entry["step_arrays"] == [1, 1]  # saved and loaded: one step group
    assert entry["after_load_problems"] == []
    assert entry["param_rel_diff"] <= REDUCTION_TOLERANCE


def test_torch_compat_lbfgs_keeps_shardings(results):
    entry = results["torch_compat_lbfgs"]
    _no_error(entry)
    assert entry["param_problems"] == []
    assert entry["moved"] > 1e-2

"""What a step costs to compile and hold, per leaf and per process (issue #16): the
differences from optax's Adam that ``benchmarks/kernel_variants.py`` and
``benchmarks/leaves_scaling.py`` measured, each checked here by a count, not a time."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import gradxform


@pytest.mark.skipif(jax.device_count() != 1, reason="only a single device has no placement to keep")
def test_jitted_init_on_one_device_has_no_placement_operations():
    # shard_alike per buffer cost a jitted init at 1000 leaves 19 MB and 1.4x its time,
    # for nothing on a single device.
    params = [jnp.zeros(4, jnp.float32) for _ in range(3)]
    jaxpr = jax.make_jaxpr(gradxform.adam(1e-3).init)(params)
    assert [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "shard_alike"] == []


def test_import_does_not_import_jax_sparse():
    # jax.experimental.sparse (with scipy) is 18 MB of every process's memory; sparse
    # gradients are recognized without it, since whoever makes one has imported it.
    code = "import sys, gradxform; print('jax.experimental.sparse' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""Short long-run check: no NaN/Inf in gradxform unless torch 2.13 also produced one.

Runs ``tests/soak.py``'s problem and extreme hyperparameters for the number of steps
recorded in ``tests/golden/soak.json`` (torch's results, written by
``python tests/soak.py --steps 3000 --write-golden tests/golden/soak.json``), for every
optimizer in float32 and bfloat16, without torch.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import soak  # noqa: E402

with open(os.path.join(HERE, "golden", "soak.json")) as f:
    GOLDEN = json.load(f)

KEYS = [f"{name}/{dtype}" for name in soak.CONFIGS for dtype in soak.DTYPES]


def test_golden_covers_every_optimizer_and_dtype():
    assert sorted(GOLDEN["torch"]) == sorted(KEYS)
    assert GOLDEN["torch_version"].startswith("2.13")
    assert all(v["steps"] == GOLDEN["steps"] for v in GOLDEN["torch"].values())  # 3000 < the caps


@pytest.mark.parametrize("key", KEYS)
def test_no_nan_unless_torch_has_one(key):
    name, dtype = key.split("/")
    theirs = GOLDEN["torch"][key]
    ours = soak.run_gradxform(name, dtype, theirs["steps"])
    if theirs["first_bad"] is None:
        assert ours["first_bad"] is None, f"gradxform has a non-finite parameter at step {ours['first_bad']}, torch none"
    elif name.endswith(":diverging"):
        # Runs that overflow on purpose, with the same arithmetic: the same step.
        assert ours["first_bad"] == theirs["first_bad"]
    else:
        # torch blew up too; ours must not blow up earlier than torch does.
        assert ours["first_bad"] is None or ours["first_bad"] >= theirs["first_bad"]


def test_radam_without_x64_rectifies_when_torch_does():
    """With x64 off, RAdam's rho_t (beta2 = 0.999999) is computed without cancellation.

    The textbook float32 formula gives rho_4 = 7 and rectifies two steps before torch;
    the run then ends near 1.9e15 instead of torch's 1.38e18.
    """
    import subprocess

    code = (
        "import sys; sys.path.insert(0, 'tests'); import jax; "
        "jax.config.update('jax_enable_x64', False); import soak; "
        "print(soak.run_gradxform('radam', 'float32', 3000)['max_abs'])"
    )
    root = os.path.dirname(HERE)
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True)
    ours = float(out.stdout.strip().splitlines()[-1])
    theirs = GOLDEN["torch"]["radam/float32"]["max_abs"]
    assert ours == pytest.approx(theirs, rel=1e-5)

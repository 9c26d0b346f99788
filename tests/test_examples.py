"""Each script in examples/ runs in quick mode and produces what it promises.

The scripts run as a user runs them (``python examples/<name>.py --quick``), in a
subprocess with the Agg backend, writing into a temporary directory.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

import gradxform

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")
pytest.importorskip("tqdm")


def run_example(name: str, out: pathlib.Path) -> str:
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    # The quick runs are dominated by XLA compiling each script's few programs: cheaper
    # backend optimization saves about a quarter of that (what is tested is what the
    # scripts produce, not their speed).
    env["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0",
                                 "--xla_llvm_disable_expensive_passes=true"]).strip()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / f"{name}.py"), "--quick", "--out", str(out)],
        env=env, cwd=out, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def assert_png(path: pathlib.Path) -> None:
    assert path.is_file() and path.stat().st_size > 5000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_classifier(tmp_path):
    out = run_example("train_classifier", tmp_path)
    assert_png(tmp_path / "train_classifier.png")
    match = re.search(r"first batch loss ([\d.]+), final training loss ([\d.]+), test accuracy ([\d.]+)%, "
                      r"compilations of train_step: (\d+)", out)
    assert match, out
    first, final, accuracy, compilations = (float(g) for g in match.groups())
    assert final < first / 10
    assert accuracy > 90.0
    assert compilations == 1  # the learning-rate change halfway did not recompile


def test_torch_style_loop(tmp_path):
    out = run_example("torch_style_loop", tmp_path)
    assert_png(tmp_path / "torch_style_loop.png")
    checkpoint = gradxform.checkpoint.load(tmp_path / "checkpoint.npz")
    assert checkpoint["epoch"] == 2
    groups = checkpoint["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == [0.01, 0.005] and groups[0]["momentum"] == 0.9
    assert len(checkpoint["optimizer"]["state"]) == 4  # momentum buffers of 2 weights + 2 biases
    assert all("momentum_buffer" in s for s in checkpoint["optimizer"]["state"].values())
    valid = [float(v) for v in re.findall(r"Valid:\s+Epoch\[\d+/\d+\] Loss: ([\d.]+)", out)]
    assert len(valid) == 4 and valid[-1] < valid[0]
    # StepLR(step_size=3, gamma=0.1) after 4 epochs: one decay of both groups.
    assert "learning rates [0.001, 0.0005]" in out
    assert float(re.search(r"valid accuracy ([\d.]+)%", out).group(1)) > 85.0


@pytest.mark.slow
def test_mixed_precision(tmp_path):
    out = run_example("mixed_precision", tmp_path)
    assert_png(tmp_path / "mixed_precision.png")
    rows = re.findall(r"^(torch_compat|gradxform): (\d+) steps, (\d+) skipped, final scale ([\d.e+]+), "
                      r"loss ([\d.]+) -> ([\d.]+), test accuracy ([\d.]+)%$", out, re.M)
    assert [r[0] for r in rows] == ["torch_compat", "gradxform"], out
    for _, steps, skipped, scale, first, last, accuracy in rows:
        assert int(skipped) >= 1  # float16 overflowed at a scale of 2**16: steps were skipped
        assert int(skipped) < int(steps) // 10
        assert float(last) < float(first) / 3 and float(accuracy) > 90.0
    assert rows[0][1:4] == rows[1][1:4]  # the same steps skipped, the same final scale
    assert "same scales at every step: True" in out


@pytest.mark.slow
def test_lbfgs_fit(tmp_path):
    out = run_example("lbfgs_fit", tmp_path)
    assert_png(tmp_path / "lbfgs_fit.png")
    rows = re.findall(r"initial ([\d.e-]+) -> minimize ([\d.e-]+) \((\d+) iterations, (\d+) evaluations\) \| "
                      r"LBFGS.step ([\d.e-]+) \((\d+) iterations, (\d+) evaluations\)", out)
    assert len(rows) == 2, out
    for initial, value_f, iters_f, evals_f, value_t, iters_t, evals_t in rows:
        assert float(value_f) < float(initial) / 3
        assert (iters_f, evals_f) == (iters_t, evals_t)  # the two solvers take the same path
        assert abs(float(value_f) - float(value_t)) <= 1e-9 * abs(float(value_t))


def test_bounded_fit(tmp_path):
    out = run_example("bounded_fit", tmp_path)
    assert_png(tmp_path / "bounded_fit.png")
    bounded = re.search(r"bounded: .*smallest amplitude ([\d.e+-]+), nonzero amplitudes (\d+) of (\d+)", out)
    free = re.search(r"unbounded: .*negative amplitudes (\d+)", out)
    assert bounded and free, out
    assert float(bounded.group(1)) >= 0.0 and int(free.group(1)) > 0  # the bounds hold; without them they would not
    distance = re.search(r"max distance to gradxform's solution ([\d.e+-]+)", out)
    assert distance is None or float(distance.group(1)) < 1e-6, out  # scipy's L-BFGS-B agrees


@pytest.mark.slow
def test_implicit_hyperparameter(tmp_path):
    out = run_example("implicit_hyperparameter", tmp_path)
    assert_png(tmp_path / "implicit_hyperparameter.png")
    difference = float(re.search(r"largest relative difference ([\d.e+-]+)", out).group(1))
    assert difference < 1e-6  # the implicit gradients are ridge regression's closed-form ones
    match = re.search(r"log10 lambda ([\d.-]+) -> ([\d.-]+), validation loss ([\d.]+) -> ([\d.]+)", out)
    assert match, out
    start, end, first, last = (float(g) for g in match.groups())
    assert end > start and last < first  # the gradient led to a larger, better lambda
    match = re.search(r"multistart: (\d+) starts, (\d+) distinct minima, best value ([\d.-]+) at \(([\d.-]+), ([\d.-]+)\)", out)
    assert match, out
    assert int(match.group(2)) == 4  # the four wells, all found
    assert float(match.group(4)) < -1.0 and float(match.group(5)) < -1.0  # the tilted-down well wins


@pytest.mark.slow
def test_compare_optimizers(tmp_path):
    out = run_example("compare_optimizers", tmp_path)
    assert_png(tmp_path / "compare_optimizers.png")
    rows = re.findall(r"^(.+?)\s+loss ([\d.]+) -> ([\d.]+)$", out, re.M)
    assert len(rows) == 15  # the 14 first-order optimizers and L-BFGS
    for name, first, last in rows:
        assert float(last) < float(first), name


@pytest.mark.slow
def test_sharded_training(tmp_path):
    out = run_example("sharded_training", tmp_path)
    assert_png(tmp_path / "sharded_training.png")
    assert "8 devices (cpu), mesh {'data': 4, 'model': 2}" in out
    rows = re.findall(r"^(.+?): final loss ([\d.]+), max \|params - one-device params\| ([\d.e+-]+), "
                      r"state bytes per device (\d+) on (\d+) device\(s\) \(moments (\d+)\)", out, re.M)
    assert [r[0] for r in rows] == ["one device", "data + model parallel", "... + ZeRO state"], out
    (_, loss_1, _, bytes_1, n_1, moments_1), (_, loss_mp, drift_mp, _, n_mp, moments_mp), \
        (_, loss_z, drift_z, bytes_z, n_z, moments_z) = rows
    assert (n_1, n_mp, n_z) == ("1", "8", "8")
    # Model parallel halves the moments per device (the hidden layer over 2 devices,
    # b2 replicated); ZeRO splits them over all 8 (b2, 10 values, stays replicated).
    assert abs(int(moments_1) / int(moments_mp) - 2.0) < 0.01
    assert abs(int(moments_1) / int(moments_z) - 8.0) < 0.05
    assert int(bytes_1) / int(bytes_z) > 7.9
    # The same training: float32 matrix products reduced over 2 devices in another order.
    assert float(drift_mp) < 1e-5 and float(drift_z) < 1e-5
    assert abs(float(loss_mp) - float(loss_1)) < 1e-4 and abs(float(loss_z) - float(loss_1)) < 1e-4
    assert float(loss_1) < 0.5


@pytest.mark.slow
def test_multiprocess_training(tmp_path):
    """Two processes joined by jax.distributed (4 CPU devices each), launched by the script."""
    out = run_example("multiprocess_training", tmp_path)
    assert_png(tmp_path / "multiprocess_training.png")
    assert "2 processes x 4 devices (cpu), mesh {'data': 2, 'model': 4}" in out
    match = re.search(r"final loss ([\d.]+) \(first ([\d.]+)\), test accuracy ([\d.]+)%", out)
    assert match, out
    final, first, accuracy = (float(g) for g in match.groups())
    assert final < first / 10 and accuracy > 80.0
    # The Adam moments split over the 8 devices; b2 (10 values) and the scalars stay whole.
    mine, total = (int(g) for g in re.search(r"optimizer state per device: (\d+) bytes of (\d+)", out).groups())
    assert 7.9 < total / mine <= 8.0
    assert "parameters identical on every process: True" in out


@pytest.mark.slow
def test_param_groups_training(tmp_path):
    out = run_example("param_groups_training", tmp_path)
    assert_png(tmp_path / "param_groups_training.png")
    match = re.search(r"60 optimizer steps of 4 micro-batches \(AdamW groups\): first loss ([\d.]+), last loss ([\d.]+), "
                      r"test accuracy ([\d.]+)%, EMA test accuracy ([\d.]+)%, EMA updates (\d+), "
                      r"head learning rate ([\d.e-]+), compilations of train_step: (\d+)", out)
    assert match, out
    first, last, accuracy, ema_accuracy, ema_updates, head_lr, compilations = (float(g) for g in match.groups())
    assert last < first / 5 and accuracy > 85.0 and ema_accuracy > 50.0
    assert ema_updates == 60  # once per optimizer step, not per micro-batch
    assert head_lr == 3e-4  # set halfway with set_hyperparams(group=1, ...)
    assert compilations == 1  # which did not recompile the step

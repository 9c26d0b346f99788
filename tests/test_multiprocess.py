"""Two processes joined by ``jax.distributed``, on the CPU (issue #20).

Each test launches its processes itself: ``tests/multiprocess_worker.py`` once per
process, on a free port, with 4 simulated CPU devices each and gloo collectives, so two
processes see 2 x 4 devices that talk to each other as two hosts do. Every launch is
bounded (``LAUNCH_TIMEOUT``): a process still running then is killed and the test fails
with the processes' logs; they are killed on any failure too.

What runs where:

* the default run: a smoke test (one ZeRO step across the two processes), and a process
  whose peer never joins, which must fail with a clear error within seconds;
* ``-m slow`` (CI): the full training step, memory per device, orbax checkpoints saved
  by two processes and restored onto one process's 1 x 8 mesh, torch_compat on global
  arrays, and a process that dies while a checkpoint is being saved: about a minute and
  a half on this 2-core machine (the default run's two tests, about 40 s, mostly waiting).

Tolerances: every process computes the same bits (compared exactly). The one-process run
of the same program on the same 2 x 4 mesh agrees to ``4e-7`` relative, the tolerance of
tests/test_sharding.py: the 4-way all-reduce of the model-parallel matrix product sums
its partial sums in another order through gloo than inside one process (measured
3.1e-7; about 3 float32 ulps), and so does an unsharded run on one device.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "multiprocess_worker.py"
LAUNCH_TIMEOUT = 240  # seconds, for all the processes of one launch together
# float32 rounding between differently partitioned programs, relative to the array's
# largest value: the gradients' sums run in another order on another mesh, and the
# continued training (``*-more``) compounds it. Measured: at most 7.4e-7 (Adam's
# exp_avg_sq of w0 after the steps that follow a restore), about 6 float32 ulps; a wrong
# step count or a lost update changes them by orders of magnitude more.
TOLERANCE = 1e-6
# What jax.distributed writes when it stops a process whose peer is gone or absent.
FATAL = "Terminating process because the JAX distributed service detected fatal errors"

pytest.importorskip("orbax.checkpoint")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


class Launch:
    """The processes of one launch, after they exited: return codes, logs and time taken."""

    def __init__(self, directory, returncodes, logs, seconds):
        self.dir, self.returncodes, self.logs, self.seconds = directory, returncodes, logs, seconds

    def json(self, scenario, process):
        return json.loads((self.dir / f"{scenario}-{process}.json").read_text())

    def npz(self, scenario, process):
        with np.load(self.dir / f"{scenario}-{process}.npz") as data:
            return dict(data)

    def report(self) -> str:
        return "\n".join(f"--- process {i}, exit {rc}:\n{log[-4000:]}"
                         for i, (rc, log) in enumerate(zip(self.returncodes, self.logs)))


def launch(scenario, directory, *, processes=2, started=None, devices=4, extra=()) -> Launch:
    """Runs ``processes`` workers (only the ids in ``started``, if given) and waits for all.

    Each gets ``XLA_FLAGS`` for ``devices`` CPU devices; the rest of the environment is
    this one's, x64 off. A launch still running after ``LAUNCH_TIMEOUT`` seconds is
    killed and fails the test.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("JAX_ENABLE_X64", None)
    # Compile-bound: cheaper backend optimization (the same flags for every run compared).
    env["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices} "
                        "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
    port = free_port()
    ids = range(processes) if started is None else started
    procs, logs = [], []
    start = time.monotonic()
    try:
        for i in ids:
            log = directory / f"{scenario}-{i}.log"
            logs.append(log)
            with open(log, "w") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-u", str(WORKER), scenario, "--dir", str(directory), "--process-id", str(i),
                     "--processes", str(processes), "--port", str(port), *extra],
                    env=env, stdout=out, stderr=subprocess.STDOUT, cwd=directory))
        for proc in procs:
            try:
                proc.wait(timeout=max(start + LAUNCH_TIMEOUT - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                break
    finally:
        hung = [proc.pid for proc in procs if proc.poll() is None]
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    result = Launch(directory, [p.returncode for p in procs], [log.read_text() for log in logs],
                    time.monotonic() - start)
    if hung:
        pytest.fail(f"{scenario}: still running after {LAUNCH_TIMEOUT} s, killed\n{result.report()}")
    return result


def succeeded(run: Launch) -> Launch:
    assert run.returncodes and all(rc == 0 for rc in run.returncodes), run.report()
    return run


def max_rel_diff(a: dict, b: dict, keys) -> float:
    worst = 0.0
    for k in keys:
        x, y = a[k].astype(np.float64), b[k].astype(np.float64)
        if x.size:
            worst = max(worst, float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-30)))
    return worst


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# -- the default run ------------------------------------------------------------------------


def test_smoke_two_processes_one_zero_step(tmp_path):
    """Two processes, 8 devices: the ZeRO state split over all of them, the same bits in both."""
    run = succeeded(launch("smoke", tmp_path))
    first, second = run.json("smoke", 0), run.json("smoke", 1)
    assert first["process_count"] == 2 and first["devices"] == [8, 4]
    assert first["placement_problems"] == [] and second["placement_problems"] == []
    assert np.isfinite(first["loss"]) and first["loss"] == second["loss"]
    assert first["digest"] == second["digest"]
    a, b = run.npz("smoke", 0), run.npz("smoke", 1)
    assert sorted(a) == sorted(b) and len(a) > 20
    assert all(same_bits(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_process_that_never_joins_is_a_clear_error(tmp_path):
    """Process 0 of 2 alone: it gives up after its 2 s initialization timeout, loudly."""
    run = launch("join", tmp_path, started=[0], extra=["--init-timeout", "2"])
    assert run.returncodes[0] != 0
    assert run.seconds < 60
    log = run.logs[0]
    assert FATAL in log and "DEADLINE_EXCEEDED" in log and "RegisterTask" in log, log[-3000:]
    assert "joining localhost" in log  # the worker said what it was waiting for
    assert "joined (must not happen)" not in log


# -- the full runs (slow) ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return succeeded(launch("pair", tmp_path_factory.mktemp("pair")))


@pytest.fixture(scope="module")
def single(pair, tmp_path_factory):
    """The same program in one process with 8 devices; it reads the pair's checkpoint."""
    return succeeded(launch("single", tmp_path_factory.mktemp("single"), processes=1, devices=8,
                            extra=["--pair-dir", str(pair.dir)]))


VARIANTS = ["follow", "zero"]


@pytest.mark.slow
def test_every_process_computes_the_same_bits(pair):
    first, second = pair.json("pair", 0), pair.json("pair", 1)
    assert first["process_count"] == 2 and first["devices"] == [8, 4]
    assert first["digest"] == second["digest"]
    a, b = pair.npz("pair", 0), pair.npz("pair", 1)
    assert sorted(a) == sorted(b)
    assert [k for k in a if not same_bits(a[k], b[k])] == []
    for variant in VARIANTS:
        assert np.array_equal(first[variant]["losses"], second[variant]["losses"], equal_nan=True)


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_sharded_step_across_processes(pair, variant):
    """Clipping, a skipped non-finite step and AdamW inside; every state leaf where it belongs.

    ``follow``: each state leaf sharded as its parameter (w0's over the processes, w1's
    within them) and scalars replicated; ``zero``: split over all 8 devices by
    ``shard_state``. Every state leaf is global, never whole in one process or device.
    """
    entry = pair.json("pair", 0)[variant]
    assert entry["placement_problems"] == []
    assert entry["param_problems"] == []
    assert entry["skipped"] == [1, 0]  # the step with a NaN in process 1's rows only
    assert np.isnan(entry["losses"][2]) and np.isfinite(np.delete(entry["losses"], 2)).all()
    assert entry["nan_step_kept_params"]  # both processes skipped it
    assert min(np.delete(entry["grad_norms"], 2)) > 10  # every other step was clipped to 1
    assert entry["moved"]
    assert entry["losses"][-1] < entry["losses"][0]


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_equal_to_one_process(pair, single, variant):
    """The same program in one process (same 2 x 4 mesh), and unsharded on one device."""
    ours, theirs = pair.npz("pair", 0), single.npz("single", 0)
    keys = [k for k in ours if k.startswith(f"{variant}/")]
    assert len(keys) > 20 and set(keys) == {k for k in theirs if k.startswith(f"{variant}/")}
    assert max_rel_diff(ours, theirs, keys) <= TOLERANCE
    one = {k.replace(f"{variant}/", "one_device/", 1): ours[k] for k in keys}
    assert max_rel_diff(one, theirs, list(one)) <= TOLERANCE
    assert single.json("single", 0)[variant]["placement_problems"] == []


@pytest.mark.slow
def test_memory_per_device_from_the_compiled_step(pair):
    """The state held by one device, from XLA's memory analysis of the compiled init:
    with ``shard_state`` the moments take an eighth of their size (b2, 4 values, stays
    whole); following the parameters, their shard (w0 halved, w1/b1/w2 quartered, b2
    whole). The rest, equal in both, is the scalars and XLA's table of output buffers."""
    from multiprocess_worker import SHAPES

    entry = pair.json("pair", 0)
    moment_bytes = {k: 2 * 4 * int(np.prod(s)) for k, s in SHAPES.items()}  # exp_avg, exp_avg_sq
    zero_expected = sum(b // 8 if any(d % 8 == 0 for d in SHAPES[k]) else b for k, b in moment_bytes.items())
    follow_expected = sum(b // {"w0": 2, "w1": 4, "b1": 4, "w2": 4, "b2": 1}[k] for k, b in moment_bytes.items())
    assert sum(moment_bytes.values()) == 3872 and zero_expected == 512 and follow_expected == 1120
    zero, follow = entry["zero"]["init_memory"]["output"], entry["follow"]["init_memory"]["output"]
    overhead = zero - zero_expected
    assert follow - follow_expected == overhead
    assert 0 < overhead <= 16 * entry["zero"]["state_leaves"]  # a scalar and a table entry a leaf, at most
    assert entry["zero"]["state_bytes_total"] == entry["follow"]["state_bytes_total"] > 3872
    # The compiled step too: its arguments (parameters, state, batch) shrink by as much.
    step_zero, step_follow = entry["zero"]["step_memory"], entry["follow"]["step_memory"]
    assert step_follow["argument"] - step_zero["argument"] == follow_expected - zero_expected
    assert step_zero["peak"] < step_follow["peak"]


@pytest.mark.slow
def test_orbax_checkpoint_from_both_processes(pair):
    entry = pair.json("pair", 0)
    assert entry["restore_same_mesh_bits"] and pair.json("pair", 1)["restore_same_mesh_bits"]
    assert entry["restore_types"] == ["SkipNonFiniteState", "SkipNonFiniteState"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_checkpoint_restored_onto_a_1x8_mesh(pair, single, variant):
    """Saved by 2 processes on a 2 x 4 mesh, restored by one onto 1 x 8: the same bits,
    placed for the new mesh, and training goes on as it did in the pair."""
    saved, restored = pair.npz("pair", 0), single.npz("single", 0)
    keys = [k for k in saved if k.startswith(f"{variant}/")]
    assert [k for k in keys if not same_bits(saved[k], restored[f"restored:{k}"])] == []
    assert single.json("single", 0)["restored_problems"][variant] == []
    more = [k for k in saved if k.startswith(f"{variant}-more/")]
    assert len(more) == len(keys)
    assert max_rel_diff({k: restored[f"restored:{k}"] for k in more}, saved, more) <= TOLERANCE


@pytest.mark.slow
def test_torch_compat_on_global_arrays(pair):
    """Parameters holding global arrays: step() keeps them and their state global and
    sharded; state_dict() holds global arrays (no process can read w0's whole);
    load_state_dict() takes them, their process_allgather'd numpy copies, or orbax's
    restore, and each continues bit for bit as the original."""
    entry = pair.json("pair", 0)["torch_compat"]
    assert "error" not in entry, entry["error"]
    assert entry["skipped_steps"] == 1
    assert entry["step_problems"] == []
    assert entry["state_dict_global"] and entry["np_asarray_refused"]
    assert entry["gathered_equals_live"]
    for source in ("global", "numpy", "orbax"):
        assert entry[f"load_{source}_problems"] == [], source
        assert entry["continued_same_bits"][source], source
    assert entry["state_dict_still_readable"]
    values = pair.npz("pair", 0)
    keys = [k for k in values if k.startswith("compat/")]
    local = {k: values[k.replace("compat/", "compat-local/", 1)] for k in keys}
    assert len(keys) == 20  # 5 parameters, 3 state entries each
    assert max_rel_diff(values, local, keys) <= TOLERANCE  # as the same optimizer on one device


@pytest.mark.slow
def test_a_process_that_dies_while_saving(tmp_path):
    """Process 1 dies while step 3 is being saved: process 0 stops with a clear error
    within its 10 s heartbeat timeout, and the checkpoints of steps 1 and 2 are intact
    (step 3 was never committed)."""
    import jax
    import orbax.checkpoint as ocp

    from multiprocess_worker import flat

    run = launch("die", tmp_path, extra=["--heartbeat-timeout", "10"])
    assert run.returncodes[1] == 17, run.report()
    assert run.returncodes[0] != 0, run.report()
    assert "dying while step 3 is being saved" in run.logs[1]
    assert FATAL in run.logs[0] and "stopped sending heartbeats" in run.logs[0], run.logs[0][-3000:]
    assert "must not happen" not in run.logs[0]
    assert run.seconds < 120

    # This process (one device) reads what the two wrote.
    with ocp.StandardCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(tmp_path / "checkpoints" / "2" / "default").item_metadata.tree
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), metadata)
    with ocp.CheckpointManager(tmp_path / "checkpoints") as manager:
        assert manager.all_steps() == [1, 2] and manager.latest_step() == 2
        restored = flat(manager.restore(2, args=ocp.args.StandardRestore(target)))
    saved = run.npz("die", 0)  # gathered by process 0 after step 2 was committed
    assert sorted(restored) == sorted(saved) and len(saved) > 20
    assert [k for k in saved if not same_bits(restored[k], saved[k])] == []

"""Training across processes with ``jax.distributed``: one program, run by every process.

An MLP classifier on scikit-learn's digits, trained by N processes that together hold
one mesh: the batch is split over ``"data"`` (across the processes, each feeding its own
rows), the hidden layer over ``"model"`` (within each process), and the optimizer state
over all the devices with ``gradxform.shard_state`` (ZeRO). Every process runs the same
code; ``jax.jit`` compiles one SPMD program, and XLA inserts the collectives between the
processes.

Run with no ``--process-id``, the script is its own launcher: it starts ``--processes``
copies of itself on this machine, each with ``--devices-per-process`` simulated CPU
devices (``XLA_FLAGS=--xla_force_host_platform_device_count``) talking through gloo, and
waits for them; if one fails, it stops the others and says which. Process 0 prints the
results and saves the loss curve.

    pip install -e ".[examples]"
    python examples/multiprocess_training.py --processes 2           # 400 steps
    python examples/multiprocess_training.py --processes 2 --quick   # 40 steps, for CI

On a cluster, start one process per host yourself (``srun``, a TPU pod's
``--worker=all``, your scheduler) with ``--cluster``: ``jax.distributed.initialize()``
then reads the coordinator, the process count and the process id from the environment.
That call is the only line that changes (see docs/sharding.md).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import gradxform
from _digits_mlp import PARAM_SPECS, init_params, logits_fn, loss_fn  # this folder's model

# CPU devices of different processes talk through gloo; GPUs and TPUs ignore this.
jax.config.update("jax_cpu_collectives_implementation", "gloo")

def launch(args, argv) -> int:
    """Starts ``args.processes`` copies of this script here and waits for all of them.

    Returns 0 when every process succeeded; otherwise stops the others as soon as one
    fails (or at the timeout) and returns 1.
    """
    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""),
                                 f"--xla_force_host_platform_device_count={args.devices_per_process}"]).strip()
    procs = [
        subprocess.Popen([sys.executable, __file__, *argv, "--process-id", str(i),
                          "--coordinator", f"localhost:{port}"], env=env)
        for i in range(args.processes)
    ]
    deadline = time.monotonic() + args.timeout
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i, code = failed[0]
                print(f"process {i} exited with status {code}: stopping the others", file=sys.stderr)
                return 1
            if all(c == 0 for c in codes):
                return 0
            if time.monotonic() > deadline:
                print(f"still running after {args.timeout} s: stopping every process", file=sys.stderr)
                return 1
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def train(args):
    if args.cluster:
        jax.distributed.initialize()  # SLURM, Cloud TPU, Open MPI...: read from the environment
    else:
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.processes,
            process_id=args.process_id,
            initialization_timeout=args.join_timeout,  # a process that never joins: an error, not a hang
            heartbeat_timeout_seconds=args.heartbeat_timeout,  # one that dies: the others stop
        )
    me, count = jax.process_index(), jax.process_count()
    lead = me == 0
    # "data" across the processes (hosts), "model" within each: the frequent model-parallel
    # collectives stay inside a host.
    mesh = Mesh(np.array(jax.devices()).reshape(count, -1), ("data", "model"))
    if lead:
        print(f"{count} processes x {jax.local_device_count()} devices ({jax.devices()[0].platform}), "
              f"mesh {dict(mesh.shape)}", flush=True)

    from sklearn.datasets import load_digits

    digits = load_digits()
    x_all = (digits.data / 16.0).astype(np.float32)
    y_all = digits.target.astype(np.int32)
    x_train, y_train, x_test, y_test = x_all[:1500], y_all[:1500], x_all[1500:], y_all[1500:]

    # Parameters: made from the same key on every process, placed by their specs.
    params = init_params(jax.random.key(0))
    params = {k: jax.device_put(v, NamedSharding(mesh, PARAM_SPECS[k])) for k, v in params.items()}
    # The state split over every device. "model" first: each device's slice of a moment
    # then lies inside its own shard of the parameter, and the step moves no state around.
    tx = gradxform.shard_state(
        gradxform.chain(gradxform.clip_by_global_norm(1.0), gradxform.adamw(1e-2, weight_decay=1e-4)),
        mesh, ("model", "data"))
    state = jax.jit(tx.init)(params)  # born sharded: each device makes its slice

    @jax.jit
    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return gradxform.apply_updates(params, updates), state, loss

    steps, batch = (40 if args.quick else 400), 256
    rows = NamedSharding(mesh, P("data"))
    rng = np.random.default_rng(0)  # the same draws everywhere; each process keeps its rows
    losses = []
    for i in range(steps):
        index = rng.choice(len(x_train), batch, replace=False)
        mine = np.array_split(index, count)[me]
        x = jax.make_array_from_process_local_data(rows, x_train[mine], (batch, 64))
        y = jax.make_array_from_process_local_data(rows, y_train[mine], (batch,))
        params, state, loss = step(params, state, x, y)
        losses.append(float(loss))  # a replicated scalar: every process may read it
        if lead and (i % (steps // 4) == 0 or i == steps - 1):
            print(f"step {i}: loss {losses[-1]:.4f}", flush=True)

    replicated = NamedSharding(mesh, P())
    logits = jax.jit(logits_fn, out_shardings=replicated)(params, jax.device_put(x_test, replicated))
    accuracy = float(np.mean(np.argmax(np.asarray(logits), axis=1) == y_test))
    # What one device holds of the optimizer state, and what every device holds together.
    first = jax.local_devices()[0]
    mine = sum(s.data.nbytes for leaf in jax.tree.leaves(state) for s in leaf.addressable_shards if s.device == first)
    total = sum(leaf.nbytes for leaf in jax.tree.leaves(state))
    # The whole parameters on every process (a collective), and the check that they agree.
    whole = multihost_utils.process_allgather(params, tiled=True)
    multihost_utils.assert_equal(whole, "the processes disagree")
    if lead:
        print(f"final loss {losses[-1]:.4f} (first {losses[0]:.4f}), test accuracy {100 * accuracy:.1f}%")
        print(f"optimizer state per device: {mine} bytes of {total} ({total / mine:.1f}x less)")
        print("parameters identical on every process: True")
        save_plot(losses, args.out, count)


def save_plot(losses, out, count):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(losses)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.set_title(f"AdamW with ZeRO state across {count} processes")
    fig.tight_layout()
    path = os.path.join(out, "multiprocess_training.png")
    fig.savefig(path, dpi=80)
    print(f"saved {path}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2, help="how many local processes to start")
    parser.add_argument("--devices-per-process", type=int, default=4, help="simulated CPU devices of each")
    parser.add_argument("--quick", action="store_true", help="40 steps instead of 400, for CI")
    parser.add_argument("--out", default=".", help="directory for multiprocess_training.png")
    parser.add_argument("--timeout", type=float, default=600, help="seconds the launcher waits in all")
    parser.add_argument("--join-timeout", type=int, default=60, help="seconds to wait for every process to join")
    parser.add_argument("--heartbeat-timeout", type=int, default=60,
                        help="seconds of silence after which a process is declared dead")
    parser.add_argument("--cluster", action="store_true",
                        help="run as one process of a cluster job: jax.distributed.initialize() with no arguments")
    parser.add_argument("--process-id", type=int, help=argparse.SUPPRESS)  # set by the launcher
    parser.add_argument("--coordinator", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cluster or args.process_id is not None:
        train(args)
        return 0
    return launch(args, argv)


if __name__ == "__main__":
    sys.exit(main())

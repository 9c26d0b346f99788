"""Optimizer-state memory per device across processes, from XLA's memory analysis.

Compiles (without running) ``jit(init)`` and one donated training step of an MLP
(1024 -> 4096 -> 1024, 8.4M float32 parameters) on 8 devices, and reads each compiled
program's memory analysis, which is per device for an SPMD program:

* state per device: the output of the compiled ``init`` (it includes XLA's table of
  output buffers, 8 bytes a leaf);
* the step's arguments (parameters, state, batch), outputs, temporaries, and its peak
  (arguments + outputs + temporaries - donated bytes).

Three optimizers, the same AdamW: ``optax.adamw`` with optax's default placement (the
state is whatever XLA makes of ``jax.jit(init)``), ``gradxform.adamw`` (the state follows
each parameter), and ``gradxform.shard_state(gradxform.adamw(...), mesh, axes)`` (ZeRO:
the state split over all the devices); with the parameters replicated (data parallel, a
1-D mesh) or split over ``"model"`` (a ``("data", "model")`` mesh, "data" across the
processes).

By default the script starts itself as 2 processes of 4 simulated CPU devices joined by
``jax.distributed`` (gloo); ``--processes 1`` runs one process with 8 devices. Process 0
prints a markdown table.

    PYTHONPATH=. python benchmarks/multiprocess_memory.py [--processes 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys

DEVICES = 8
SHAPES = {"w1": (1024, 4096), "b1": (4096,), "w2": (4096, 1024), "b2": (1024,)}
MODEL_SPECS = {"w1": (None, "model"), "b1": ("model",), "w2": ("model", None), "b2": (None,)}
BATCH = 64


def launch(processes: int, argv: list[str]) -> int:
    """Runs this script as ``processes`` processes of ``DEVICES / processes`` devices each."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES // processes}")
    procs = [subprocess.Popen([sys.executable, __file__, *argv, "--process-id", str(i), "--port", str(port)], env=env)
             for i in range(processes)]
    try:
        return max(p.wait(timeout=900) for p in procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def measure(args) -> None:
    import jax

    if args.processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"localhost:{args.port}", num_processes=args.processes,
                                   process_id=args.process_id, initialization_timeout=120)
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    import gradxform

    def loss_fn(params, x, y):
        hidden = jax.nn.relu(x @ params["w1"] + params["b1"])
        return jnp.mean((hidden @ params["w2"] + params["b2"] - y) ** 2)

    def abstract(tree, shardings):
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)

    def analysis(compiled):
        m = compiled.memory_analysis()
        out = {k: getattr(m, f"{k}_size_in_bytes") for k in ("argument", "output", "temp", "alias")}
        out["peak"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
        return out

    devices = np.array(jax.devices())
    layouts = {
        "replicated parameters, mesh (data: 8)": (Mesh(devices, ("data",)), {k: P() for k in SHAPES}, "data"),
        "w1, b1, w2 split over model, mesh (data: 2, model: 4)": (
            Mesh(devices.reshape(2, 4), ("data", "model")), {k: P(*s) for k, s in MODEL_SPECS.items()},
            ("model", "data")),
    }
    rows = []
    for layout, (mesh, specs, axes) in layouts.items():
        params = {k: jax.ShapeDtypeStruct(s, jnp.float32, sharding=NamedSharding(mesh, specs[k]))
                  for k, s in SHAPES.items()}
        rows_sharding = NamedSharding(mesh, P(mesh.axis_names[0]))
        x = jax.ShapeDtypeStruct((BATCH, 1024), jnp.float32, sharding=rows_sharding)
        y = jax.ShapeDtypeStruct((BATCH, 1024), jnp.float32, sharding=rows_sharding)
        def like_params(state, mesh=mesh, specs=specs):
            """Each state leaf of a parameter's shape placed as that parameter; the rest replicated."""
            def place(path, leaf):
                keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
                spec = specs[keys[-1]] if keys and leaf.shape == SHAPES[keys[-1]] else P()
                return NamedSharding(mesh, spec)

            return jax.tree_util.tree_map_with_path(place, state)

        contenders = [
            ("optax.adamw, jax.jit(init)", optax.adamw(1e-3, weight_decay=1e-2), None),
            ("optax.adamw, placed like the parameters by hand", optax.adamw(1e-3, weight_decay=1e-2), like_params),
            ("gradxform.adamw, jax.jit(init)", gradxform.adamw(1e-3, weight_decay=1e-2), None),
            (f"gradxform.shard_state(adamw, mesh, {axes!r}), jax.jit(init)",
             gradxform.shard_state(gradxform.adamw(1e-3, weight_decay=1e-2), mesh, axes), None),
        ]
        if len(axes) == 2:  # the other order: a device's slice of the state is not in its parameter shard
            contenders.append((f"gradxform.shard_state(adamw, mesh, {axes[::-1]!r}), jax.jit(init)",
                               gradxform.shard_state(gradxform.adamw(1e-3, weight_decay=1e-2), mesh, axes[::-1]),
                               None))
        for name, tx, placement in contenders:
            shapes = jax.eval_shape(tx.init, params)
            out_shardings = None if placement is None else placement(shapes)
            init = jax.jit(tx.init, out_shardings=out_shardings).lower(params).compile()
            total = sum(int(np.prod(leaf.shape)) * leaf.dtype.itemsize for leaf in jax.tree.leaves(shapes))
            if any(len(s.device_set) == 1 for s in jax.tree.leaves(init.output_shardings)):
                # The whole state on one device (of each process): the step refuses it.
                rows.append((layout, name, total, analysis(init)["output"], None))
                continue
            state = abstract(shapes, init.output_shardings)

            def step(params, state, x, y, tx=tx):
                grads = jax.grad(loss_fn)(params, x, y)
                updates, state = tx.update(grads, state, params)
                return optax.apply_updates(params, updates), state

            compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, x, y).compile()
            rows.append((layout, name, total, analysis(init)["output"], analysis(compiled)))

    if jax.process_index() == 0:
        mb = 1e6
        print(f"{jax.process_count()} process(es) x {jax.local_device_count()} CPU devices; jax {jax.__version__}, "
              f"optax {optax.__version__}, Python {platform.python_version()}")
        print("| parameters | optimizer, state placement | state, all devices (MB) | state per device (MB) | "
              "ratio | step: arguments per device (MB) | step: temporaries (MB) | step: peak per device (MB) |")
        print("|---|---|---|---|---|---|---|---|")
        for layout, name, total, per_device, step in rows:
            step_columns = ["refused: the state is on one device", "", ""] if step is None else [
                f"{step[k] / mb:.2f}" for k in ("argument", "temp", "peak")]
            print(f"| {layout} | {name} | {total / mb:.2f} | {per_device / mb:.3f} | {total / per_device:.2f} | "
                  + " | ".join(step_columns) + " |")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2, choices=[1, 2])
    parser.add_argument("--process-id", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.process_id is None:
        return launch(args.processes, argv)
    measure(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

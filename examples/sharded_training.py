"""Data- and model-parallel training with sharded optimizer state, on 8 simulated devices.

An MLP classifier on scikit-learn's digits, trained three ways with the same jitted step
and the same ``gradxform.adamw``:

1. on one device (the reference);
2. on a 4 x 2 mesh: the batch split over ``"data"``, the hidden layer over ``"model"``;
   the optimizer state follows each parameter's sharding (nothing to configure);
3. the same, with the state split over all 8 devices by ``gradxform.shard_state``
   (ZeRO): the state memory per device falls 8-fold.

It prints the optimizer-state bytes held by each device (from ``addressable_shards``),
the largest difference of the sharded runs' parameters from the reference, and saves the
three loss curves as a PNG. On a CPU the 8 devices are simulated with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``, set below before jax starts; on a
machine with 8 GPUs or TPU cores the same script runs on them. On a cluster run it on
every host with ``--distributed`` (see docs/sharding.md):

    pip install -e ".[examples]"
    python examples/sharded_training.py            # 600 steps
    python examples/sharded_training.py --quick    # 60 steps, for CI
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]
).strip()

import argparse  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import gradxform  # noqa: E402
from _digits_mlp import PARAM_SPECS, init_params, loss_fn  # noqa: E402  (this folder's model)

BATCH_SPEC = P("data", None)


def make_step(tx):
    @jax.jit
    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return gradxform.apply_updates(params, updates), state, loss

    return step


def state_bytes_per_device(state):
    """Bytes of optimizer state on each device, summed over its shards."""
    totals = {}
    for leaf in jax.tree.leaves(state):
        for shard in leaf.addressable_shards:
            totals[shard.device] = totals.get(shard.device, 0) + shard.data.nbytes
    return totals


def train(tx, params, batches, place_params, place_batch):
    params = place_params(params)
    state = jax.jit(tx.init)(params)  # the state is born sharded, never gathered
    step = make_step(tx)
    losses = []
    for x, y in batches:
        params, state, loss = step(params, state, *place_batch(x, y))
        losses.append(float(loss))
    return params, state, losses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="60 steps instead of 600, for CI")
    parser.add_argument("--out", default=".", help="directory for sharded_training.png")
    parser.add_argument("--distributed", action="store_true",
                        help="call jax.distributed.initialize() first (one process per host)")
    args = parser.parse_args(argv)
    if args.distributed:
        jax.distributed.initialize()  # cluster settings come from the environment (SLURM, TPU pods, ...)

    devices = jax.devices()
    model = 2 if len(devices) % 2 == 0 else 1
    mesh = Mesh(np.array(devices).reshape(len(devices) // model, model), ("data", "model"))
    print(f"{len(devices)} devices ({devices[0].platform}), mesh {dict(mesh.shape)}, "
          f"{jax.process_count()} process(es)")

    digits = load_digits()
    x_all = (digits.data / 16.0).astype(np.float32)
    y_all = digits.target.astype(np.int32)
    steps, batch = (60 if args.quick else 600), 256
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(steps):
        index = rng.choice(len(x_all), batch, replace=False)
        batches.append((x_all[index], y_all[index]))
    params = init_params(jax.random.key(0))

    def shard_params(p):
        return {k: jax.device_put(v, NamedSharding(mesh, PARAM_SPECS[k])) for k, v in p.items()}

    def shard_batch(x, y):
        return (jax.device_put(x, NamedSharding(mesh, BATCH_SPEC)),
                jax.device_put(y, NamedSharding(mesh, P("data"))))

    def one_device(p):
        return jax.device_put(p, devices[0])

    runs = {
        "one device": (gradxform.adamw(1e-2), one_device, lambda x, y: one_device((x, y))),
        "data + model parallel": (gradxform.adamw(1e-2), shard_params, shard_batch),
        "... + ZeRO state": (gradxform.shard_state(gradxform.adamw(1e-2), mesh, ("data", "model")),
                             shard_params, shard_batch),
    }
    results = {}
    for name, (tx, place_params, place_batch) in runs.items():
        results[name] = train(tx, params, batches, place_params, place_batch)

    reference = results["one device"][0]
    for name, (final, state, losses) in results.items():
        per_device = state_bytes_per_device(state)
        # The Adam moments (dense, of the parameters' shapes) and the scalars apart.
        moments = [state.inner_state[0].exp_avg, state.inner_state[0].exp_avg_sq]
        moment_bytes = state_bytes_per_device(moments)
        drift = max(float(jnp.max(jnp.abs(np.asarray(final[k]) - np.asarray(reference[k])))) for k in final)
        specs = sorted({str(getattr(leaf.sharding, "spec", "one device")) for leaf in jax.tree.leaves(moments)})
        print(f"{name}: final loss {losses[-1]:.4f}, max |params - one-device params| {drift:.2e}, "
              f"state bytes per device {max(per_device.values())} on {len(per_device)} device(s) "
              f"(moments {max(moment_bytes.values())}), moment shardings {', '.join(specs)}")

    os.makedirs(args.out, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for (name, (_, _, losses)), style in zip(results.items(), ("-", "--", ":")):
        ax.plot(losses, style, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.set_title("AdamW on 8 simulated devices: the same curve")
    ax.legend()
    fig.tight_layout()
    path = os.path.join(args.out, "sharded_training.png")
    fig.savefig(path, dpi=80)
    print(f"saved {path}")


if __name__ == "__main__":
    main()

"""Can one Adam step use both CPU cores from JAX? Each way measured, in subprocesses.

    python benchmarks/two_cores.py [--repeats 20]

XLA's CPU flags and the number of host devices are fixed when jax is imported, so each
variant runs in its own process. All run ``gradxform.adam`` over the "large" model of
``step_bench.py`` (23.6M float32 values), params, state and grads kept flat (one buffer
each), jitted and donated:

- ``1 core``: the process pinned to one core (``os.sched_setaffinity``): the baseline;
- ``default``: one buffer, both cores available;
- ``chunks=K``: the buffers cut into K independent pieces inside one jitted step (XLA
  may run independent loops concurrently);
- ``2 host devices``: ``--xla_force_host_platform_device_count=2`` and the buffers
  sharded over both devices with ``NamedSharding``;
- ``async halves``: two jitted calls on two halves, dispatched back to back (JAX
  dispatches asynchronously);
- XLA flags that route element-wise work to XNNPACK / YNNPACK (multi-threaded libraries).

A ratio below 1 against ``1 core`` means the second core helped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

SIZE = 36 * 768 * 853 + 36 * 768 + 1

CHILD = r"""
import json, os, statistics, sys, time
cfg = json.loads(sys.argv[1])
if cfg.get("pin"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
import jax, jax.numpy as jnp, numpy as np
import gradxform
size, chunks, repeats = cfg["size"], cfg["chunks"], cfg["repeats"]
tx = gradxform.adam(1e-3)

def make(n):
    return jnp.asarray(np.random.default_rng(0).standard_normal(n, dtype=np.float32))

def step(p, s, g):
    u, s = tx.update(g, s, p)
    return gradxform.apply_updates(p, u), s

if cfg.get("devices"):
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    mesh = Mesh(np.array(jax.devices()), ("x",))
    shard = NamedSharding(mesh, P("x"))
    p = jax.device_put(make(size - size % len(jax.devices())), shard)
    g = jax.device_put(jnp.full(p.shape, 0.01, jnp.float32), shard)
    fn = jax.jit(step, donate_argnums=(0, 1))
    box = [p, jax.jit(tx.init)(p)]
    def run():
        box[0], box[1] = fn(box[0], box[1], g)
        jax.block_until_ready(box[0])
elif cfg.get("async"):
    half = size // 2
    fn = jax.jit(step, donate_argnums=(0, 1))
    boxes = [[make(half), None] for _ in range(2)]
    for b in boxes:
        b[1] = tx.init(b[0])
    g = jnp.full(half, 0.01, jnp.float32)
    def run():
        for b in boxes:
            b[0], b[1] = fn(b[0], b[1], g)
        jax.block_until_ready([b[0] for b in boxes])
else:
    piece = size // chunks
    ps = [make(piece) for _ in range(chunks)]
    gs = [jnp.full(piece, 0.01, jnp.float32) for _ in range(chunks)]
    fn = jax.jit(step, donate_argnums=(0, 1))
    box = [ps, tx.init(ps)]
    def run():
        box[0], box[1] = fn(box[0], box[1], gs)
        jax.block_until_ready(box[0])

run(); run()
times = []
for _ in range(repeats):
    t = time.perf_counter(); run(); times.append(time.perf_counter() - t)
print(json.dumps(statistics.median(times)))
"""

VARIANTS = [
    ("1 core", dict(pin=True), ""),
    ("default (one buffer)", {}, ""),
    ("chunks=2", dict(chunks=2), ""),
    ("chunks=8", dict(chunks=8), ""),
    ("2 host devices, sharded", dict(devices=True), "--xla_force_host_platform_device_count=2"),
    ("async halves", {"async": True}, ""),
    ("XNNPACK element-wise fusions", {}, "--xla_cpu_experimental_xnn_fusion_type=eltwise"),
    ("YNNPACK element-wise fusions", {}, "--xla_cpu_experimental_ynn_fusion_type=eltwise"),
]


def run_variant(cfg, flags, repeats):
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flags).strip())
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cfg = dict(dict(size=SIZE, chunks=1, repeats=repeats), **cfg)
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], env=env, capture_output=True, text=True)
    if out.returncode:
        return None, out.stderr.strip().splitlines()[-1]
    return json.loads(out.stdout.strip().splitlines()[-1]), ""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    print(f"# {os.cpu_count()} CPUs; Adam step over {SIZE / 1e6:.1f}M float32 values")
    print("| variant | median (ms) | ratio to 1 core |")
    print("|---|---|---|")
    baseline = None
    for label, cfg, flags in VARIANTS:
        t, error = run_variant(cfg, flags, args.repeats)
        if t is None:
            print(f"| {label} | failed: {error} | |", flush=True)
            continue
        baseline = baseline or t
        print(f"| {label} | {t * 1e3:.1f} | {t / baseline:.2f} |", flush=True)


if __name__ == "__main__":
    main()

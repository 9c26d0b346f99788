"""One process of the multi-process checks of tests/test_multiprocess.py (issue #20).

The tests launch this script themselves, once per process, each with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``: two processes joined by
``jax.distributed.initialize`` (gloo collectives on the CPU) see 2 x 4 devices, and a
``Mesh`` over them spans both processes, as a mesh over two hosts does. No process
holds a whole array of a sharded value: everything below works on global ``jax.Array``s
through ``jax.jit``, and values come to the host only through :func:`gather` (what
``multihost_utils.process_allgather`` does), for the comparisons.

    python tests/multiprocess_worker.py SCENARIO --dir DIR [--process-id I --processes N --port P]

Scenarios (each process writes ``DIR/<scenario>-<I>.json``, its checks, and
``DIR/<scenario>-<I>.npz``, the gathered values it compares):

* ``pair`` (2 processes): the sharded training step, with the state following the
  parameters and with :func:`gradxform.shard_state` (ZeRO); the compiled steps' memory
  analysis; an orbax checkpoint saved and restored by both processes; torch_compat on
  global arrays.
* ``single`` (1 process, 8 devices): the same training on the same 2 x 4 mesh in one
  process, and on one device; restores the pair's checkpoint onto a 1 x 8 mesh and
  trains on from it.
* ``die`` (2 processes): checkpoints of steps 1 and 2 with an orbax
  ``CheckpointManager``; process 1 dies while step 3 is being saved.
* ``smoke`` (2 processes): one ZeRO step, quickly.
* ``join``: only waits to join (the test starts fewer processes than it announces).

float32 throughout (x64 off), the precision sharded training uses.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import pathlib
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import gradxform

# A small MLP whose parameters are split over "data", across the processes (w0), over
# "model", within each process (w1, b1, w2), or replicated (b2).
SHAPES = {"w0": (8, 8), "w1": (8, 32), "b1": (32,), "w2": (32, 4), "b2": (4,)}
SPECS = {"w0": P("data", None), "w1": P(None, "model"), "b1": P("model"), "w2": P("model", None), "b2": P()}
BATCH = 16  # rows, split over "data": each process holds 8
STEPS = 5
NAN_STEP = 2  # the step whose batch holds a NaN, in process 1's rows only
MORE_STEPS = 3  # after the checkpoint
# shard_state splits the state over all 8 devices. In this order (not the ("model", "data")
# that docs/sharding.md advises for model-parallel parameters) a device's slice of the
# state is not inside its shard of the parameter: each step moves slices between devices
# and processes, the harder case.
ZERO_AXES = ("data", "model")
LEARNING_RATE = 0.05


def make_tx() -> gradxform.GradientTransformation:
    """The transformation every run here trains with (built in this one place).

    Non-finite steps are skipped, the gradients are clipped to a global norm of 1
    (their norm is larger here, so every step clips), and AdamW updates in two param
    groups: the biases without weight decay, the rest with it.
    """
    return gradxform.skip_non_finite(
        gradxform.chain(
            gradxform.clip_by_global_norm(1.0),
            gradxform.param_groups(gradxform.adamw, [{"params": r"b\d", "weight_decay": 0.0}],
                                   learning_rate=LEARNING_RATE, weight_decay=0.1),
        )
    )


def make_variants(mesh: Mesh) -> dict[str, gradxform.GradientTransformation]:
    """``follow``: the state follows each parameter's sharding; ``zero``: split over all devices."""
    return {"follow": make_tx(), "zero": gradxform.shard_state(make_tx(), mesh, ZERO_AXES)}


def loss_fn(params, x, y):
    hidden = jnp.tanh(x @ params["w0"])
    hidden = jax.nn.relu(hidden @ params["w1"] + params["b1"])
    return jnp.mean((hidden @ params["w2"] + params["b2"] - y) ** 2)


def initial_values() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}


def batches(steps: int, seed: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """The whole batches, the same on every process (each places only its own rows)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(steps):
        x = rng.normal(size=(BATCH, 8)).astype(np.float32)
        y = (10.0 * rng.normal(size=(BATCH, 4))).astype(np.float32)  # large: the norm is clipped
        if i == NAN_STEP:
            x[BATCH - 1, 0] = np.nan  # in the last rows, which process 1's devices hold
        out.append((x, y))
    return out


def make_mesh(shape=(2, 4)) -> Mesh:
    """``("data", "model")`` over every device; with 2 processes, each mesh row is one process."""
    return Mesh(np.array(jax.devices()).reshape(shape), ("data", "model"))


def place(value: np.ndarray, sharding) -> jax.Array:
    """A global array from a host value every process has: each places only its slices."""
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def place_params(values, mesh):
    return {k: place(v, NamedSharding(mesh, SPECS[k])) for k, v in values.items()}


def place_batch(batch, mesh):
    x, y = batch
    return place(x, NamedSharding(mesh, P("data", None))), place(y, NamedSharding(mesh, P("data", None)))


def gather(tree):
    """The whole values as numpy, on every process (a collective: all processes call it).

    What ``multihost_utils.process_allgather`` does leaf by leaf, in one compiled call
    for the whole tree: every leaf replicated, then read from this process's devices.
    """
    leaves = jax.tree.leaves(tree)
    if not all(leaf.is_fully_addressable for leaf in leaves):
        tree = _replicate(leaves[0].sharding.mesh)(tree)
    return jax.tree.map(np.asarray, tree)


@functools.cache
def _replicate(mesh):
    return jax.jit(lambda tree: tree, out_shardings=NamedSharding(mesh, P()))


def path_name(path) -> str:
    """``a/b/0``: a leaf's path by its keys, field names and indices, as orbax stores it."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def flat(tree, prefix="") -> dict[str, np.ndarray]:
    return {prefix + path_name(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def digest(tree) -> str:
    """A hash of every value's bytes and its path: equal digests, equal bits."""
    h = hashlib.sha256()
    for name, value in sorted(flat(tree).items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


def make_step(tx):
    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        grad_norm = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads)))
        updates, state = tx.update(grads, state, params)
        return gradxform.apply_updates(params, updates), state, loss, grad_norm

    return jax.jit(step, donate_argnums=(0, 1))


def memory(compiled) -> dict[str, int]:
    """Per device bytes of a compiled (SPMD) program, from XLA's memory analysis."""
    m = compiled.memory_analysis()
    out = {name: int(getattr(m, f"{name}_size_in_bytes")) for name in ("argument", "output", "temp", "alias")}
    out["peak"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out


def compile_step(tx, params, state, x, y):
    """The training step compiled for these arguments' shapes and shardings."""
    return make_step(tx).lower(params, state, x, y).compile()


def train(step, params, state, placed):
    """Compiled steps over the placed batches; returns the final (params, state) and a record."""
    record = {"losses": [], "grad_norms": [], "params": []}
    for x, y in placed:
        params, state, loss, grad_norm = step(params, state, x, y)
        record["losses"].append(float(loss))
        record["grad_norms"].append(float(grad_norm))
        record["params"].append(gather(params))
    return params, state, record


def expected_spec(variant: str, path, leaf) -> P:
    """Where a state leaf must live: its parameter's sharding (``follow``), or its largest
    dimension divisible by 8 split over both axes (``zero``); scalars replicated."""
    if leaf.ndim == 0:
        return P()
    if variant == "zero":
        dims = [i for i, d in enumerate(leaf.shape) if d % 8 == 0]
        if not dims:
            return P()
        dim = max(dims, key=lambda i: (leaf.shape[i], -i))
        return P(*([None] * dim), ZERO_AXES)
    key = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)][-1]
    assert leaf.shape == SHAPES[key], (path, leaf.shape)
    return SPECS[key]


def split(spec: P, mesh: Mesh) -> int:
    """Into how many pieces ``spec`` cuts an array on ``mesh``."""
    axes = [a for entry in spec if entry is not None for a in ((entry,) if isinstance(entry, str) else entry)]
    return int(np.prod([mesh.shape[a] for a in axes]))


def placement_problems(variant, state, mesh) -> list[str]:
    """Every state leaf global (on all devices), sharded as expected, never whole on one device."""
    problems = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        name = jax.tree_util.keystr(path)
        spec = expected_spec(variant, path, leaf)
        if leaf.sharding.device_set != set(mesh.devices.flat):
            problems.append(f"{name}: on {len(leaf.sharding.device_set)} devices")
        elif not leaf.sharding.is_equivalent_to(NamedSharding(mesh, spec), leaf.ndim):
            problems.append(f"{name}: {leaf.sharding.spec}, expected {spec}")
        elif jax.process_count() > 1 and leaf.is_fully_addressable:
            problems.append(f"{name}: held by one process")
        elif split(spec, mesh) > 1 and max(s.data.size for s in leaf.addressable_shards) == leaf.size:
            problems.append(f"{name}: whole on one device")
    return problems


def state_bytes(state) -> int:
    return int(sum(leaf.nbytes for leaf in jax.tree.leaves(state)))


def run_variants(mesh, values, data):
    """Both variants from the same start: results, placement problems, memory analysis."""
    out, finals, steps = {}, {}, {}
    placed = [place_batch(b, mesh) for b in data]
    for variant, tx in make_variants(mesh).items():
        params = place_params(values, mesh)
        init = jax.jit(tx.init).lower(params).compile()
        state = init(params)
        steps[variant] = compile_step(tx, params, state, *placed[0])
        params, state, record = train(steps[variant], params, state, placed)
        finals[variant] = (params, state)
        out[variant] = {
            "losses": record["losses"],
            "grad_norms": record["grad_norms"],
            "skipped": [int(state.total_skipped), int(state.consecutive_skipped)],
            "nan_step_kept_params": digest(record["params"][NAN_STEP]) == digest(record["params"][NAN_STEP - 1]),
            "moved": digest(record["params"][-1]) != digest(values),
            "placement_problems": placement_problems(variant, state, mesh),
            "param_problems": [k for k, v in params.items() if not v.sharding.is_equivalent_to(
                NamedSharding(mesh, SPECS[k]), v.ndim)],
            "state_bytes_total": state_bytes(state),
            "state_leaves": len(jax.tree.leaves(state)),
            "init_memory": memory(init),  # its output: the state held by one device
            "step_memory": memory(steps[variant]),
        }
    return out, finals, steps


def save_results(args, checks, arrays):
    stem = pathlib.Path(args.dir) / f"{args.scenario}-{jax.process_index()}"
    np.savez(str(stem) + ".npz", **arrays)
    stem.with_suffix(".json").write_text(json.dumps(checks))


# -- orbax ------------------------------------------------------------------------------


def abstract(tree):
    """The target orbax restores onto: each leaf's shape, dtype and sharding."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def same_local_bits(a, b) -> bool:
    """Whether two trees of global arrays hold the same bits in this process's shards."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if x.sharding != y.sharding:
            return False
        for sx, sy in zip(x.addressable_shards, y.addressable_shards):
            if sx.index != sy.index or np.asarray(sx.data).tobytes() != np.asarray(sy.data).tobytes():
                return False
    return True


# -- scenarios --------------------------------------------------------------------------


def scenario_pair(args):
    import orbax.checkpoint as ocp

    mesh = make_mesh()
    values, data = initial_values(), batches(STEPS + MORE_STEPS)
    checks, finals, steps = run_variants(mesh, values, data[:STEPS])
    arrays = {}
    for variant, tree in finals.items():
        arrays.update(flat(gather(tree), f"{variant}/"))

    # orbax: both processes save, each its own shards; both restore onto the same mesh.
    path = pathlib.Path(args.dir) / "checkpoint"
    tree = {k: {"params": p, "state": s} for k, (p, s) in finals.items()}
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, tree)
        checkpointer.wait_until_finished()
        restored = checkpointer.restore(path, abstract(tree))
    checks["restore_same_mesh_bits"] = same_local_bits(restored, tree)
    checks["restore_types"] = [type(restored[k]["state"]).__name__ for k in sorted(restored)]

    # Training goes on from the checkpoint (the single process continues from its copy).
    for variant, step in steps.items():
        params, state = restored[variant]["params"], restored[variant]["state"]
        params, state, _ = train(step, params, state, [place_batch(b, mesh) for b in data[STEPS:]])
        arrays.update(flat(gather((params, state)), f"{variant}-more/"))

    try:  # the same failure in both processes (the last collective part): reported, not raised
        checks["torch_compat"] = check_torch_compat(mesh, values, data, arrays, args)
    except Exception:
        checks["torch_compat"] = {"error": traceback.format_exc()}
    checks["process_count"] = jax.process_count()
    checks["devices"] = [jax.device_count(), jax.local_device_count()]
    checks["digest"] = digest(arrays)
    save_results(args, checks, arrays)


def scenario_single(args):
    """The 8 devices in one process: the same run, an unsharded one, and a restore onto 1 x 8."""
    import orbax.checkpoint as ocp

    values, data = initial_values(), batches(STEPS + MORE_STEPS)
    mesh = make_mesh((2, 4))
    checks, finals, steps = run_variants(mesh, values, data[:STEPS])
    arrays = {}
    for variant, tree in finals.items():
        arrays.update(flat(gather(tree), f"{variant}/"))
    # The same training, unsharded, on one device.
    tx, one = make_tx(), jax.devices()[0]
    params = jax.device_put(values, one)
    state, placed = jax.jit(tx.init)(params), jax.device_put(data[:STEPS], one)
    params, state, _ = train(compile_step(tx, params, state, *placed[0]), params, state, placed)
    arrays.update(flat((params, state), "one_device/"))

    # The pair's checkpoint, restored onto a 1 x 8 mesh: parameters split 8 ways over
    # "model", the state as each variant places it there.
    wide = make_mesh((1, 8))
    path = pathlib.Path(args.pair_dir) / "checkpoint"
    targets = {}
    for variant, tx in make_variants(wide).items():
        params = place_params(values, wide)
        targets[variant] = {"params": params, "state": jax.jit(tx.init)(params)}
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(path, abstract(targets))
    checks["restored_problems"] = {
        variant: placement_problems(variant, restored[variant]["state"], wide)
        + [k for k, v in restored[variant]["params"].items()
           if not v.sharding.is_equivalent_to(NamedSharding(wide, SPECS[k]), v.ndim)]
        for variant in restored
    }
    restored_arrays = {}
    for variant, tree in restored.items():
        restored_arrays.update(flat(gather((tree["params"], tree["state"])), f"{variant}/"))
        placed = [place_batch(b, wide) for b in data[STEPS:]]
        step = compile_step(make_variants(wide)[variant], tree["params"], tree["state"], *placed[0])
        params, state, _ = train(step, tree["params"], tree["state"], placed)
        restored_arrays.update(flat(gather((params, state)), f"{variant}-more/"))
    arrays.update({"restored:" + k: v for k, v in restored_arrays.items()})
    save_results(args, checks, arrays)


def scenario_die(args):
    """Checkpoints after steps 1 and 2; process 1 dies while step 3 is being saved."""
    import orbax.checkpoint as ocp

    mesh = make_mesh()
    tx = make_variants(mesh)["zero"]
    params = place_params(initial_values(), mesh)
    state = jax.jit(tx.init)(params)
    step = make_step(tx)
    options = ocp.CheckpointManagerOptions(max_to_keep=5, enable_async_checkpointing=True)
    manager = ocp.CheckpointManager(pathlib.Path(args.dir) / "checkpoints", options=options)
    for i, batch in enumerate(batches(3)):
        params, state, _, _ = step(params, state, *place_batch(batch, mesh))
        tree = {"params": params, "state": state}
        manager.save(i + 1, args=ocp.args.StandardSave(tree))
        if i + 1 == 2:
            manager.wait_until_finished()
            save_results(args, {"saved": 2}, flat(gather(tree)))
        if i + 1 == 3 and jax.process_index() == 1:
            print("process 1: dying while step 3 is being saved", flush=True)
            os._exit(17)
    manager.wait_until_finished()  # process 0 waits here for process 1, which is gone
    print("process 0: step 3 saved without process 1 (must not happen)", flush=True)


def scenario_smoke(args):
    """One ZeRO step on the 2 x 4 mesh: state placement and identical results everywhere."""
    mesh = make_mesh()
    tx = make_variants(mesh)["zero"]
    params = place_params(initial_values(), mesh)
    state = jax.jit(tx.init)(params)
    params, state, loss, _ = make_step(tx)(params, state, *place_batch(batches(1)[0], mesh))
    arrays = flat(gather((params, state)))
    checks = {
        "process_count": jax.process_count(),
        "devices": [jax.device_count(), jax.local_device_count()],
        "placement_problems": placement_problems("zero", state, mesh),
        "loss": float(loss),
        "digest": digest(arrays),
    }
    save_results(args, checks, arrays)


def scenario_join(args):
    print(f"process {args.process_id}: joined (must not happen)", flush=True)


# -- torch_compat -----------------------------------------------------------------------


def check_torch_compat(mesh, values, data, arrays, args):
    """Parameters holding global arrays: step(), state_dict(), load_state_dict(), orbax."""
    import orbax.checkpoint as ocp

    from torch_compat import Parameter, optim

    names = ("w0", "w1", "b1", "w2", "b2")
    grad_fn = jax.jit(jax.grad(loss_fn))
    placed = [place_batch(b, mesh) for b in data]

    def make(params_values):
        params = {k: Parameter(params_values[k]) for k in names}
        opt = optim.AdamW(list(params.values()), lr=LEARNING_RATE, weight_decay=0.1)
        opt.set_skip_non_finite()
        return params, opt

    def train_compat(params, opt, steps):
        for x, y in steps:
            grads = grad_fn({k: p.data for k, p in params.items()}, x, y)
            for k, p in params.items():
                p.grad = grads[k]
            opt.step()

    def problems(params, opt):
        out = []
        for k, p in params.items():
            if p.data.is_fully_addressable or not p.data.sharding.is_equivalent_to(
                    NamedSharding(mesh, SPECS[k]), p.ndim):
                out.append(f"{k}.data: {p.data.sharding}")
            for key, value in opt.state[p].items():
                spec = SPECS[k] if key != "step" else P()
                if value.is_fully_addressable or not value.sharding.is_equivalent_to(
                        NamedSharding(mesh, spec), value.ndim):
                    out.append(f"{k}.{key}: {value.sharding}")
        return out

    def current(params, opt):
        return gather(({k: p.data for k, p in params.items()},
                       {k: opt.state[p] for k, p in params.items()}))

    out = {}
    params, opt = make(place_params(values, mesh))
    train_compat(params, opt, placed[:STEPS])  # the NaN step is skipped
    out["skipped_steps"] = opt.skipped_steps
    out["step_problems"] = problems(params, opt)
    # The same optimizer on one device of this process (the values gathered), for comparison.
    local_params, local_opt = make(jax.device_put(values, jax.local_devices()[0]))
    local_one = jax.local_devices()[0]
    train_compat(local_params, local_opt, [jax.device_put(b, local_one) for b in data[:STEPS]])
    arrays.update(flat(current(params, opt), "compat/"))
    arrays.update(flat(current(local_params, local_opt), "compat-local/"))

    saved = opt.state_dict()
    leaves = [v for s in saved["state"].values() for v in s.values()]
    out["state_dict_global"] = all(isinstance(v, jax.Array) and not v.is_fully_addressable for v in leaves)
    try:
        np.asarray(saved["state"][0]["exp_avg"])  # w0's: split over the processes
        out["np_asarray_refused"] = False
    except RuntimeError as error:
        out["np_asarray_refused"] = "non-addressable" in str(error)
    host = {"state": gather(saved["state"]), "param_groups": saved["param_groups"]}
    out["gathered_equals_live"] = digest(host["state"]) == digest(
        gather({i: opt.state[p] for i, p in enumerate(params.values())}))

    # orbax saves the arrays of a state dict from both processes, each its own shards.
    path = pathlib.Path(args.dir) / "compat-checkpoint"
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, saved["state"])
        checkpointer.wait_until_finished()
        from_orbax = checkpointer.restore(path, abstract(saved["state"]))

    def fresh():
        return make({k: p.data for k, p in params.items()})  # Parameter copies the arrays

    runs = {}
    for source, state in (("global", saved["state"]), ("numpy", host["state"]), ("orbax", from_orbax)):
        twin_params, twin = fresh()
        twin.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
        out[f"load_{source}_problems"] = problems(twin_params, twin)
        runs[source] = (twin_params, twin)
    # Every copy trains on from the same point; the original too.
    for run_params, run_opt in [(params, opt), *runs.values()]:
        train_compat(run_params, run_opt, placed[STEPS:])
    reference = digest(current(params, opt))
    out["continued_same_bits"] = {source: digest(current(*run)) == reference for source, run in runs.items()}
    # The loaded arrays were copies: the state dict is still readable after those steps.
    out["state_dict_still_readable"] = digest(gather(saved["state"])) == digest(host["state"])
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["pair", "single", "die", "smoke", "join"])
    parser.add_argument("--dir", required=True, help="where results (and checkpoints) go")
    parser.add_argument("--pair-dir", help="single: the pair run's directory")
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--port", type=int)
    parser.add_argument("--init-timeout", type=int, default=60, help="seconds to wait for every process to join")
    parser.add_argument("--heartbeat-timeout", type=int, default=60,
                        help="seconds of silence after which a process is declared dead")
    args = parser.parse_args(argv)
    if args.processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        print(f"process {args.process_id} of {args.processes}: joining localhost:{args.port} "
              f"(waiting at most {args.init_timeout} s for the others)", flush=True)
        jax.distributed.initialize(
            coordinator_address=f"localhost:{args.port}",
            num_processes=args.processes,
            process_id=args.process_id,
            initialization_timeout=args.init_timeout,
            heartbeat_timeout_seconds=args.heartbeat_timeout,
            shutdown_timeout_seconds=args.heartbeat_timeout,
        )
    start = time.perf_counter()
    globals()[f"scenario_{args.scenario}"](args)
    print(f"process {jax.process_index()}: {args.scenario} done in {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())

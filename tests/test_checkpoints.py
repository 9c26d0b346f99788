"""Checkpoints: save at step K, load in a fresh process, continue, bit for bit.

The runs live in tests/resume_cases.py and execute in two fresh Python processes started
the same way (same interpreter, environment and x64 setting): ``run`` trains K + M
steps uninterrupted and saves a checkpoint after K; ``resume`` loads that checkpoint in
each format (pickle; ``gradxform.checkpoint.load``, without and, for the functional
states, with a target; orbax for the functional states, when orbax-checkpoint is
installed) and trains M steps. The second
process reuses the first one's compiled XLA executables through JAX's persistent
compilation cache, only to save time: its Python objects, arrays and jit caches are new.
Both compile with XLA's backend optimizations off, also for time.

Every comparison is bit for bit: same container types (NamedTuple classes included),
same dtypes and shapes, same bytes; Python floats compared by their bits.

The fresh-process runs take minutes: the tests that use them are marked ``slow`` (run
them with ``pytest -m slow``). The tests of the format itself, its safety and its
atomic writes are fast.
"""

from __future__ import annotations

import collections
import copy
import importlib.util
import io
import json
import os
import pathlib
import pickle
import struct
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import gradxform
import resume_cases as rc
from gradxform import checkpoint, registry
from torch_compat import optim
from torch_compat.optim import lr_scheduler

ROOT = pathlib.Path(__file__).resolve().parent.parent
HAS_ORBAX = importlib.util.find_spec("orbax") is not None and importlib.util.find_spec("orbax.checkpoint") is not None
FORMATS = ("pickle", "npz", "npz_target") + (("orbax",) if HAS_ORBAX else ())
FUNCTIONAL_ONLY = ("npz_target", "orbax")  # formats that restore the functional states only

ALIASES = registry.ALIASES


# ---------------------------------------------------------------------------------------
# Bit-for-bit comparison
# ---------------------------------------------------------------------------------------


def differences(a, b, path="") -> list[str]:
    """Every place where ``a`` and ``b`` differ in type, structure, dtype or bits."""
    if type(a) is not type(b):
        return [f"{path}: {type(a).__name__} vs {type(b).__name__}"]
    if isinstance(a, (np.ndarray, np.generic)):
        if a.dtype != b.dtype or a.shape != b.shape:
            return [f"{path}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"]
        return [] if a.tobytes() == b.tobytes() else [f"{path}: values differ"]
    if isinstance(a, dict):
        if [(type(k), k) for k in a] != [(type(k), k) for k in b]:
            return [f"{path}: keys {list(a)} vs {list(b)}"]
        return [d for k in a for d in differences(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}/{i}")]
    if isinstance(a, (float, complex)):
        bits = [struct.pack("<dd", x.real, x.imag) for x in (complex(a), complex(b))]
        return [] if bits[0] == bits[1] else [f"{path}: {a!r} vs {b!r}"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def test_differences_sees_one_ulp_a_dtype_a_type_and_a_signed_zero():
    """The comparison the other tests rely on can fail, on each kind of difference."""
    x = np.linspace(0.0, 1.0, 5)
    assert differences({"a": (x, 1.5)}, {"a": (x.copy(), 1.5)}) == []
    ulp = x.copy()
    ulp[2] = np.nextafter(ulp[2], 2.0)
    assert differences(x, ulp) == [": values differ"]
    assert differences(x, x.astype(np.float32))
    assert differences(gradxform.EmptyState(), ())  # a NamedTuple is not a tuple
    assert differences(0.0, -0.0) and differences(np.zeros(1), -np.zeros(1))
    assert differences([1], (1,)) and differences({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert differences({1: 0}, {True: 0}) and differences(np.float32(1), np.float64(1))
    assert differences(complex(0.0, 1.0), complex(-0.0, 1.0)) and differences(1, 1.0)


# ---------------------------------------------------------------------------------------
# The two fresh processes
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("resume")
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        # Cheaper compilation (the runs are compile-bound); both processes use the same.
        "XLA_FLAGS": " ".join([os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0",
                               "--xla_llvm_disable_expensive_passes=true"]).strip(),
    }
    script = str(ROOT / "tests" / "resume_cases.py")
    for mode in ("run", "resume"):
        # The two parts run side by side (two cores), each in its own folder and cache.
        procs = {}
        for part in ("functional", "torch"):
            (folder / part).mkdir(exist_ok=True)
            with open(folder / part / f"{mode}.log", "w") as log:
                procs[part] = subprocess.Popen(
                    [sys.executable, script, mode, part, str(folder / part)],
                    env={**env, "JAX_COMPILATION_CACHE_DIR": str(folder / part / "xla-cache")},
                    stdout=log, stderr=subprocess.STDOUT)
        for part, proc in procs.items():
            proc.wait(timeout=600)
            assert proc.returncode == 0, f"{mode} {part}:\n{(folder / part / f'{mode}.log').read_text()[-4000:]}"
    return folder


def _load(path: pathlib.Path):
    """A pickle written by tests/resume_cases.py; under ``runs``, the two parts merged."""
    if not path.exists():
        parts = [_load(path.parent / part / path.name) for part in ("functional", "torch")
                 if (path.parent / part / path.name).exists()]
        return {key: {k: v for part in parts for k, v in part.get(key, {}).items()}
                for key in ("functional", "torch")}
    with open(path, "rb") as f:
        return pickle.load(f)


def test_every_optimizer_and_scheduler_is_resumed():
    functional, torch = rc.functional_cases(), rc.torch_cases()
    for alias in ALIASES:
        assert any(name == alias or name.startswith(alias + "_") for name in functional), alias
    assert {"flatten_adam", "plateau", "adam_schedule"} <= set(functional)
    classes = {
        name for name in optim.__all__
        if isinstance(getattr(optim, name), type) and issubclass(getattr(optim, name), optim.Optimizer)
    } - {"GradxformOptimizer", "Optimizer"}
    assert len(classes) == 15
    for cls in classes:
        assert any(name == cls or name.startswith(cls + "_") for name in torch), cls
    schedulers = set(lr_scheduler.__all__) - {"LRScheduler", "sample_lrs"}
    assert len(schedulers) == 15 and schedulers <= {name.removeprefix("sched/") for name in torch}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_resumed_run_is_bit_for_bit_the_uninterrupted_run(runs, fmt):
    """Parameters, optimizer states (functional states; torch_compat state_dict() with
    param_groups), scheduler state_dicts and every scheduler attribute after K + M
    steps: identical, every case (but the pickled optimizer objects, which only pickle
    keeps)."""
    reference, resumed = _load(runs / "run.pkl"), _load(runs / f"resume-{fmt}.pkl")
    parts = ("functional",) if fmt in FUNCTIONAL_ONLY else ("functional", "torch")
    for part in parts:
        names = [n for n in reference[part] if fmt == "pickle" or not n.endswith("_object")]
        assert list(resumed[part]) == names
        for name in names:
            found = differences(reference[part][name], resumed[part][name], f"{part}/{name}")
            assert not found, found[:10]
    # The run moved: the final state is not the initial one (the test compares something).
    params, state = reference["functional"]["adam"]
    assert differences(params, rc.to_numpy(jax.tree.map(jnp.asarray, rc.initial_values("mixed"))))
    assert int(state.count) == rc.K + rc.M
    assert reference["torch"]["sched/StepLR"]["scheduler"]["last_epoch"] == rc.K + rc.M


# ---------------------------------------------------------------------------------------
# The checkpoint formats themselves (states after K steps, saved by the first process)
# ---------------------------------------------------------------------------------------


def _read(runs: pathlib.Path, fmt: str):
    if fmt == "pickle":
        return _load(runs / "checkpoint.pkl")
    merged = {}
    for part in ("functional", "torch"):
        merged[part] = checkpoint.load(runs / part / "checkpoint.npz")[part]
    return merged


def _array_leaves_are_jax(tree) -> bool:
    leaves = jax.tree.leaves(tree)
    return bool(leaves) and all(isinstance(x, jax.Array) and not x.weak_type for x in leaves)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_functional_states_round_trip_with_types_dtypes_and_bits(runs, fmt):
    """Every functional state (all aliases with every optional buffer, lbfgs, flatten,
    reduce_on_plateau, a schedule): the NamedTuple types, JAX arrays (never weakly
    typed, so a format that drops weak types loses nothing), dtypes (bfloat16 too) and
    values that the pickle written by the first process holds."""
    reference = _load(runs / "checkpoint.pkl")["functional"]
    cases = rc.functional_cases()
    target = {name: jax.eval_shape(lambda p, tx=cases[name][0]: (p, tx.init(p)), params)
              for name, (params, _) in reference.items()}
    if fmt == "npz_target":
        loaded = checkpoint.load(runs / "functional" / "checkpoint.npz",
                                 target={"functional": target, "torch": {}})["functional"]
    elif fmt == "orbax":
        import orbax.checkpoint as ocp

        with ocp.StandardCheckpointer() as checkpointer:
            restored = checkpointer.restore(runs / "functional" / "orbax", checkpoint.to_orbax(target))
        loaded = checkpoint.from_orbax(restored, target)
    else:
        loaded = _read(runs, fmt)["functional"]
    # orbax gives dicts back with sorted keys, as jax.tree.unflatten builds them.
    assert (sorted(loaded) if fmt == "orbax" else list(loaded)) == (sorted(reference) if fmt == "orbax" else list(reference))
    for name, tree in reference.items():
        assert jax.tree.structure(loaded[name]) == jax.tree.structure(tree), name
        assert _array_leaves_are_jax(loaded[name]) and _array_leaves_are_jax(tree), name
        found = differences(rc.to_numpy(tree), rc.to_numpy(loaded[name]), name)
        assert not found, found[:10]
    state = loaded["adam"][1]
    assert type(state) is gradxform.InjectHyperparamsState
    adam = [s for s in state.inner_state if type(s) is gradxform.ScaleByAdamState]
    assert len(adam) == 1 and adam[0].exp_avg["c"]["h"].dtype == jnp.bfloat16
    assert adam[0].max_exp_avg_sq is not None  # amsgrad's buffer
    assert type(loaded["flatten_adam"][1]) is gradxform.FlattenState
    assert loaded["flatten_adam"][1].layout[0].shape[0] == 0
    assert type(loaded["plateau"][1][1]) is gradxform.ReduceOnPlateauState
    assert type(loaded["lbfgs_float32"][1]) is gradxform.ScaleByLbfgsState
    assert loaded["lbfgs_float32"][1].lbfgs.d.dtype == jnp.float32


def _fresh(name: str, values: list):
    build, kind = rc.torch_cases()[name]
    ps = rc.parameters(rc.initial_values(kind))
    for p, v in zip(ps, values):
        p.data = jnp.asarray(v)
    opt, scheduler = build(ps)
    return opt, scheduler


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["pickle", "npz"])
def test_torch_compat_state_dicts_round_trip(runs, fmt):
    """Every optimizer's and scheduler's state_dict(), read back from pickle and from
    gradxform.checkpoint's file, has the types (a Python int step for SparseAdam, floats, None, tuples),
    dtypes and bits it was saved with; loaded into a fresh optimizer and scheduler (built
    with the scheduler first, as torch asks), their state_dict() gives it back exactly."""
    reference = _load(runs / "checkpoint.pkl")["torch"]
    loaded = _read(runs, fmt)["torch"]
    for name, entry in reference.items():
        if "object" in entry:
            continue
        found = differences(rc.to_numpy(entry), rc.to_numpy(loaded[name]), name)
        assert not found, found[:10]
        saved = loaded[name]
        for key, value in saved["optimizer"]["state"].get(0, {}).items():
            if isinstance(entry["optimizer"]["state"][0][key], jax.Array):
                assert isinstance(value, jax.Array), (name, key)
        opt, scheduler = _fresh(name, saved["params"])
        opt.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        again = {"optimizer": opt.state_dict(), "scheduler": None if scheduler is None else scheduler.state_dict(),
                 "params": saved["params"]}
        found = differences(rc.to_numpy(entry), rc.to_numpy(again), name)
        assert not found, found[:10]
    assert type(loaded["SparseAdam"]["optimizer"]["state"][0]["step"]) is int
    assert loaded["Adafactor"]["optimizer"]["param_groups"][0]["eps"] == (1e-30, 1e-3)
    assert loaded["sched/LambdaLR"]["scheduler"]["lr_lambdas"][0] is None  # a function
    assert loaded["sched/LambdaLR"]["scheduler"]["lr_lambdas"][1] == {"rate": 0.9, "calls": rc.K + 1}


@pytest.mark.slow
def test_float32_scalar_state_follows_torchs_load_policy(runs):
    """ASGD's ``eta``/``mu`` and NAdam's ``mu_product`` are float32 scalars; torch's
    load_state_dict casts them to a floating parameter's dtype, and so does ours. That is
    why their state_dict resumes bit for bit for float32 parameters only; pickling the
    optimizer object (ASGD_object, NAdam_object above) resumes them exactly for any dtype."""
    saved = _load(runs / "checkpoint.pkl")["torch"]
    for name, keys in (("ASGD_object", ("eta", "mu")), ("NAdam_object", ("mu_product",))):
        opt = saved[name]["object"]
        ps = [p for group in opt.param_groups for p in group["params"]]
        state_dict = opt.state_dict()
        fresh, _ = _fresh(name, [np.asarray(p.data) for p in ps])
        fresh.load_state_dict(copy.deepcopy(state_dict))
        fresh_ps = [p for group in fresh.param_groups for p in group["params"]]
        assert {p.dtype for p in fresh_ps} == {jnp.dtype(d) for d in ("float32", "float64", "bfloat16")}
        for i, p in enumerate(fresh_ps):
            for key in keys:
                assert state_dict["state"][i][key].dtype == jnp.float32
                assert fresh.state[p][key].dtype == p.dtype, (name, i, key)
    torch = pytest.importorskip("torch")
    w = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    topt = torch.optim.NAdam([w])
    w.grad = torch.ones(3, dtype=torch.float64)
    topt.step()
    assert topt.state[w]["mu_product"].dtype == torch.float32
    topt.load_state_dict(topt.state_dict())
    assert topt.state[w]["mu_product"].dtype == torch.float64


# ---------------------------------------------------------------------------------------
# gradxform.checkpoint's format
# ---------------------------------------------------------------------------------------


def _savez_round_trip(tree, target=None):
    """Through the in-memory halves and numpy.savez."""
    buffer = io.BytesIO()
    np.savez(buffer, **checkpoint.to_numpy_dict(tree))
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as data:
        return checkpoint.from_numpy_dict(dict(data), target=target)


@pytest.fixture
def registry(monkeypatch):
    """An empty registry of NamedTuple types for the test (it may register its own)."""
    monkeypatch.setattr(checkpoint, "_REGISTERED", {})


def test_npz_keeps_scalar_bfloat16_float8_big_endian_and_complex():
    tree = {
        "scalar_bf16": jnp.asarray(1.5, jnp.bfloat16),
        "bf16": jnp.arange(6, dtype=jnp.bfloat16).reshape(2, 3),
        "f8": np.asarray([0.5, -2.0], ml_dtypes.float8_e4m3fn),
        # numpy calls these "f" and "c", but .npy cannot describe them either
        "f8_e5m2": np.asarray([0.5, -2.0], ml_dtypes.float8_e5m2),
        "int4": np.asarray([-3, 7], ml_dtypes.int4),
        "big_endian": np.arange(3, dtype=">f4"),
        "complex": jnp.asarray([1 + 2j, -3j], jnp.complex64),
        "int": jnp.asarray(7, jnp.int32),
        "bool": np.asarray([True, False]),
    }
    back = _savez_round_trip(tree)
    for key, value in tree.items():
        assert type(back[key]) is type(value), key
        assert back[key].dtype == value.dtype and back[key].shape == value.shape, key
        assert np.asarray(back[key]).tobytes() == np.asarray(value).tobytes(), key


def test_npz_names_never_collide():
    """A key holding "/" (or named like the skeleton entry) does not overwrite another leaf."""
    tree = {"a/b": jnp.ones(2), "a": {"b": jnp.zeros(2)}, "__skeleton__": jnp.full(2, 3.0)}
    flat = checkpoint.to_numpy_dict(tree)
    assert len(flat) == 4
    back = _savez_round_trip(tree)
    for key in ("a/b", "__skeleton__"):
        np.testing.assert_array_equal(back[key], tree[key])
    np.testing.assert_array_equal(back["a"]["b"], np.zeros(2))


Point = collections.namedtuple("Point", "x y")


def test_npz_keeps_container_types_and_python_values(registry):
    checkpoint.register_state_type(Point)
    tree = {
        "ordered": collections.OrderedDict(b=jnp.ones(1), a=2),
        "default": collections.defaultdict(list, {"k": np.zeros(2)}),
        "point": Point(jnp.zeros(1), None),
        "list": [1.5, "text", None, (jnp.ones(()),)],
    }
    back = _savez_round_trip(tree)
    assert type(back["ordered"]) is collections.OrderedDict and list(back["ordered"]) == ["b", "a"]
    assert type(back["default"]) is collections.defaultdict and back["default"].default_factory is list
    assert type(back["point"]) is Point and back["point"].y is None
    assert back["list"][:3] == [1.5, "text", None] and type(back["list"][3]) is tuple
    assert isinstance(back["list"][3][0], jax.Array) and isinstance(back["default"]["k"], np.ndarray)


def _nan(payload: str) -> float:
    return struct.unpack(">d", bytes.fromhex(payload))[0]


def test_save_and_load_keep_every_kind_of_value(tmp_path, registry):
    """Dict key types (a torch_compat state_dict's int keys), every container, Python
    scalars bit for bit (NaN payloads, infinities, -0.0), numpy scalars, arrays of
    every kind; also entries named like numpy.savez's own arguments."""
    checkpoint.register_state_type(Point)
    tree = {
        "state": {0: {"step": jnp.asarray(3.0), "exp_avg": jnp.ones(2)}, 1: {"step": 7}},
        "keys": {True: "bool", 2.5: "float", None: "none", -1j: "complex", "s": "str"},
        "ordered": collections.OrderedDict(b=np.ones(1), a=2),
        "default": collections.defaultdict(list, {"k": np.zeros(2)}),
        "default_none": collections.defaultdict(None, {1: 1}),
        "counter": collections.Counter({5: 1, 2: 3}),  # torch's MultiStepLR milestones
        "point": Point(jnp.zeros(1), (None,)),
        "empty": [[], (), {}, Point((), [])],
        "scalars": [None, True, False, 0, -(2**100), 1.5, -0.0, float("inf"), -float("inf"),
                    _nan("7ff8000000000123"), _nan("fff0000000000001"), complex(-0.0, float("nan")),
                    "ünïcode \x00 \ud800", ""],
        "numpy_scalars": [np.float32(1.5), np.int64(-3), np.bool_(True), ml_dtypes.bfloat16(2.5),
                          np.float64(_nan("7ff8000000000abc"))],
        "arrays": {"jax_bf16": jnp.arange(3, dtype=jnp.bfloat16), "jax_f64": jnp.asarray([-0.0, 1e300]),
                   "text": np.asarray(["ab", "c"]), "bytes": np.asarray([b"x", b"yz"]),
                   "zero_size": np.zeros((0, 3)), "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
                   "datetime": np.asarray(["2024-01-01"], "datetime64[D]")},
        "file": 1, "allow_pickle": np.ones(1),  # names numpy.savez would take as its own arguments
    }
    path = tmp_path / "tree.npz"
    checkpoint.save(path, tree)
    back = checkpoint.load(path)
    found = _iterative_differences(tree, back)
    assert not found, found
    assert _array_leaves_are_jax(back["state"][0]) and type(back["state"][1]["step"]) is int
    assert type(back["point"]) is Point and back["default"].default_factory is list
    assert back["default_none"].default_factory is None and type(back["ordered"]) is collections.OrderedDict
    assert type(back["counter"]) is collections.Counter and back["counter"] == {5: 1, 2: 3}
    assert isinstance(back["arrays"]["jax_bf16"], jax.Array) and isinstance(back["arrays"]["text"], np.ndarray)
    # The in-memory halves give the same.
    assert not _iterative_differences(tree, checkpoint.from_numpy_dict(checkpoint.to_numpy_dict(tree)))


def test_the_file_is_a_plain_npz_of_arrays_and_json(tmp_path):
    """Any numpy reads it without pickle: one .npy member per array, and the skeleton is
    UTF-8 JSON. ``save`` writes exactly the path it is given."""
    path = tmp_path / "state"  # no suffix added
    checkpoint.save(path, {"w": jnp.ones(2, jnp.bfloat16), "n": [1, 2.5]})
    assert sorted(os.listdir(tmp_path)) == ["state"]
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == ["__skeleton__", "w"]
        assert data["w"].dtype == np.uint16
        document = json.loads(data["__skeleton__"].tobytes().decode("utf-8"))
    assert document["format"] == "gradxform.checkpoint" and document["version"] == 1
    assert document["nodes"][0] == {"type": "dict", "keys": [{"type": "str", "value": "w"}, {"type": "str", "value": "n"}],
                                    "children": [1, 2]}
    assert document["nodes"][1] == {"type": "array", "entry": "w", "dtype": "bfloat16", "shape": [2], "kind": "jax"}
    assert document["nodes"][4] == {"type": "float", "bits": "4004000000000000"}  # 2.5
    # from_numpy_dict reads numpy's lazy archive as it is.
    with np.load(path, allow_pickle=False) as data:
        assert checkpoint.from_numpy_dict(data)["n"] == [1, 2.5]
    np.save(tmp_path / "one.npy", np.ones(2))
    with pytest.raises(ValueError, match="single .npy array, not a checkpoint"):
        checkpoint.load(tmp_path / "one.npy")


def test_npz_refuses_a_dtype_this_jax_cannot_make():
    """A float64 JAX array saved with x64 on, loaded with x64 off, is refused, not
    silently rounded to float32."""
    flat = checkpoint.to_numpy_dict({"w": jnp.ones(2, jnp.float64)})
    with jax.enable_x64(False):
        with pytest.raises(ValueError, match="'w' at path 'w' was saved as a float64 JAX array, which JAX makes float32 here"):
            checkpoint.from_numpy_dict(flat)
    assert checkpoint.from_numpy_dict(flat)["w"].dtype == jnp.float64


def _iterative_differences(a, b) -> list[str]:
    """``differences`` without recursion (for trees deeper than the recursion limit) and
    for JAX arrays too (compared as numpy arrays once their types are the same)."""
    stack, found = [(a, b, "")], []
    while stack:
        x, y, path = stack.pop()
        if type(x) is not type(y):
            found.append(f"{path}: {type(x).__name__} vs {type(y).__name__}")
        elif isinstance(x, jax.Array):
            found.extend(differences(np.asarray(x), np.asarray(y), path))
        elif isinstance(x, dict):
            if [(type(k), k) for k in x] != [(type(k), k) for k in y]:
                found.append(f"{path}: keys {list(x)} vs {list(y)}")
            else:
                stack.extend((x[k], y[k], f"{path}/{k}") for k in x)
        elif isinstance(x, (list, tuple)):
            if len(x) != len(y):
                found.append(f"{path}: length")
            else:
                stack.extend((u, v, f"{path}/{i}") for i, (u, v) in enumerate(zip(x, y)))
        else:
            found.extend(differences(x, y, path))
    return found


def test_trees_deeper_than_the_recursion_limit(tmp_path):
    """Writing and reading are iterative: a tree nested 5000 levels deep (alternately
    lists and dicts, far deeper than Python's recursion limit) round trips, with and
    without a target."""
    depth = max(5000, 2 * sys.getrecursionlimit())
    tree = (jnp.arange(3.0), np.float32(2.0))
    for level in range(depth):
        tree = [tree, level] if level % 2 else {"k": tree, "level": float(level)}
    path = tmp_path / "deep.npz"
    checkpoint.save(path, tree)
    names = list(checkpoint.to_numpy_dict(tree))
    assert len(names) == 3 and max(len(name) for name in names) == 1003  # "..." and the path's end
    for back in (checkpoint.load(path), checkpoint.load(path, target=tree)):
        found = _iterative_differences(tree, back)
        assert not found, found[:5]
        leaf = back
        for level in reversed(range(depth)):
            leaf = leaf[0] if level % 2 else leaf["k"]
        assert isinstance(leaf[0], jax.Array) and np.array_equal(leaf[0], np.arange(3.0))


# ---------------------------------------------------------------------------------------
# Safety: loading runs no code, and checks everything
# ---------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this runs a shell command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_pickled_skeleton_is_refused_and_never_run(tmp_path):
    """A crafted file in the format of older versions (a pickled skeleton) whose pickle
    runs a shell command: load and from_numpy_dict refuse it with a clear message, and
    nothing runs. (Unpickling it, as older versions did, does run the command.)"""
    marker = tmp_path / "ran"
    payload = pickle.dumps({"w": _Payload(f"touch {marker}"), "step": 3})
    path = tmp_path / "evil.npz"
    np.savez(path, __skeleton__=np.frombuffer(payload, np.uint8), w=np.ones(3))
    with pytest.raises(ValueError, match="looks like a pickle.*never loaded.*can run any code"):
        checkpoint.load(path)
    with pytest.raises(ValueError, match="looks like a pickle"):
        checkpoint.from_numpy_dict(dict(np.load(path)))
    assert not marker.exists()
    pickle.loads(payload)  # the payload is live: what an unpickling loader would have done
    assert marker.exists()


def test_a_pickled_entry_is_refused_and_never_run(tmp_path):
    """An array entry that is a pickled object array (what numpy.savez writes for one) is
    refused when reading (numpy.load with allow_pickle=False)."""
    marker = tmp_path / "ran"
    flat = checkpoint.to_numpy_dict({"w": np.ones(1)})
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(f"touch {marker}")
    path = tmp_path / "evil.npz"
    np.savez(path, __skeleton__=flat["__skeleton__"], w=payload)
    with pytest.raises(ValueError, match="checkpoint entry 'w'.*allow_pickle"):
        checkpoint.load(path)
    with pytest.raises(ValueError, match="allow_pickle"):
        checkpoint.from_numpy_dict(np.load(path))
    assert not marker.exists()


def test_a_file_naming_a_module_never_imports_it(tmp_path, monkeypatch, registry):
    """A NamedTuple class named by the file, from a module not imported, is refused with
    a message naming the path, the type, register_state_type and target=; the module is
    not imported (importing it would leave a marker file)."""
    marker = tmp_path / "imported"
    (tmp_path / "ckpt_trap.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nimport typing\n\n\nclass State(typing.NamedTuple):\n    x: object\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    State = collections.namedtuple("State", "x")
    State.__module__ = "ckpt_trap"  # the file names ckpt_trap.State
    path = tmp_path / "state.npz"
    checkpoint.save(path, {"opt": [State(np.ones(2))]})
    with pytest.raises(ValueError) as error:
        checkpoint.load(path)
    message = str(error.value)
    for part in ("'ckpt_trap.State'", "path 'opt/0'", "register_state_type(cls)", "target="):
        assert part in message, message
    assert "ckpt_trap" not in sys.modules and not marker.exists()
    back = checkpoint.load(path, target={"opt": [State(jax.ShapeDtypeStruct((2,), jnp.float64))]})
    assert type(back["opt"][0]) is State  # with a target, its class
    monkeypatch.setitem(sys.modules, "ckpt_trap", None)  # removed again after the test
    del sys.modules["ckpt_trap"]
    importlib.import_module("ckpt_trap")  # the trap is live: importing it leaves the marker
    assert marker.exists()


def test_unknown_named_tuples_need_registering_or_a_target(tmp_path, registry):
    Local = collections.namedtuple("Local", "a b")
    state = {"inner": (Local(jnp.ones(2), 3), gradxform.EmptyState())}
    path = tmp_path / "state.npz"
    checkpoint.save(path, state)
    with pytest.raises(ValueError, match=r"'test_checkpoints\.Local' at path 'inner/0'.*register_state_type"):
        checkpoint.load(path)
    assert type(checkpoint.load(path, target=state)["inner"][0]) is Local
    assert checkpoint.register_state_type(Local) is Local
    back = checkpoint.load(path)
    assert type(back["inner"][0]) is Local and type(back["inner"][1]) is gradxform.EmptyState
    # A class of that name whose fields changed since the save is refused.
    checkpoint.register_state_type(collections.namedtuple("Local", "a c"))
    with pytest.raises(ValueError, match=r"at path 'inner/0' with the fields \('a', 'b'\), but that class has the fields \('a', 'c'\)"):
        checkpoint.load(path)
    with pytest.raises(TypeError, match="takes a NamedTuple class"):
        checkpoint.register_state_type(tuple)


def test_every_gradxform_state_round_trips_without_registering(tmp_path, registry):
    """The state of every functional case of the resume runs (all aliases, lbfgs,
    flatten, reduce_on_plateau, a schedule), and every NamedTuple class gradxform
    exports, come back with their classes, with and without a target (the state itself
    here; the slow resume test loads them with ``jax.eval_shape`` targets)."""
    for name, (tx, kind) in rc.functional_cases().items():
        params = jax.tree.map(jnp.asarray, rc.initial_values(kind))
        state = tx.init(params)
        checkpoint.save(tmp_path / "state.npz", state)
        for back in (checkpoint.load(tmp_path / "state.npz"), checkpoint.load(tmp_path / "state.npz", target=state)):
            assert jax.tree.structure(back) == jax.tree.structure(state), name
            found = differences(rc.to_numpy(state), rc.to_numpy(back), name)
            assert not found, found[:5]
    exported = [getattr(gradxform, n) for n in gradxform.__all__]
    classes = [c for c in exported if isinstance(c, type) and issubclass(c, tuple) and hasattr(c, "_fields")]
    assert {gradxform.ScaleByAdamState, gradxform.InjectHyperparamsState, gradxform.EmptyState,
            gradxform.FlattenState, gradxform.LbfgsState, gradxform.SkipNonFiniteState,
            gradxform.ReduceOnPlateauState} <= set(classes)
    tree = [cls(*[np.full(1, i, np.int32) for i in range(len(cls._fields))]) for cls in classes]
    checkpoint.save(tmp_path / "classes.npz", tree)
    assert [type(x) for x in checkpoint.load(tmp_path / "classes.npz")] == classes


def test_optax_states_load_when_optax_is_imported(tmp_path):
    """A gradxform optimizer inside optax.chain: optax's state classes are allowed once
    optax is imported (it is, in this process)."""
    optax = pytest.importorskip("optax")
    tx = optax.chain(optax.clip_by_global_norm(1.0), gradxform.adam(1e-3))
    params = {"w": jnp.ones(3)}
    state = tx.update({"w": jnp.full(3, 0.5)}, tx.init(params), params)[1]
    checkpoint.save(tmp_path / "state.npz", state)
    for back in (checkpoint.load(tmp_path / "state.npz"),
                 checkpoint.load(tmp_path / "state.npz", target=jax.eval_shape(tx.init, params))):
        assert type(back[0]) is optax.EmptyState and type(back[1]) is gradxform.InjectHyperparamsState
        assert not differences(rc.to_numpy(state), rc.to_numpy(back))


_OPTAX_CHILD = """
import sys


class NoOptax:  # as if optax were not installed (gradxform imports it at import when it is)
    def find_spec(self, name, path=None, target=None):
        if name == "optax" or name.startswith("optax."):
            raise ImportError("optax is blocked in this process")


blocker = NoOptax()
sys.meta_path.insert(0, blocker)
from gradxform import checkpoint
try:
    checkpoint.load(sys.argv[1])
except ValueError as error:
    print("refused:", error)
print("optax imported by load:", "optax" in sys.modules)
sys.meta_path.remove(blocker)
import optax
print("loaded:", type(checkpoint.load(sys.argv[1])[0]).__name__)
"""


def test_optax_states_in_a_process_without_optax(tmp_path):
    """In a fresh process without optax (gradxform imports optax at import when it is
    installed, so the child blocks it), load refuses optax's classes and says to import
    optax; it does not import it. Once optax is imported, the file loads."""
    optax = pytest.importorskip("optax")
    tx = optax.chain(optax.clip_by_global_norm(1.0), gradxform.sgd(0.1))
    checkpoint.save(tmp_path / "state.npz", tx.init({"w": jnp.ones(3)}))
    proc = subprocess.run([sys.executable, "-c", _OPTAX_CHILD, str(tmp_path / "state.npz")], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu", "JAX_ENABLE_X64": "1",
                                                       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused: checkpoint holds a NamedTuple of type 'optax._src.base.EmptyState' at path '0'" in proc.stdout
    assert "import optax before loading" in proc.stdout
    assert "optax imported by load: False" in proc.stdout and "loaded: EmptyState" in proc.stdout


def test_every_entry_is_checked_against_the_skeleton(tmp_path):
    """An entry replaced by one of another dtype or shape (a float64 (3,) entry by float32
    (6,) data), a missing entry and an extra one are refused, naming the path."""
    tree = {"a": {"b": np.zeros(3, np.float64)}, "c": jnp.ones(2), "bf": jnp.ones(2, jnp.bfloat16)}
    flat = checkpoint.to_numpy_dict(tree)
    cases = {
        r"entry 'a/b' at path 'a/b' is a float32 array of shape \(6,\), but the skeleton records float64 of shape \(3,\)":
            {**flat, "a/b": np.zeros(6, np.float32)},
        r"entry 'a/b' at path 'a/b' is a float64 array of shape \(4,\)": {**flat, "a/b": np.zeros(4)},
        r"entry 'a/b' at path 'a/b' is a >f8 array": {**flat, "a/b": np.zeros(3, ">f8")},
        r"entry 'bf' at path 'bf' is a int16 array of shape \(2,\), but the skeleton records uint16": {**flat, "bf": np.zeros(2, np.int16)},
        r"no entry 'c' for the array at path 'c'": {k: v for k, v in flat.items() if k != "c"},
        r"entries \['d'\] are not in its skeleton": {**flat, "d": np.ones(1)},
    }
    for i, (message, entries) in enumerate(cases.items()):
        with pytest.raises(ValueError, match=message):
            checkpoint.from_numpy_dict(entries)
        np.savez(tmp_path / f"{i}.npz", **entries)
        with pytest.raises(ValueError, match=message):
            checkpoint.load(tmp_path / f"{i}.npz")
    assert not differences(rc.to_numpy(tree), rc.to_numpy(checkpoint.from_numpy_dict(flat)))


def _flat_with(document, **entries) -> dict:
    text = document if isinstance(document, str) else json.dumps(document)
    return {"__skeleton__": np.frombuffer(text.encode(), np.uint8), **entries}


def test_malformed_skeletons_are_refused():
    """Crafted skeletons (cycles, shared nodes, orphans, object dtypes, deep JSON, a
    newer version) give a ValueError, never a crash, a hang or a RecursionError."""
    def doc(*nodes, version=1):
        return {"format": "gradxform.checkpoint", "version": version, "nodes": list(nodes)}

    array = {"type": "array", "entry": "w", "dtype": "float32", "shape": [2], "kind": "numpy"}
    w = np.zeros(2, np.float32)
    cases = [
        (doc({"type": "list", "children": [0]}), {}, "children must be indices of later nodes"),
        (doc({"type": "list", "children": [1, 1]}, {"type": "none"}), {}, "node 1 has two parents"),
        (doc({"type": "list", "children": []}, {"type": "none"}), {}, "node 1 is in no container"),
        (doc({**array, "dtype": "O"}), {"w": w}, "dtype 'O' is not one that checkpoints hold"),
        (doc({**array, "dtype": "V8"}), {"w": w}, "dtype 'V8'"),
        (doc({**array, "dtype": "[('a', 'O')]"}), {"w": w}, "dtype"),
        (doc({**array, "kind": "pickle"}), {"w": w}, "array kind 'pickle'"),
        (doc({**array, "shape": [-1]}), {"w": w}, r"shape \[-1\]"),
        (doc({"type": "list", "children": [1, 2]}, array, array), {"w": w}, "entry 'w'"),
        (doc({"type": "int", "value": 1.5}), {}, "a int node holds 1.5"),
        (doc({"type": "float", "bits": "nan"}), {}, "float bits"),
        (doc({"type": "dict", "keys": [{"type": "int", "value": 1}, {"type": "bool", "value": True}],
              "children": [1, 2]}, {"type": "none"}, {"type": "none"}), {}, "repeated dict key"),
        (doc({"type": "dict", "keys": [{"type": "list", "children": []}], "children": [1]}, {"type": "none"}), {},
         "'list' is not a scalar type"),
        (doc({"type": "defaultdict", "keys": [], "children": [], "default_factory": "os.system"}), {}, "default_factory"),
        (doc({"type": "defaultdict", "keys": [], "children": [], "default_factory": ["list"]}), {}, "default_factory"),
        (doc({**array, "dtype": ["float32"]}), {"w": w}, "dtype"),
        (doc({**array, "entry": ["w"]}), {"w": w}, "entry"),
        (doc({"type": ["list"], "children": []}), {}, "unknown type"),
        (doc({"type": "dict", "keys": [["s"]], "children": [1]}, {"type": "none"}), {}, "key is not an object"),
        (doc({"type": "namedtuple", "class": "x.Y", "fields": ["a"], "children": []}), {}, "one field name per child"),
        (doc({"type": "code", "source": "import os"}), {}, "unknown type 'code'"),
        (doc(version=2), {}, "format version 2: this gradxform reads version 1"),
        (doc(), {}, "no nodes"),
        ("[" * 100_000 + "]" * 100_000, {}, "not the JSON this gradxform writes"),
        ('{"format": "gradxform.checkpoint", "version": 1, "nodes": [{"type": "float", "bits": NaN}]}', {},
         "not the JSON"),
    ]
    for document, entries, message in cases:
        with pytest.raises(ValueError, match=message):
            checkpoint.from_numpy_dict(_flat_with(document, **entries))
    with pytest.raises(ValueError, match="not a gradxform checkpoint: it has no '__skeleton__' entry"):
        checkpoint.from_numpy_dict({"w": w})
    with pytest.raises(ValueError, match="is a int64 array of shape"):
        checkpoint.from_numpy_dict({"__skeleton__": np.arange(3)})


# ---------------------------------------------------------------------------------------
# Loading with a target
# ---------------------------------------------------------------------------------------


def test_load_with_a_target_refuses_any_difference(tmp_path):
    """Given a target, the file must match it exactly: tree structure, container types,
    dict keys and their types, NamedTuple classes, leaf shapes and dtypes, scalar types.
    Nothing is broadcast or made anew; the error names the path."""
    tx = gradxform.adam(0.1)
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3, jnp.float32)}
    checkpoint.save(tmp_path / "adam.npz", tx.init(params))
    back = checkpoint.load(tmp_path / "adam.npz", target=jax.eval_shape(tx.init, params))
    assert not differences(rc.to_numpy(back), rc.to_numpy(tx.init(params)))

    def abstract(tx, params):
        return jax.eval_shape(tx.init, params)

    cases = [
        (abstract(tx, {"w": jnp.ones((3, 2)), "b": params["b"]}),
         r"at path 'inner_state/0/step/w'|at path 'inner_state/0/exp_avg/w'.*shape \(3, 2\)"),
        (abstract(tx, {"w": params["w"], "b": jnp.zeros(3, jnp.float64)}), r"at path 'inner_state/0/exp_avg/b'.*float64"),
        (abstract(gradxform.adam(0.1, amsgrad=True), params), r"at path 'inner_state/0/max_exp_avg_sq': the checkpoint holds a none"),
        (abstract(tx, {**params, "c": jnp.ones(1)}), r"at path 'inner_state/0/exp_avg': .*the target has the key 'c'"),
        (abstract(tx, {"w": params["w"]}), r"at path 'inner_state/0/exp_avg': .*the checkpoint has the key 'b'"),
        (abstract(gradxform.sgd(0.1, momentum=0.9), params), r"at path 'hyperparams'|at path 'inner_state/0'"),
        (abstract(gradxform.nadam(0.1), params), r"at path 'hyperparams': .*the target has the key 'momentum_decay'"),
    ]
    for target, message in cases:
        with pytest.raises(ValueError, match=message):
            checkpoint.load(tmp_path / "adam.npz", target=target)

    tree = {"a": [np.ones(2)], "n": 1, 0: None, "w": np.ones(1), "e": gradxform.EmptyState()}
    checkpoint.save(tmp_path / "tree.npz", tree)
    sds = jax.ShapeDtypeStruct
    cases = [
        ({**tree, "a": (np.ones(2),)}, "at path 'a': the checkpoint holds a list of 1 items, the target a tuple"),
        ({**tree, "a": [np.ones(2), None]}, "at path 'a'"),
        ({**tree, "n": 1.0}, r"at path 'n': the checkpoint holds a int \(1\), the target a float \(1.0\)"),
        ({**tree, "n": True}, "at path 'n'"),
        ({**tree, "n": np.ones(())}, "at path 'n'"),
        ({**{k: v for k, v in tree.items() if k != 0}, "0": None}, "at the root: .*the target has the key '0'"),
        ({**{k: v for k, v in tree.items() if k != 0}, False: None}, "the target has the key False"),
        ({k: v for k, v in tree.items() if k != "n"}, "the checkpoint has the key 'n'"),
        ({**tree, "w": sds((3,), jnp.float64)}, r"at path 'w'.*shape \(3,\)"),  # never broadcast
        ({**tree, "w": sds((), jnp.float64)}, "at path 'w'"),
        ({**tree, "w": sds((1,), jnp.float32)}, "at path 'w'"),
        ({**tree, "w": None}, "at path 'w'"),
        (collections.OrderedDict(tree), "at the root: the checkpoint holds a dict"),
        ({**tree, "e": collections.namedtuple("EmptyState", "")()},
         "at path 'e': the checkpoint holds a gradxform.base.EmptyState NamedTuple, the target a test_checkpoints.EmptyState"),
        ({**tree, "e": ()}, "at path 'e'"),
    ]
    for target, message in cases:
        with pytest.raises(ValueError, match=message):
            checkpoint.load(tmp_path / "tree.npz", target=target)
    with pytest.raises(TypeError, match="the target holds a builtins.set at path 'a/0'"):
        checkpoint.load(tmp_path / "tree.npz", target={**tree, "a": [{1}]})


def test_a_target_gives_containers_key_order_array_kinds_and_shardings(tmp_path):
    saved = {"b": jnp.ones(2), "a": np.arange(3), "s": np.float32(2.0), "j": jnp.zeros(2)}
    checkpoint.save(tmp_path / "tree.npz", saved)
    device = jax.devices()[0]
    sharding = jax.sharding.SingleDeviceSharding(device)
    target = {"a": jax.ShapeDtypeStruct((3,), saved["a"].dtype, sharding=sharding),
              "b": np.zeros(2), "j": jnp.ones(2), "s": jax.ShapeDtypeStruct((), np.float32)}
    back = checkpoint.load(tmp_path / "tree.npz", target=target)
    assert list(back) == ["a", "b", "j", "s"]  # the target's order
    assert isinstance(back["a"], jax.Array) and back["a"].sharding == sharding and back["a"].committed
    assert type(back["b"]) is np.ndarray and isinstance(back["j"], jax.Array) and isinstance(back["s"], jax.Array)
    for key in saved:
        assert np.asarray(back[key]).tobytes() == np.asarray(saved[key]).tobytes()
    # The dict types from the target (a defaultdict's factory too), the values from the file.
    checkpoint.save(tmp_path / "dicts.npz", {"c": collections.Counter({3: 2, 1: 1}),
                                             "d": collections.defaultdict(list, {"x": [1], "y": []})})
    factory = lambda: ["new"]  # noqa: E731
    back = checkpoint.load(tmp_path / "dicts.npz", target={"d": collections.defaultdict(factory, {"y": [], "x": [0]}),
                                                           "c": collections.Counter({1: 0, 3: 0})})
    assert list(back) == ["d", "c"] and type(back["c"]) is collections.Counter and list(back["c"].items()) == [(1, 1), (3, 2)]
    assert back["d"].default_factory is factory and back["d"] == {"y": [], "x": [1]} and list(back["d"]) == ["y", "x"]
    # Concrete state as the target, with a NamedTuple of a class nobody registered.
    Pair = collections.namedtuple("Pair", "x y")
    checkpoint.save(tmp_path / "pair.npz", Pair(jnp.ones(2), [1.5]))
    back = checkpoint.load(tmp_path / "pair.npz", target=Pair(jnp.zeros(2), [0.0]))
    assert type(back) is Pair and back.y == [1.5] and np.array_equal(back.x, np.ones(2))


# ---------------------------------------------------------------------------------------
# Saving: refusals and atomic writes
# ---------------------------------------------------------------------------------------


class _Mapping(dict):
    pass


def test_save_refuses_what_it_cannot_keep_and_leaves_the_old_file(tmp_path):
    """Anything but the kept types is refused at save time with a TypeError naming the
    path; the file already there is untouched and no temporary file is left."""
    path = tmp_path / "state.npz"
    checkpoint.save(path, {"w": np.ones(2)})
    before = path.read_bytes()
    objects = np.empty(1, dtype=object)
    cases = [
        ({"f": lambda: 0}, r"a builtins\.function at path 'f'"),
        ({"a": [1, object()]}, r"a builtins\.object at path 'a/1'"),
        ({"s": {1, 2}}, "a builtins.set at path 's'"),
        ({"m": _Mapping(a=1)}, r"test_checkpoints\._Mapping at path 'm'"),
        ({"k": {(1, 2): 0}}, r"dict key \(1, 2\) of type tuple at path 'k'"),
        ({"d": collections.defaultdict(lambda: 0)}, "defaultdict at path 'd': its default_factory"),
        ({"o": objects}, "dtype object at path 'o'"),
        ({"r": np.zeros(2, [("x", "f4")])}, "at path 'r'"),
        ({"x": gradxform.adam(0.1)}, r"a builtins\.function at path 'x/init'"),
        (jax.tree.map(lambda x: x, {"i": np.int64(3).item().__class__}), "at path 'i'"),
    ]
    for tree, message in cases:
        with pytest.raises(TypeError, match=message):
            checkpoint.save(path, tree)
        with pytest.raises(TypeError, match=message):
            checkpoint.to_numpy_dict(tree)
    with pytest.raises(TypeError, match="at the root"):
        checkpoint.save(path, object())
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["state.npz"]


def test_a_failed_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "state.npz"
    checkpoint.save(path, {"w": np.zeros(3)})

    def failing(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array", failing)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save(path, {"w": np.ones(3)})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["state.npz"]
    assert np.array_equal(checkpoint.load(path)["w"], np.zeros(3))


_KILL_CHILD = r"""
import io, json, os, signal, sys, time, traceback
import numpy as np
from gradxform import checkpoint

folder = sys.argv[1]
N = 1 << 20  # 8 MB of float64: each save takes a while


def tree(k):
    return {"big": np.full(N, k, np.float64), "small": [np.full(5, k, np.int32), float(k)], "k": k}


def writer(path, moment, report):
    # In a forked process: saves tree(1), tree(2), ... and reports each; with a moment,
    # pauses there during the second save, waiting to be killed.
    def say(text):
        os.write(report, (text + "\n").encode())

    def pause():
        say(moment)
        time.sleep(60)

    checkpoint.save(path, tree(1))
    say("saved 1")
    if moment == "writing":  # half of the big array's bytes written to disk (unbuffered)
        class Pausing(io.FileIO):
            def write(self, data):
                if len(data) >= N:
                    super().write(memoryview(data)[: len(data) // 2])
                    pause()
                return super().write(data)

        os.fdopen = lambda fd, mode: Pausing(fd, mode)
    elif moment == "synced":  # the new file complete and synced, not yet renamed
        os.replace = lambda a, b: pause()
    elif moment == "renamed":  # renamed, the directory not yet synced
        real = os.replace
        os.replace = lambda a, b: (real(a, b), pause())
    k = 2
    while True:
        checkpoint.save(path, tree(k))
        say(f"saved {k}")
        k += 1


results = []
moments = [("writing", 0), ("synced", 0), ("renamed", 0), ("repeat", 0.02), ("repeat", 0.15), ("repeat", 0.4)]
for i, (moment, delay) in enumerate(moments):
    path = os.path.join(folder, f"{i}-{moment}.npz")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            writer(path, moment, write)
        except BaseException:
            traceback.print_exc()
        os._exit(1)
    os.close(write)
    lines = os.fdopen(read)
    assert lines.readline() == "saved 1\n"
    if moment == "repeat":
        time.sleep(delay)
    else:
        assert lines.readline() == moment + "\n"
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    reported = ["saved 1"] + [line.strip() for line in lines]
    last = max(int(line.split()[1]) for line in reported if line.startswith("saved"))
    results.append({"path": path, "moment": moment, "last_saved": last})
print(json.dumps(results))
"""


def test_a_writer_killed_while_saving_leaves_the_previous_checkpoint(tmp_path):
    """A process saving a large tree, killed (SIGKILL) in the middle of a save: while the
    data is half written, once it is synced but not renamed, once renamed but the
    directory not synced, and at three moments of back-to-back saves. Each time the file
    at ``path`` is a whole checkpoint, the previous one (or, once renamed, the new one),
    with consistent values. The writers are forked from one process that imported
    gradxform, to be quick."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _KILL_CHILD, str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for result in results:
        path, moment, last = pathlib.Path(result["path"]), result["moment"], result["last_saved"]
        back = checkpoint.load(path)
        k = back["k"]
        expected = {"writing": {1}, "synced": {1}, "renamed": {2}}.get(moment, {last, last + 1})
        assert k in expected, (moment, k, last)
        assert np.array_equal(back["big"], np.full(1 << 20, k, np.float64)), moment
        assert np.array_equal(back["small"][0], np.full(5, k, np.int32)) and back["small"][1] == float(k)
        # Beside it, at most the killed writer's temporary file.
        others = [p for p in os.listdir(tmp_path) if p.startswith(f".{path.name}.")]
        assert all(p.endswith(".tmp") for p in others) and len(others) <= 1, others
        if moment in ("writing", "synced"):
            assert len(others) == 1
            temporary = tmp_path / others[0]
            if moment == "writing":  # what a save in place would have left at path
                with pytest.raises(Exception):
                    checkpoint.load(temporary)
            else:
                assert checkpoint.load(temporary)["k"] == 2


# ---------------------------------------------------------------------------------------
# orbax
# ---------------------------------------------------------------------------------------


def test_to_orbax_and_from_orbax_without_orbax():
    params = {"w": jnp.ones((2, 2), jnp.float32), "b": jnp.zeros(3)}
    tx = gradxform.flatten(gradxform.adam(0.1))
    state = tx.init(params)
    saved = checkpoint.to_orbax(state)
    assert saved.layout == (None, None)
    assert not [x for x in jax.tree.leaves(saved) if x.size == 0]
    back = checkpoint.from_orbax(saved, jax.eval_shape(tx.init, params))
    assert jax.tree.structure(back) == jax.tree.structure(state)
    assert not differences(rc.to_numpy(back), rc.to_numpy(state))


def test_orbax_restores_named_tuples_only_with_a_target(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    params = {"w": jnp.ones((2, 2), jnp.float32), "b": jnp.zeros(3)}
    tx = gradxform.adam(0.1)  # no amsgrad: a None field
    state = tx.init(params)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "state", checkpoint.to_orbax(state))
    with ocp.StandardCheckpointer() as checkpointer:
        plain = checkpointer.restore(tmp_path / "state")
        target = jax.eval_shape(tx.init, params)
        typed = checkpoint.from_orbax(checkpointer.restore(tmp_path / "state", checkpoint.to_orbax(target)), target)
    assert type(plain) is dict  # without a target, orbax gives dicts and lists
    assert type(typed) is gradxform.InjectHyperparamsState
    assert jax.tree.structure(typed) == jax.tree.structure(state)
    assert not differences(rc.to_numpy(typed), rc.to_numpy(state))

"""Checkpoints: save at step K, load in a fresh process, continue, bit for bit.

The runs live in tests/resume_cases.py and execute in two fresh Python processes started
the same way (same interpreter, environment and x64 setting): ``run`` trains K + M
steps uninterrupted and saves a checkpoint after K; ``resume`` loads that checkpoint in
each format (pickle; ``numpy.savez`` through :mod:`gradxform.checkpoint`; orbax for the
functional states, when orbax-checkpoint is installed) and trains M steps. The second
process reuses the first one's compiled XLA executables through JAX's persistent
compilation cache, only to save time: its Python objects, arrays and jit caches are new.
Both compile with XLA's backend optimizations off, also for time.

Every comparison is bit for bit: same container types (NamedTuple classes included),
same dtypes and shapes, same bytes; Python floats compared by their bits.
"""

from __future__ import annotations

import collections
import copy
import importlib.util
import io
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
FORMATS = ("pickle", "npz") + (("orbax",) if HAS_ORBAX else ())

ALIASES = registry.ALIASES


# ---------------------------------------------------------------------------------------
# Bit-for-bit comparison
# ---------------------------------------------------------------------------------------


def differences(a, b, path="") -> list[str]:
    """Every place where ``a`` and ``b`` differ in type, structure, dtype or bits."""
    if type(a) is not type(b):
        return [f"{path}: {type(a).__name__} vs {type(b).__name__}"]
    if isinstance(a, np.ndarray):
        if a.dtype != b.dtype or a.shape != b.shape:
            return [f"{path}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"]
        return [] if a.tobytes() == b.tobytes() else [f"{path}: values differ"]
    if isinstance(a, dict):
        if list(a) != list(b):
            return [f"{path}: keys {list(a)} vs {list(b)}"]
        return [d for k in a for d in differences(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}/{i}")]
    if isinstance(a, float):
        return [] if struct.pack("<d", a) == struct.pack("<d", b) else [f"{path}: {a!r} vs {b!r}"]
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
    classes = set(optim.__all__) - {"GradxformOptimizer", "Optimizer", "lr_scheduler",
                                    "register_optimizer_step_post_hook", "register_optimizer_step_pre_hook"}
    assert len(classes) == 15
    for cls in classes:
        assert any(name == cls or name.startswith(cls + "_") for name in torch), cls
    schedulers = set(lr_scheduler.__all__) - {"LRScheduler", "sample_lrs"}
    assert len(schedulers) == 15 and schedulers <= {name.removeprefix("sched/") for name in torch}


@pytest.mark.parametrize("fmt", FORMATS)
def test_resumed_run_is_bit_for_bit_the_uninterrupted_run(runs, fmt):
    """Parameters, optimizer states (functional states; torch_compat state_dict() with
    param_groups), scheduler state_dicts and every scheduler attribute after K + M
    steps: identical, every case."""
    reference, resumed = _load(runs / "run.pkl"), _load(runs / f"resume-{fmt}.pkl")
    parts = ("functional",) if fmt == "orbax" else ("functional", "torch")
    for part in parts:
        assert list(resumed[part]) == list(reference[part])
        for name in reference[part]:
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
        with np.load(runs / part / "checkpoint.npz") as data:
            merged[part] = checkpoint.from_numpy_dict(dict(data))[part]
    return merged


def _array_leaves_are_jax(tree) -> bool:
    leaves = jax.tree.leaves(tree)
    return bool(leaves) and all(isinstance(x, jax.Array) and not x.weak_type for x in leaves)


@pytest.mark.parametrize("fmt", FORMATS)
def test_functional_states_round_trip_with_types_dtypes_and_bits(runs, fmt):
    """Every functional state (all aliases with every optional buffer, lbfgs, flatten,
    reduce_on_plateau, a schedule): the NamedTuple types, JAX arrays (never weakly
    typed, so a format that drops weak types loses nothing), dtypes (bfloat16 too) and
    values that the pickle written by the first process holds."""
    reference = _load(runs / "checkpoint.pkl")["functional"]
    if fmt == "orbax":
        import orbax.checkpoint as ocp

        cases = rc.functional_cases()
        target = {name: jax.eval_shape(lambda p, tx=cases[name][0]: (p, tx.init(p)), params)
                  for name, (params, _) in reference.items()}
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


@pytest.mark.parametrize("fmt", ["pickle", "npz"])
def test_torch_compat_state_dicts_round_trip(runs, fmt):
    """Every optimizer's and scheduler's state_dict(), read back from pickle and from
    numpy.savez, has the types (a Python int step for SparseAdam, floats, None, tuples),
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


def _savez_round_trip(tree):
    buffer = io.BytesIO()
    np.savez(buffer, **checkpoint.to_numpy_dict(tree))
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as data:
        return checkpoint.from_numpy_dict(dict(data))


def test_npz_keeps_scalar_bfloat16_float8_big_endian_and_complex():
    tree = {
        "scalar_bf16": jnp.asarray(1.5, jnp.bfloat16),
        "bf16": jnp.arange(6, dtype=jnp.bfloat16).reshape(2, 3),
        "f8": np.asarray([0.5, -2.0], ml_dtypes.float8_e4m3fn),
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


Point = collections.namedtuple("Point", "x y")  # a NamedTuple class that pickle finds by name


def test_npz_keeps_container_types_and_python_values():
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


def test_npz_refuses_a_dtype_this_jax_cannot_make():
    """A float64 JAX array saved with x64 on, loaded with x64 off, is refused, not
    silently rounded to float32."""
    flat = checkpoint.to_numpy_dict({"w": jnp.ones(2, jnp.float64)})
    with jax.enable_x64(False):
        with pytest.raises(ValueError, match="saved as a float64 JAX array, which JAX makes float32 here"):
            checkpoint.from_numpy_dict(flat)
    assert checkpoint.from_numpy_dict(flat)["w"].dtype == jnp.float64


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

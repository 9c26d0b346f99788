"""The torch_compat API besides the update rules: Parameter, the tree helpers, hooks,
printing, pickling, checkpoints across processes, compilation and buffer donation.

Where torch is importable, behaviour is compared with torch's live (messages, hook order,
``repr``, ``defaults``, ``param_names``); the rest stands on its own.
"""

from __future__ import annotations

import copy
import gc
import os
import pickle
import re
import subprocess
import sys
import textwrap
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torch_compat as tc
from gradxform.registry import FIRST_ORDER, SPECS
from torch_compat import optim as tco
from torch_compat.optim.optimizer import GradxformOptimizer

jax.config.update("jax_enable_x64", True)

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")


def _catch(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        return type(e), str(e)
    return None


# ---------------------------------------------------------------------------------------
# Parameter
# ---------------------------------------------------------------------------------------


def test_parameter_attributes_and_data():
    x = jnp.arange(6.0).reshape(2, 3)
    p = tc.Parameter(x)
    assert p.shape == (2, 3) and p.dtype == jnp.float64 and p.requires_grad is True
    assert p.grad is None and p.ndim == 2 and p.numel() == 6 and p.size() == (2, 3) and p.size(1) == 3
    assert isinstance(p.data, jax.Array)
    np.testing.assert_array_equal(np.asarray(p.data), np.asarray(x))
    assert tc.Parameter(x, requires_grad=False).requires_grad is False
    # .data is settable, to any shape (as torch's .data), and the grad check follows it.
    p.data = jnp.zeros(4, jnp.float32)
    assert p.shape == (4,) and p.dtype == jnp.float32
    p.grad = jnp.ones(4, jnp.float32)
    p.data = np.ones((2, 2))
    assert isinstance(p.data, jax.Array) and p.shape == (2, 2)
    assert np.asarray(p).tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_parameter_grad_accepts_matching_arrays():
    p = tc.Parameter(jnp.zeros(3))
    p.grad = np.array([1.0, 2.0, 3.0])  # numpy is taken too, as a JAX array
    assert isinstance(p.grad, jax.Array) and p.grad.tolist() == [1.0, 2.0, 3.0]
    p.grad = None
    assert p.grad is None


_GRAD_ERRORS = [
    ("shape", (3,), "float64", lambda: np.zeros(2)),
    ("shape-2d", (2, 3), "float64", lambda: np.zeros((3, 2))),
    ("dtype-float32", (3,), "float64", lambda: np.zeros(3, np.float32)),
    ("dtype-int64", (3,), "float64", lambda: np.zeros(3, np.int64)),
    ("dtype-complex", (3,), "float64", lambda: np.zeros(3, np.complex128)),
    ("dtype-float64-on-float32", (3,), "float32", lambda: np.zeros(3)),
    ("not-an-array", (3,), "float64", lambda: [1.0, 2.0, 3.0]),
]


@pytest.mark.parametrize("shape, dtype, make", [c[1:] for c in _GRAD_ERRORS], ids=[c[0] for c in _GRAD_ERRORS])
def test_parameter_grad_checked_as_torch(shape, dtype, make):
    """A bad ``.grad`` is refused with torch's exception type and message, and the old
    gradient stays."""
    p = tc.Parameter(jnp.zeros(shape, dtype))
    p.grad = jnp.ones(shape, dtype)
    value = make()
    ours = _catch(lambda: setattr(p, "grad", jnp.asarray(value) if isinstance(value, np.ndarray) else value))
    assert ours is not None, "accepted"
    assert np.asarray(p.grad).tolist() == np.ones(shape).tolist()
    expected_type = TypeError if isinstance(value, list) else RuntimeError
    assert ours[0] is expected_type
    if torch is not None:
        t = torch.nn.Parameter(torch.zeros(shape, dtype=getattr(torch, dtype)))
        theirs = _catch(lambda: setattr(t, "grad", torch.from_numpy(value) if isinstance(value, np.ndarray) else value))
        assert ours == theirs


# ---------------------------------------------------------------------------------------
# Tree helpers
# ---------------------------------------------------------------------------------------


def _flax_like(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "params": {
            "Dense_0": {"kernel": rng.standard_normal((3, 4)), "bias": rng.standard_normal(4)},
            "Dense_1": {"kernel": rng.standard_normal((4, 2)), "bias": rng.standard_normal(2)},
        }
    }


def _mlp_loss(tree, x, y):
    p = tree["params"]
    h = jnp.tanh(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    out = h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    return jnp.mean((out - y) ** 2)


def test_tree_helpers_on_a_flax_like_tree():
    arrays = jax.tree.map(jnp.asarray, _flax_like())
    model = tc.as_parameters(arrays)
    assert jax.tree.structure(tc.values(model)) == jax.tree.structure(arrays)
    params = tc.parameters(model)
    assert len(params) == 4 and all(isinstance(p, tc.Parameter) for p in params)
    names = [n for n, _ in tc.named_parameters(model)]
    assert names == ["params.Dense_0.bias", "params.Dense_0.kernel", "params.Dense_1.bias", "params.Dense_1.kernel"]
    assert [p for _, p in tc.named_parameters(model)] == params
    assert tc.as_parameters(model)["params"]["Dense_0"]["bias"] is model["params"]["Dense_0"]["bias"]
    for a, b in zip(jax.tree.leaves(tc.values(model)), jax.tree.leaves(arrays)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_backward_accumulates_like_loss_backward():
    """backward fills .grad with the loss's gradient and adds to existing gradients; a
    frozen parameter (requires_grad=False) gets none. Against torch autograd when present."""
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    model = tc.as_parameters(jax.tree.map(jnp.asarray, _flax_like()))
    loss = tc.backward(_mlp_loss, model, x, y)
    expected_loss, expected = jax.jit(jax.value_and_grad(_mlp_loss))(tc.values(model), x, y)
    assert float(loss) == float(expected_loss)
    for p, g in zip(tc.parameters(model), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.asarray(p.grad), np.asarray(g))
    tc.backward(_mlp_loss, model, x, y)
    for p, g in zip(tc.parameters(model), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(p.grad), 2 * np.asarray(g), rtol=1e-15)
    # has_aux
    out, aux = tc.backward(lambda t, a, b: (_mlp_loss(t, a, b), jnp.sum(a)), model, x, y, has_aux=True)
    assert float(aux) == float(np.sum(x)) and float(out) == float(expected_loss)
    for p, g in zip(tc.parameters(model), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(p.grad), 3 * np.asarray(g), rtol=1e-15)
    # frozen parameter
    frozen = model["params"]["Dense_1"]["bias"]
    frozen.requires_grad = False
    frozen.grad = None
    tc.backward(_mlp_loss, model, x, y)
    assert frozen.grad is None

    if torch is not None:
        tree = _flax_like()
        t = {k: torch.tensor(v, requires_grad=True) for k, v in
             [("k0", tree["params"]["Dense_0"]["kernel"]), ("b0", tree["params"]["Dense_0"]["bias"]),
              ("k1", tree["params"]["Dense_1"]["kernel"]), ("b1", tree["params"]["Dense_1"]["bias"])]}
        h = torch.tanh(torch.from_numpy(x) @ t["k0"] + t["b0"])
        tloss = ((h @ t["k1"] + t["b1"] - torch.from_numpy(y)) ** 2).mean()
        tloss.backward()
        np.testing.assert_allclose(float(loss), tloss.item(), rtol=1e-14)
        ours = model["params"]["Dense_0"]
        np.testing.assert_allclose(np.asarray(ours["kernel"].grad), 4 * t["k0"].grad.numpy(), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(ours["bias"].grad), 4 * t["b0"].grad.numpy(), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(model["params"]["Dense_1"]["kernel"].grad), 4 * t["k1"].grad.numpy(),
                                   rtol=1e-12)


def test_named_params_in_groups_and_state_dict():
    """(name, Parameter) pairs are accepted; groups and state_dict carry ``param_names``
    as torch's do."""
    model = tc.as_parameters({"w": jnp.ones((2, 2)), "b": jnp.zeros(2)})
    named = tc.named_parameters(model)
    opt = tco.Adam(named, lr=0.1)
    assert opt.param_groups[0]["param_names"] == ["b", "w"]
    assert opt.param_groups[0]["params"] == [p for _, p in named]
    for p in opt.param_groups[0]["params"]:
        p.grad = jnp.ones(p.shape)
    opt.step()
    sd = opt.state_dict()
    assert sd["param_groups"][0]["param_names"] == ["b", "w"]
    assert sd["param_groups"][0]["params"] == [0, 1]
    # A fresh optimizer over the same names loads it.
    again = tco.Adam(tc.named_parameters(tc.as_parameters({"w": jnp.ones((2, 2)), "b": jnp.zeros(2)})), lr=0.5)
    again.load_state_dict(sd)
    assert again.param_groups[0]["lr"] == 0.1 and again.param_groups[0]["param_names"] == ["b", "w"]
    if torch is not None:
        tb = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
        tw = torch.nn.Parameter(torch.ones((2, 2), dtype=torch.float64))
        topt = torch.optim.Adam([("b", tb), ("w", tw)], lr=0.1)
        tb.grad, tw.grad = torch.ones(2, dtype=torch.float64), torch.ones((2, 2), dtype=torch.float64)
        topt.step()
        tsd = topt.state_dict()
        assert list(sd["param_groups"][0]) == list(tsd["param_groups"][0])
        assert sd["param_groups"] == tsd["param_groups"]
        assert list(opt.param_groups[0]) == list(topt.param_groups[0])


# ---------------------------------------------------------------------------------------
# Hooks
# ---------------------------------------------------------------------------------------


def _sgd_pair():
    """(ours, torch or None): SGD with momentum on one parameter, gradient set."""
    ours_p = tc.Parameter(jnp.ones(3))
    ours = tco.SGD([ours_p], lr=0.1, momentum=0.9)
    ours_p.grad = jnp.ones(3)
    theirs = None
    if torch is not None:
        tp = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
        theirs = torch.optim.SGD([tp], lr=0.1, momentum=0.9)
        tp.grad = torch.ones(3, dtype=torch.float64)
    return ours, theirs


def _record_step_hooks(opt, lib_register_pre, lib_register_post, log):
    handles = [
        lib_register_pre(lambda o, a, k: log.append(("global-pre", type(o).__name__, len(a), dict(k)))),
        opt.register_step_pre_hook(lambda o, a, k: log.append(("pre", len(a)))),
        opt.register_step_post_hook(lambda o, a, k: log.append(("post", len(a)))),
        lib_register_post(lambda o, a, k: log.append(("global-post",))),
    ]
    return handles


def test_step_hooks_order_and_removal():
    ours, theirs = _sgd_pair()
    logs = {}
    sides = [("ours", ours, tco.register_optimizer_step_pre_hook, tco.register_optimizer_step_post_hook)]
    if theirs is not None:
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

        sides.append(("torch", theirs, register_optimizer_step_pre_hook, register_optimizer_step_post_hook))
    for name, opt, pre, post in sides:
        log = logs[name] = []
        handles = _record_step_hooks(opt, pre, post, log)
        try:
            opt.step()
            opt.step(closure=None)
            for h in handles:
                h.remove()
            opt.step()
        finally:
            for h in handles:
                h.remove()
    assert logs["ours"] == [
        ("global-pre", "SGD", 1, {}), ("pre", 1), ("post", 1), ("global-post",),
        ("global-pre", "SGD", 1, {"closure": None}), ("pre", 1), ("post", 1), ("global-post",),
    ]
    if "torch" in logs:
        assert logs["ours"] == logs["torch"]


def test_step_pre_hook_can_replace_arguments():
    """A pre hook returning (args, kwargs) replaces step's arguments: here the closure."""
    for lib in ["ours"] + (["torch"] if torch is not None else []):
        ours, theirs = _sgd_pair()
        opt = ours if lib == "ours" else theirs
        calls = []
        opt.register_step_pre_hook(lambda o, a, k: ((o,), {"closure": lambda: calls.append("new") or 7.0}))
        assert opt.step(lambda: calls.append("old") or 1.0) == 7.0
        assert calls == ["new"]


def _normalize_address(text):
    return re.sub(r" at 0x[0-9a-f]+", " at 0x?", text)


def test_step_pre_hook_bad_return_message():
    ours, theirs = _sgd_pair()
    ours.register_step_pre_hook(lambda o, a, k: 3)
    with pytest.raises(RuntimeError) as info:
        ours.step()
    text = _normalize_address(str(info.value))
    assert text == "<function SGD.step at 0x?> must return None or a tuple of (new_args, new_kwargs), but got 3."
    if theirs is not None:
        theirs.register_step_pre_hook(lambda o, a, k: 3)
        with pytest.raises(RuntimeError) as tinfo:
            theirs.step()
        assert text == _normalize_address(str(tinfo.value))


def _state_dict_hook_log(opt, log):
    opt.register_state_dict_pre_hook(lambda o: log.append("sd-pre-a"))
    opt.register_state_dict_pre_hook(lambda o: log.append("sd-pre-b"), prepend=True)

    def post_a(o, sd):
        log.append("sd-post-a")
        sd["extra"] = "a"

    def post_b(o, sd):
        log.append("sd-post-b")
        return {**sd, "extra": sd.get("extra", "") + "b"}

    opt.register_state_dict_post_hook(post_a)
    opt.register_state_dict_post_hook(post_b)
    handle = opt.register_state_dict_post_hook(lambda o, sd: log.append("removed"), prepend=True)
    handle.remove()

    def load_pre_a(o, sd):
        log.append("load-pre-a")
        sd = dict(sd)
        sd["param_groups"] = [{**g, "lr": 0.25} for g in sd["param_groups"]]
        return sd

    opt.register_load_state_dict_pre_hook(load_pre_a)
    opt.register_load_state_dict_pre_hook(lambda o, sd: log.append("load-pre-b"), prepend=True)
    opt.register_load_state_dict_post_hook(lambda o: log.append("load-post-a"))
    opt.register_load_state_dict_post_hook(lambda o: log.append(("load-post-b", o.param_groups[0]["lr"])), prepend=True)


def test_state_dict_hooks_order_prepend_and_results():
    ours, theirs = _sgd_pair()
    ours.step()
    results = {}
    for name, opt in [("ours", ours), ("torch", theirs)]:
        if opt is None:
            continue
        log = []
        _state_dict_hook_log(opt, log)
        sd = opt.state_dict()
        opt.load_state_dict(sd)
        results[name] = (log, sd["extra"], opt.param_groups[0]["lr"])
    assert results["ours"] == (
        ["sd-pre-b", "sd-pre-a", "sd-post-a", "sd-post-b",
         "load-pre-b", "load-pre-a", ("load-post-b", 0.25), "load-post-a"],
        "ab",
        0.25,
    )
    if "torch" in results:
        assert results["ours"] == results["torch"]


# ---------------------------------------------------------------------------------------
# repr, defaults, pickling
# ---------------------------------------------------------------------------------------

ALL = [SPECS[alias].torch_name for alias in FIRST_ORDER]


@needs_torch
@pytest.mark.parametrize("name", ALL)
def test_repr_and_defaults_equal_torch(name):
    """The same constructor call prints as torch's and has torch's ``defaults`` (keys in order)."""
    shape = (2, 3)
    ours_params = [tc.Parameter(jnp.ones(shape)), tc.Parameter(jnp.ones(shape))]
    torch_params = [torch.nn.Parameter(torch.ones(shape, dtype=torch.float64)) for _ in range(2)]
    options = {"lr": 0.05}
    ours = getattr(tco, name)([{"params": ours_params[:1]}, {"params": ours_params[1:], "lr": 0.5}], **options)
    theirs = getattr(torch.optim, name)([{"params": torch_params[:1]}, {"params": torch_params[1:], "lr": 0.5}],
                                        **options)
    assert repr(ours) == repr(theirs)
    assert list(ours.defaults) == list(theirs.defaults)
    assert ours.defaults == theirs.defaults
    assert [list(g) for g in ours.param_groups] == [list(g) for g in theirs.param_groups]
    # Also with every default (the constructor called with params only).
    assert repr(getattr(tco, name)(ours_params)) == repr(getattr(torch.optim, name)(torch_params))


def test_pickle_whole_optimizer():
    """pickle.dumps(optimizer) (and copy.deepcopy) keeps params, groups and state; the copy continues exactly
    as the original (hooks are not pickled, as in torch)."""
    params = [tc.Parameter(jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)), tc.Parameter(jnp.arange(4.0))]
    opt = tco.Adam([{"params": params[:1]}, {"params": params[1:], "lr": 0.3}], lr=0.1, amsgrad=True)
    opt.register_step_pre_hook(lambda *a: None)
    for t in range(2):
        for p in params:
            p.grad = jnp.cos(p.data * (t + 1))
        opt.step()
    clone = pickle.loads(pickle.dumps(opt))
    deep = copy.deepcopy(opt)
    assert type(clone) is tco.Adam and len(clone._optimizer_step_pre_hooks) == 0
    copies = []
    for c in (clone, deep):
        cparams = [p for g in c.param_groups for p in g["params"]]
        assert cparams[0] is not params[0]
        assert list(c.state[cparams[0]]) == list(opt.state[params[0]])
        copies.append((c, cparams))
    for _ in range(3):
        for o, ps in [(opt, params)] + copies:
            for p in ps:
                p.grad = jnp.sin(p.data)
            o.step()
    for c, cparams in copies:
        for p, q in zip(params, cparams):
            np.testing.assert_array_equal(np.asarray(p.data), np.asarray(q.data))
        for k, v in opt.state[params[1]].items():
            np.testing.assert_array_equal(np.asarray(v), np.asarray(c.state[cparams[1]][k]))


# ---------------------------------------------------------------------------------------
# Checkpoints in a fresh process
# ---------------------------------------------------------------------------------------

# Builds the optimizers of the checkpoint test; run here and in the child process.
_CHECKPOINT_SETUP = textwrap.dedent('''
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    import torch_compat as tc
    from torch_compat import optim

    def build(values):
        ps = [tc.Parameter(jnp.asarray(v)) for v in values]
        return {
            # amsgrad Adam, 2 groups; NAdam on float32 (its float32 mu_product survives a load);
            # SparseAdam (a Python int step); Adafactor (factored state, eps1=None).
            "adam": (optim.Adam([{"params": ps[0:1]}, {"params": ps[1:2], "lr": 0.02}], lr=0.05, amsgrad=True,
                                weight_decay=0.01), ps[0:2]),
            "nadam": (optim.NAdam([ps[2]], lr=0.03, momentum_decay=5e-3), ps[2:3]),
            "sparse_adam": (optim.SparseAdam([ps[3]], lr=0.04), ps[3:4]),
            "adafactor": (optim.Adafactor([ps[4]], lr=0.05), ps[4:5]),
        }

    def grads(ps, t):
        for i, p in enumerate(ps):
            g = np.cos(np.asarray(p.data) * (t + 1) + i)
            p.grad = jnp.asarray(g * (np.arange(g.size).reshape(g.shape) % 3 != t % 3))  # zeros: SparseAdam

    def train(opts, start, stop):
        for t in range(start, stop):
            for opt, ps in opts.values():
                grads(ps, t)
                opt.step()
''')


def _initial_values():
    rng = np.random.default_rng(7)
    return [rng.standard_normal((3, 4)), rng.standard_normal(5), rng.standard_normal((2, 3)).astype(np.float32),
            rng.standard_normal((5, 2)), rng.standard_normal((4, 3))]


_CHILD = _CHECKPOINT_SETUP + textwrap.dedent('''
    import pickle, sys
    from gradxform import checkpoint
    folder = sys.argv[1]
    saved = np.load(folder + "/params.npz")
    values = [saved[f"p{i}"] for i in range(len(saved.files))]
    out = {}
    for fmt in ("pickle", "npz"):
        opts = build(values)
        if fmt == "pickle":
            with open(folder + "/state.pkl", "rb") as f:
                dicts = pickle.load(f)
        else:
            dicts = checkpoint.from_numpy_dict(dict(np.load(folder + "/state.npz")))
        for name, (opt, ps) in opts.items():
            opt.load_state_dict(dicts[name])
        train(opts, 3, 7)
        for name, (opt, ps) in opts.items():
            for i, p in enumerate(ps):
                out[f"{fmt}/{name}/param{i}"] = np.asarray(p.data)
            for i, p in enumerate(ps):
                for k, v in opt.state[p].items():
                    out[f"{fmt}/{name}/state{i}/{k}"] = np.asarray(v)
    np.savez(folder + "/result.npz", **out)
''')


def test_checkpoint_pickle_and_npz_resume_in_fresh_process(tmp_path):
    """state_dict() saved with pickle, and with numpy.savez via gradxform.checkpoint, is
    loaded by a new Python process, which continues bit for bit as the uninterrupted run."""
    from gradxform import checkpoint

    namespace: dict = {}
    exec(_CHECKPOINT_SETUP, namespace)
    values = _initial_values()
    opts = namespace["build"](values)
    namespace["train"](opts, 0, 3)
    state_dicts = {name: opt.state_dict() for name, (opt, _) in opts.items()}
    assert type(state_dicts["sparse_adam"]["state"][0]["step"]) is int
    with open(tmp_path / "state.pkl", "wb") as f:
        pickle.dump(state_dicts, f)
    np.savez(tmp_path / "state.npz", **checkpoint.to_numpy_dict(state_dicts))
    flat = [p for _, ps in opts.values() for p in ps]
    np.savez(tmp_path / "params.npz", **{f"p{i}": np.asarray(p.data) for i, p in enumerate(flat)})
    # The round trip through numpy keeps every type (int step, None, tuples) and dtype.
    back = checkpoint.from_numpy_dict(dict(np.load(tmp_path / "state.npz")))
    assert back["sparse_adam"]["state"][0]["step"] == state_dicts["sparse_adam"]["state"][0]["step"]
    assert back["adafactor"]["param_groups"][0]["eps"] == (None, 1e-3)

    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    namespace["train"](opts, 3, 7)  # the uninterrupted run
    result = np.load(tmp_path / "result.npz")
    for fmt in ("pickle", "npz"):
        for name, (opt, ps) in opts.items():
            for i, p in enumerate(ps):
                got = result[f"{fmt}/{name}/param{i}"]
                assert got.dtype == p.dtype
                np.testing.assert_array_equal(got, np.asarray(p.data), err_msg=f"{fmt} {name} param {i}")
                for k, v in opt.state[p].items():
                    np.testing.assert_array_equal(result[f"{fmt}/{name}/state{i}/{k}"], np.asarray(v),
                                                  err_msg=f"{fmt} {name} state {i} {k}")


# ---------------------------------------------------------------------------------------
# Compilation and donation
# ---------------------------------------------------------------------------------------


def _cache_size():
    """Compiled step functions, and the compilations each holds."""
    entries = GradxformOptimizer._compiled
    return len(entries), sum(fn._cache_size() for fn in entries.values())


@pytest.fixture
def no_eviction(monkeypatch):
    """The compile cache drops nothing during the test (earlier tests may have filled it):
    :func:`_cache_size` then counts compilations only."""
    monkeypatch.setattr(GradxformOptimizer, "_compile_cache_size", 10**6)


def _adam_with_two_groups():
    ps = [tc.Parameter(jnp.ones((2, 3)) * 0.5), tc.Parameter(jnp.arange(3.0))]
    opt = tco.Adam([{"params": ps[:1]}, {"params": ps[1:], "betas": (0.8, 0.9)}], lr=0.01, weight_decay=0.1)

    def step():
        for p in ps:
            p.grad = jnp.sin(p.data) + 1.0
        opt.step()

    return opt, ps, step


def test_no_recompilation_when_options_change(no_eviction):
    """lr, betas, eps and a nonzero weight_decay are traced: changing them between steps
    compiles nothing new; a static option (maximize) does compile once, which shows the
    probe works."""
    opt, ps, step = _adam_with_two_groups()
    step()
    step()  # steady state (the first step, without state, is its own compilation)
    before = _cache_size()
    changes = [
        {"lr": 0.02}, {"lr": 1}, {"lr": jnp.asarray(0.005)}, {"betas": (0.7, 0.95)},
        {"eps": 1e-6}, {"weight_decay": 0.3}, {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-9},
    ]
    for change in changes:
        for g in opt.param_groups:
            g.update(change)
        step()
        assert _cache_size() == before, change
    # Those changes had an effect: a twin that kept the first options ends elsewhere.
    opt.param_groups[0]["maximize"] = True
    step()
    assert _cache_size()[1] == before[1] + 1


def test_changed_lr_takes_effect_without_recompiling(no_eviction):
    """The traced lr is really used: one SGD step with lr changed by hand moves the
    parameter by exactly lr * grad."""
    p = tc.Parameter(jnp.zeros(3))
    opt = tco.SGD([p], lr=0.1)
    p.grad = jnp.ones(3)
    opt.step()
    before = _cache_size()
    for lr in (0.25, 0.5):
        opt.param_groups[0]["lr"] = lr
        start = np.asarray(p.data)
        p.grad = jnp.ones(3)
        opt.step()
        np.testing.assert_array_equal(np.asarray(p.data), start - lr)
    assert _cache_size() == before


def _watched_training(make_optimizer, skip=False, scheduler=False, backward=False):
    """Trains a fresh optimizer two steps; weak references to it, its Parameters and
    their arrays (and to the loss function and what it closes over, with ``backward``),
    which nothing must keep alive after."""

    class Batch:  # what a loss function typically closes over
        target = jnp.ones(3)

    batch = Batch()
    model = tc.as_parameters({"a": jnp.full(3, 0.5), "b": jnp.full(2, 1.5)})
    params = tc.parameters(model)
    optimizer = make_optimizer(params)
    if skip:
        optimizer.set_skip_non_finite()
    sched = tco.lr_scheduler.StepLR(optimizer, 1, gamma=0.5) if scheduler else None
    loss_fn = lambda tree: sum(jnp.sum((leaf - batch.target[0]) ** 2) for leaf in jax.tree.leaves(tree))  # noqa: E731
    for _ in range(2):
        optimizer.zero_grad()
        if backward:
            tc.backward(loss_fn, model)
        else:
            for p in params:
                p.grad = jnp.ones(p.shape)
        optimizer.step()
        if sched is not None:
            sched.step()
    refs = [weakref.ref(optimizer)] + [weakref.ref(p) for p in params] + [weakref.ref(p.data) for p in params]
    return refs + ([weakref.ref(batch), weakref.ref(loss_fn)] if backward else [])


def test_deleted_optimizers_and_their_parameters_are_freed():
    """The compiled steps are cached (per class and static options) and shared, but hold
    no optimizer, Parameter or array, and :func:`torch_compat.backward`'s cache holds no
    loss function: once deleted, everything is freed. Two Adams share a compiled step,
    a third (amsgrad) has its own; an SGD covers skipping non-finite steps and a
    scheduler. (LBFGS's compiled functions take everything as arguments; it is left out
    here for its compile time.)"""
    makers = [
        (lambda ps: tco.Adam(ps, lr=0.1), {"backward": True}),
        (lambda ps: tco.Adam(ps, lr=0.2), {}),  # the same compile key
        (lambda ps: tco.Adam(ps, lr=0.1, amsgrad=True), {}),  # another one
        (lambda ps: tco.SGD(ps, lr=0.1, momentum=0.9), {"skip": True, "scheduler": True}),
    ]
    refs = [_watched_training(make, **kwargs) for make, kwargs in makers]
    assert any(key[0] is tco.Adam for key in GradxformOptimizer._compiled)  # cached...
    gc.collect()
    alive = [[i for i, ref in enumerate(group) if ref() is not None] for group in refs]
    assert alive == [[] for _ in makers]  # ...yet nothing is kept


def test_backward_compiles_once_per_loss_function_and_keeps_none():
    """``backward`` compiles a loss function once, a bound method too (a new object at
    each access), and its cache lets both go with their owners."""
    from torch_compat import _tree

    class Model:
        def loss(self, tree):
            return jnp.sum(tree["w"] ** 2)

    owner = Model()
    model = tc.as_parameters({"w": jnp.ones(3)})
    for loss_fn in (owner.loss, owner.loss, lambda t: jnp.sum(t["w"] ** 3)):
        tc.backward(loss_fn, model)
    compiled = _tree._GRAD_FNS[owner][(Model.loss, False)]
    assert compiled._cache_size() == 1  # the second bound method found the first's
    tc.backward(owner.loss, model)
    assert compiled._cache_size() == 1
    watched = weakref.ref(owner)
    del owner, compiled
    gc.collect()
    assert watched() is None


def test_scheduler_leaves_no_reference_cycle():
    """A scheduler marks ``optimizer.step`` without holding the optimizer: an optimizer
    and its scheduler are freed as soon as they are deleted, without the garbage collector."""
    gc.collect()
    gc.disable()
    try:
        refs = _watched_training(lambda ps: tco.SGD(ps, lr=0.1, momentum=0.9), scheduler=True)
        assert refs[0]() is None and all(ref() is None for ref in refs[3:])
    finally:
        gc.enable()


def test_compile_cache_is_bounded(monkeypatch):
    """The cache keeps the most recently used compiled steps, up to its size (64; 3
    here); a dropped one is compiled again when needed, and steps as before."""
    monkeypatch.setattr(GradxformOptimizer, "_compile_cache_size", 3)
    runs = []
    for maximize in (False, True):
        for foreach in (None, False, True):  # six compile keys (foreach has no effect)
            p = tc.Parameter(jnp.zeros(2))
            runs.append((tco.SGD([p], lr=0.25, maximize=maximize, foreach=foreach), p, maximize))
    for _ in range(2):
        for opt, p, _ in runs:
            p.grad = jnp.ones(2)
            opt.step()
            assert len(GradxformOptimizer._compiled) <= 3
    for _, p, maximize in runs:
        np.testing.assert_array_equal(np.asarray(p.data), [0.5, 0.5] if maximize else [-0.5, -0.5])


def test_group_entries_that_are_not_options_do_not_recompile(no_eviction):
    """Only the class's own options shape the compiled step: a scheduler's
    ``initial_lr`` or a user's own group entry can change freely (a sweep over learning
    rates, each with its scheduler, shares one compiled step)."""
    opt, ps, step = _adam_with_two_groups()
    step()
    step()
    before = _cache_size()
    for lr in (0.1, 0.2, 0.3):
        for group in opt.param_groups:
            group.update(initial_lr=lr, max_lr=10 * lr, note=f"run with lr {lr}", tags=[lr])
        step()
    assert _cache_size() == before


def test_buffers_donated_user_arrays_kept():
    """step() updates params and state in place (their previous arrays are donated and
    deleted); the arrays a user gave (to Parameter, to .data, as gradients, in a loaded
    state dict) and the arrays of a state_dict() are never deleted."""
    given = jnp.linspace(0.0, 1.0, 6).reshape(2, 3)
    given_copy = np.asarray(given).copy()
    p = tc.Parameter(given)
    q = tc.Parameter(jnp.zeros(3))
    later = jnp.ones(3) * 2
    q.data = later
    opt = tco.Adam([p, q], lr=0.1)
    grads = [jnp.ones((2, 3)), jnp.ones(3)]
    p.grad, q.grad = grads
    opt.step()
    old_param, old_buffer = p.data, opt.state[p]["exp_avg"]
    saved = opt.state_dict()
    p.grad, q.grad = grads
    opt.step()
    assert old_param.is_deleted() and old_buffer.is_deleted(), "params and buffers are donated"
    assert not p.data.is_deleted() and not opt.state[p]["exp_avg"].is_deleted()
    for array in (given, later, *grads):
        assert not array.is_deleted()
    np.testing.assert_array_equal(np.asarray(given), given_copy)
    np.testing.assert_array_equal(np.asarray(later), np.full(3, 2.0))
    # The state dict taken before the step is intact and still loads.
    for value in saved["state"][0].values():
        assert not value.is_deleted()
    other = tco.Adam([tc.Parameter(jnp.zeros((2, 3))), tc.Parameter(jnp.zeros(3))], lr=0.1)
    other.load_state_dict(saved)
    for r in other.param_groups[0]["params"]:
        r.grad = jnp.ones(r.shape)
    other.step()
    for value in saved["state"][0].values():
        assert not value.is_deleted()


# ---------------------------------------------------------------------------------------
# Where the per-parameter state comes from
# ---------------------------------------------------------------------------------------


def _states_of(tree, kind):
    """Every NamedTuple of type ``kind`` inside a (nested) optimizer state."""
    if isinstance(tree, kind):
        return [tree]
    if isinstance(tree, (tuple, list)):
        return [s for sub in tree for s in _states_of(sub, kind)]
    return []


def _with_state(tree, new):
    """``tree`` with its NamedTuple of ``type(new)`` replaced by ``new``."""
    if isinstance(tree, type(new)):
        return new
    if hasattr(tree, "_fields"):
        return type(tree)(*[_with_state(v, new) for v in tree])
    if isinstance(tree, (tuple, list)):
        return type(tree)(_with_state(v, new) for v in tree)
    return tree


def test_state_is_read_from_the_spec_state_class_only():
    """torch_compat's Adam reads and writes ``step``, ``exp_avg`` and ``exp_avg_sq`` in the
    Adam state only, even when another state earlier in the transformation has fields of
    those names (the first field of a name anywhere used to win). The reference runs the
    same transformation functionally, keeping only the Adam state between steps, as
    torch_compat keeps only torch's keys."""
    import gradxform

    class AdamAfterNadam(tco.Adam):
        @classmethod
        def _make_transform(cls, options):
            adam = super()._make_transform(options)
            return gradxform.inject_hyperparams(lambda: gradxform.chain(gradxform.scale_by_nadam(0.5, 0.9), adam))

    w = tc.Parameter(jnp.array([1.0, -2.0, 0.5]))
    opt = AdamAfterNadam([w], lr=0.1)
    reference = AdamAfterNadam._make_transform({**opt.param_groups[0], "zero_options": ("weight_decay",)})
    params, adam_state = jnp.array([1.0, -2.0, 0.5]), None
    for t in range(3):
        grad = jnp.cos(params + t)
        w.grad = grad
        opt.step()
        state = reference.init(params)
        if adam_state is not None:
            state = _with_state(state, adam_state)
        updates, state = reference.update(grad, state, params)
        params = gradxform.apply_updates(params, updates)
        (adam_state,) = _states_of(state, gradxform.ScaleByAdamState)
        (nadam_state,) = _states_of(state, gradxform.ScaleByNadamState)
        assert not np.allclose(np.asarray(adam_state.exp_avg), np.asarray(nadam_state.exp_avg))
        np.testing.assert_allclose(np.asarray(w.data), np.asarray(params), rtol=1e-12)
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_allclose(np.asarray(opt.state[w][key]), np.asarray(getattr(adam_state, key)), rtol=1e-12)
        assert float(opt.state[w]["step"]) == t + 1

"""The harness of ``test_compat_torch.py``: torch_compat.optim beside torch.optim, step by step.

* Option samplers (``sample_<alias>``): one group's options, drawn from a seed within
  torch's valid ranges, covering every constructor flag; ``draw_config`` gives a class's
  constructor options and group overrides (every flag both ways across the groups).
* ``make_pair``: a torch optimizer and ours on the same parameters and options;
  ``TorchSide``/``OurSide`` step them with gradients each side computes from its own
  parameters (``g = c * p + noise_t``, masked for SparseAdam).
* ``check``, ``check_groups``, ``check_state_dicts``: parameters, every state entry (key
  names and order, types, dtypes, shapes, values within ``TOL``), groups and state dicts
  of our side against torch's.

Which classes exist, their implementation flags and whether they take complex
parameters come from ``gradxform.registry``. Needs torch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch

import torch_compat as tc
from gradxform.registry import FIRST_ORDER
from gradxform.registry import SPECS as SPEC_OF
from torch_compat import optim as tco

TOL = {"float64": 1e-10, "complex128": 1e-10, "float32": 1e-5, "complex64": 1e-5}
# torch's Muon orthogonalizes in bfloat16, and so does ours, with float32 accumulation:
# for the small matrices of the scenarios the two agree to float64 rounding. For larger
# ones the float32 sums of the matrix products differ in order and some bfloat16 results
# by one ulp (see test_muon_bf16_agreement_larger_matrix).
MUON_TOL = TOL
MUON_LARGE_TOL = 1e-3

# ---------------------------------------------------------------------------------------
# Option samplers: one group's options, valid for torch, covering every constructor flag.
# ---------------------------------------------------------------------------------------


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def _wd(rng, hi=0.1):
    return 0.0 if rng.random() < 0.4 else _u(rng, 1e-3, hi)


def _betas(rng):
    return (_u(rng, 0.8, 0.95), _u(rng, 0.95, 0.9999))


def _eps(rng):
    return float(10 ** rng.uniform(-9, -6))


def _bool(rng):
    return bool(rng.random() < 0.5)


def sample_sgd(rng):
    momentum = _u(rng, 0.5, 0.95)  # momentum == 0: see test_sgd_without_momentum_*
    nesterov = _bool(rng)
    dampening = 0.0 if nesterov else (0.0 if rng.random() < 0.3 else _u(rng, 0.05, 0.5))
    return dict(lr=_u(rng, 0.01, 0.1), momentum=momentum, dampening=dampening,
                weight_decay=_wd(rng), nesterov=nesterov, maximize=_bool(rng))


def sample_asgd(rng):
    return dict(lr=_u(rng, 0.01, 0.1), lambd=float(10 ** rng.uniform(-4, -2)), alpha=_u(rng, 0.5, 1.0),
                t0=float(rng.choice([2.0, 6.0, 1e6])), weight_decay=_wd(rng), maximize=_bool(rng))


def sample_rprop(rng):
    return dict(lr=_u(rng, 0.001, 0.05), etas=(_u(rng, 0.3, 0.7), _u(rng, 1.1, 1.5)),
                step_sizes=(float(10 ** rng.uniform(-6, -4)), _u(rng, 0.05, 50.0)), maximize=_bool(rng))


def sample_adagrad(rng):
    return dict(lr=_u(rng, 0.01, 0.2), lr_decay=0.0 if rng.random() < 0.4 else _u(rng, 1e-3, 0.1),
                weight_decay=_wd(rng), initial_accumulator_value=0.0 if rng.random() < 0.4 else _u(rng, 0.01, 0.5),
                eps=float(10 ** rng.uniform(-10, -6)), maximize=_bool(rng))


def sample_adadelta(rng):
    return dict(lr=_u(rng, 0.5, 1.0), rho=_u(rng, 0.8, 0.95), eps=float(10 ** rng.uniform(-7, -5)),
                weight_decay=_wd(rng), maximize=_bool(rng))


def sample_rmsprop(rng):
    return dict(lr=_u(rng, 1e-3, 1e-2), alpha=_u(rng, 0.9, 0.999), eps=_eps(rng), weight_decay=_wd(rng),
                momentum=0.0 if rng.random() < 0.4 else _u(rng, 0.5, 0.9), centered=_bool(rng),
                maximize=_bool(rng))


def sample_adam(rng):
    return dict(lr=_u(rng, 1e-3, 3e-2), betas=_betas(rng), eps=_eps(rng), weight_decay=_wd(rng),
                amsgrad=_bool(rng), maximize=_bool(rng), decoupled_weight_decay=_bool(rng))


def sample_adamw(rng):
    return dict(lr=_u(rng, 1e-3, 3e-2), betas=_betas(rng), eps=_eps(rng), weight_decay=_wd(rng),
                amsgrad=_bool(rng), maximize=_bool(rng))


def sample_adamax(rng):
    return dict(lr=_u(rng, 1e-3, 3e-2), betas=_betas(rng), eps=_eps(rng), weight_decay=_wd(rng),
                maximize=_bool(rng))


def sample_sparse_adam(rng):
    return dict(lr=_u(rng, 1e-3, 3e-2), betas=_betas(rng), eps=_eps(rng), maximize=_bool(rng))


def sample_nadam(rng):
    return dict(lr=_u(rng, 1e-3, 3e-2), betas=_betas(rng), eps=_eps(rng), weight_decay=_wd(rng),
                momentum_decay=_u(rng, 1e-3, 1e-2), decoupled_weight_decay=_bool(rng), maximize=_bool(rng))


def sample_radam(rng):
    return dict(lr=_u(rng, 1e-3, 3e-2), betas=(_u(rng, 0.8, 0.95), _u(rng, 0.9, 0.999)), eps=_eps(rng),
                weight_decay=_wd(rng), decoupled_weight_decay=_bool(rng), maximize=_bool(rng))


def sample_adafactor(rng):
    eps1 = None if rng.random() < 0.5 else float(10 ** rng.uniform(-30, -20))
    return dict(lr=_u(rng, 1e-3, 2e-2), beta2_decay=_u(rng, -1.0, -0.5), eps=(eps1, float(10 ** rng.uniform(-4, -2))),
                d=_u(rng, 1.0, 2.0), weight_decay=_wd(rng), maximize=_bool(rng))


def sample_muon(rng):
    coefficients = (3.4445, -4.7750, 2.0315) if rng.random() < 0.5 else (
        _u(rng, 3.0, 3.5), _u(rng, -4.8, -4.2), _u(rng, 1.8, 2.1))
    return dict(lr=_u(rng, 1e-3, 2e-2), weight_decay=_wd(rng, 0.2), momentum=_u(rng, 0.8, 0.97),
                nesterov=_bool(rng), ns_coefficients=coefficients, eps=float(10 ** rng.uniform(-8, -6)),
                ns_steps=int(rng.choice([1, 2])), adjust_lr_fn=[None, "original", "match_rms_adamw"][rng.integers(3)])


def _float_change(name):
    """New values, by hand, for a group's float options (what a scheduler would do)."""

    def change(group, rng):
        out = {"lr": group["lr"] * _u(rng, 0.3, 0.9)}
        for key in ("eps", "lambd", "lr_decay", "momentum_decay", "d"):
            if key in group and isinstance(group[key], float):
                out[key] = group[key] * _u(rng, 0.5, 1.5) if key != "d" else _u(rng, 1.0, 2.0)
        if "betas" in group:
            out["betas"] = _betas(rng)
        if name == "SGD":
            out.update(momentum=_u(rng, 0.5, 0.95), dampening=0.0 if group["nesterov"] else _u(rng, 0.0, 0.5))
        if name == "RMSprop":
            out["alpha"] = _u(rng, 0.9, 0.999)
            if group["momentum"] > 0:  # torch keeps no buffer for a group created with 0
                out["momentum"] = _u(rng, 0.5, 0.9)
        if name == "Adadelta":
            out["rho"] = _u(rng, 0.8, 0.95)
        if name == "ASGD":
            out.update(alpha=_u(rng, 0.5, 1.0), t0=float(rng.choice([1.0, 4.0, 1e6])))
        if name == "Rprop":
            out.update(etas=(_u(rng, 0.3, 0.7), _u(rng, 1.1, 1.5)), step_sizes=(1e-5, _u(rng, 0.05, 1.0)))
        if name == "Adafactor":
            out.update(beta2_decay=_u(rng, -1.0, -0.5), eps=(group["eps"][0], _u(rng, 1e-4, 1e-2)))
        if name == "Muon":
            out.update(momentum=_u(rng, 0.8, 0.97), ns_coefficients=(3.2, -4.5, 2.0))
        return out

    return change


def _static_flip(name):
    """Changes torch allows between steps that change the compiled step (zero-ness, flags)."""

    def flip(group):
        out = {}
        if "weight_decay" in group:
            out["weight_decay"] = 0.0 if group["weight_decay"] != 0 else 0.03
        if "maximize" in group:
            out["maximize"] = not group["maximize"]
        if "decoupled_weight_decay" in group and name != "AdamW":
            out["decoupled_weight_decay"] = not group["decoupled_weight_decay"]
        if name == "SGD" and group["dampening"] == 0:
            out["nesterov"] = not group["nesterov"]
        # No effect here; torch's side keeps its reference implementation. (capturable=True
        # is refused on CPU parameters, as torch refuses it: see test_flags.py.)
        for flag, value in (("foreach", True), ("fused", True), ("differentiable", True)):
            if flag in group:
                out[flag] = value
        if name == "Muon":
            out.update(nesterov=not group["nesterov"], adjust_lr_fn="match_rms_adamw",
                       ns_steps=3 - group["ns_steps"])
        return out

    return flip


@dataclasses.dataclass
class Setup:
    """How the scenarios run one class: its option sampler and standard layout."""

    name: str
    sample: Callable
    impl_flags: tuple = ()
    complex_ok: bool = True
    # Parameter shapes per group, and the groups' dtypes. Few parameters on purpose: a
    # compiled step costs ~0.1 s per parameter to compile on CPU.
    shapes: tuple = (((3, 4),), ((4,),))
    dtypes: tuple = ("float64", "float32")
    sparse_grads: bool = False  # SparseAdam: torch wants sparse gradients


SHAPES = {
    "sparse_adam": (((6, 3),), ((5, 3),)),
    "adafactor": (((2, 3, 4),), ((4,),)),  # a factored (3-D) and an unfactored (1-D) second moment
    "muon": (((4, 3),), ((3, 5),)),  # 2-D only; two parameters (its Newton-Schulz loop is costly to compile)
}
SPECS = {
    SPEC_OF[alias].torch_name: Setup(
        SPEC_OF[alias].torch_name,
        globals()[f"sample_{alias}"],
        tuple(o.name for o in SPEC_OF[alias].options if o.impl),  # set to torch's reference values
        complex_ok=SPEC_OF[alias].complex_message is None,
        shapes=SHAPES.get(alias, Setup.shapes),
        sparse_grads=alias == "sparse_adam",
    )
    for alias in FIRST_ORDER
}
NAMES = list(SPECS)
COMPLEX_NAMES = [n for n in NAMES if SPECS[n].complex_ok]


def _impl_flags(spec, rng):
    """Values of the implementation flags that select torch's reference implementation on
    CPU, given to both sides (a state dict from torch then carries our own flags). Their
    other values, which have no effect here, are set in the "flags flipped" scenario."""
    choices = {"foreach": [None, False], "fused": [None, False], "capturable": [False], "differentiable": [False]}
    return {flag: choices[flag][rng.integers(len(choices[flag]))] for flag in spec.impl_flags}


def draw_config(name, seed):
    """(constructor kwargs, [group overrides]): the constructor's defaults only, all
    options overridden, some options overridden (the standard layouts use the first two,
    the complex test the first and the last)."""
    spec = SPECS[name]
    rng = np.random.default_rng([seed, NAMES.index(name)])
    defaults = spec.sample(rng)
    some = spec.sample(rng)
    keys = sorted(some)
    chosen = [k for k in keys if rng.random() < 0.5] + ["lr"]
    if name == "SGD" and "nesterov" in chosen:
        chosen += ["momentum", "dampening"]
    if name == "Adagrad":
        chosen.append("initial_accumulator_value")  # torch ignores it in a group: the constructor's counts
    overrides = [{}, _complement(name, defaults, spec.sample(rng), rng), {k: some[k] for k in dict.fromkeys(chosen)}]
    defaults.update(_impl_flags(spec, rng))
    return defaults, overrides


def _complement(name, defaults, full, rng):
    """Makes the all-overriding group take, for every flag, the value the defaults do not
    (and a zero where the defaults have a nonzero value, and the reverse), so that each
    class's standard layout runs every flag both ways."""
    for key, value in defaults.items():
        if isinstance(value, bool):
            full[key] = not value
    for key in ("weight_decay", "lr_decay", "initial_accumulator_value"):
        if key in defaults:
            full[key] = _u(rng, 1e-3, 0.1) if defaults[key] == 0 else 0.0
    if name == "RMSprop":
        full["momentum"] = _u(rng, 0.5, 0.9) if defaults["momentum"] == 0 else 0.0
    if name == "SGD" and full["nesterov"]:
        full["dampening"] = 0.0
    if name == "ASGD":
        full["t0"] = 1e6 if defaults["t0"] < 1e6 else 3.0
    if name == "Adafactor":
        full["eps"] = (1e-25 if defaults["eps"][0] is None else None, full["eps"][1])
    if name == "Muon":
        full["adjust_lr_fn"] = {None: "original", "original": "match_rms_adamw"}.get(defaults["adjust_lr_fn"])
        full["ns_steps"] = 3 - defaults["ns_steps"]
    return full


# ---------------------------------------------------------------------------------------
# The two sides.
# ---------------------------------------------------------------------------------------


def _noise(seed, t, i, shape, dtype):
    rng = np.random.default_rng([seed, t, i])
    x = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return np.asarray(x).astype(dtype)


def _mask(seed, t, i, shape):
    """Which entries a SparseAdam gradient touches at step t: rows of a matrix, entries of a vector."""
    rng = np.random.default_rng([seed, t, i, 7])
    rows = np.zeros(shape[0], bool)
    rows[rng.permutation(shape[0])[: (shape[0] + 1) // 2]] = True
    return np.broadcast_to(rows.reshape((-1,) + (1,) * (len(shape) - 1)), shape).astype(np.float64)


def _to_np(value):
    value = value.detach()
    if value.is_sparse:
        value = value.to_dense()
    return value.resolve_conj().numpy().copy()


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours), np.asarray(ref)
    diff = np.linalg.norm((ours.astype(np.complex128) - ref.astype(np.complex128)).ravel())
    scale = np.linalg.norm(ref.astype(np.complex128).ravel())
    if diff == 0:
        return 0.0
    return float(diff / scale) if scale > 0 else math.inf


class Side:
    """One optimizer and its parameters (flat, in group order), torch's or ours."""

    is_torch: bool

    def __init__(self, opt, params, seed, c, sparse_grads, t=0):
        self.opt, self.params, self.seed, self.c, self.sparse_grads, self.t = opt, params, seed, c, sparse_grads, t

    def set_grads(self, have):
        for i, p in enumerate(self.params):
            if have(i):
                self.set_grad(i)

    def step(self, have=lambda i: True, closure_value=None):
        if closure_value is None:
            self.opt.zero_grad()
            self.set_grads(have)
            out = self.opt.step()
            assert out is None
        else:
            def closure():
                self.opt.zero_grad()
                self.set_grads(have)
                return closure_value

            out = self.opt.step(closure)
            assert out is closure_value
        self.t += 1


class TorchSide(Side):
    is_torch = True

    def grad_value(self, i, p):
        noise = torch.from_numpy(_noise(self.seed, self.t, i, tuple(p.shape), _np_dtype(p)))
        g = self.c * p.detach() + noise
        if self.sparse_grads:
            g = (g * torch.from_numpy(_mask(self.seed, self.t, i, tuple(p.shape))).to(g.dtype)).to_sparse()
        return g

    def set_grad(self, i):
        self.params[i].grad = self.grad_value(i, self.params[i])

    def values(self):
        return [_to_np(p) for p in self.params]

    def state_of(self, i):
        p = self.params[i]
        return self.opt.state[p] if p in self.opt.state else None


class OurSide(Side):
    is_torch = False

    def grad_value(self, i, p):
        # Computed in numpy, as torch computes it (elementwise, same rounding), so that the
        # gradient costs no JAX compilation; handed over as a jax.Array.
        noise = _noise(self.seed, self.t, i, p.shape, p.dtype)
        g = self.c * np.asarray(p.data) + noise
        if self.sparse_grads:
            g = g * _mask(self.seed, self.t, i, p.shape).astype(p.dtype)
        return jnp.asarray(g)

    def set_grad(self, i):
        self.params[i].grad = self.grad_value(i, self.params[i])

    def values(self):
        return [np.asarray(p.data) for p in self.params]

    def state_of(self, i):
        p = self.params[i]
        return self.opt.state[p] if p in self.opt.state else None


def _np_dtype(tensor):
    return np.dtype(str(tensor.dtype).removeprefix("torch."))


def torch_class(name):
    return getattr(torch.optim, name)


def our_class(name):
    return getattr(tco, name)


REFERENCE_FLAGS = {"foreach": False, "fused": None, "capturable": False, "differentiable": False}


def _torch_options(options):
    """Options for the torch side: implementation flags set (True) on ours are replaced by
    the values that select torch's reference single-tensor implementation."""
    return {k: (REFERENCE_FLAGS[k] if k in REFERENCE_FLAGS and v else v) for k, v in options.items()}


def make_pair(name, seed, *, dtypes=None, config=None, shapes=None, c=0.3):
    """(torch side, our side) with the class's standard layout and options drawn from ``seed``."""
    spec = SPECS[name]
    defaults, overrides = config if config is not None else draw_config(name, seed)
    shapes = shapes if shapes is not None else spec.shapes
    dtypes = dtypes if dtypes is not None else spec.dtypes
    rng = np.random.default_rng([seed, 99])
    t_groups, o_groups, t_params, o_params = [], [], [], []
    for g, (group_shapes, override) in enumerate(zip(shapes, overrides)):
        dtype = dtypes[g]
        arrays = []
        for shape in group_shapes:
            x = rng.standard_normal(shape)
            if np.dtype(dtype).kind == "c":
                x = x + 1j * rng.standard_normal(shape)
            arrays.append(np.asarray(x).astype(dtype))
        tps = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in arrays]
        ops = [tc.Parameter(jnp.asarray(a)) for a in arrays]
        t_params += tps
        o_params += ops
        t_groups.append({"params": tps, **_torch_options(override)})
        o_groups.append({"params": ops, **override})
    topt = torch_class(name)(t_groups, **_torch_options(defaults))
    oopt = our_class(name)(o_groups, **defaults)
    return (TorchSide(topt, t_params, seed, c, spec.sparse_grads),
            OurSide(oopt, o_params, seed, c, spec.sparse_grads))


def _tol(dtype, muon=False):
    return (MUON_TOL if muon else TOL)[np.dtype(dtype).name]


MAX_ERR: dict[str, float] = {}  # the largest relative errors seen, by class and dtype (for reports)


def _record(name, err):
    MAX_ERR[name] = max(MAX_ERR.get(name, 0.0), err)


def compare_value(where, ours, ref, tol, exact=False):
    if ref is None:
        assert ours is None, f"{where}: torch has None, ours {type(ours).__name__}"
        return 0.0
    if isinstance(ref, bool) or not isinstance(ref, (torch.Tensor, int, float)):
        assert ours == ref, f"{where}: {ours!r} != torch's {ref!r}"
        return 0.0
    if isinstance(ref, (int, float)):
        assert type(ours) is type(ref), f"{where}: type {type(ours).__name__}, torch's {type(ref).__name__}"
        assert ours == ref, f"{where}: {ours} != torch's {ref}"
        return 0.0
    assert isinstance(ours, jax.Array), f"{where}: type {type(ours).__name__}, torch has a tensor"
    ref_np = _to_np(ref)
    assert ours.dtype == ref_np.dtype, f"{where}: dtype {ours.dtype}, torch's {ref_np.dtype}"
    assert ours.shape == ref_np.shape, f"{where}: shape {ours.shape}, torch's {ref_np.shape}"
    if exact:
        np.testing.assert_array_equal(np.asarray(ours), ref_np, err_msg=where)
        return 0.0
    err = rel_err(ours, ref_np)
    assert err <= tol, f"{where}: relative error {err:.3e} > {tol:.0e}"
    return err


def check(ts: TorchSide, os_: OurSide, name, label=""):
    """Parameters and every state entry of our side against torch's."""
    muon = name == "Muon"
    assert len(ts.params) == len(os_.params)
    torch_values = ts.values()
    for i, (tv, ov) in enumerate(zip(torch_values, os_.values())):
        where = f"{name} {label} step {ts.t} param {i}"
        assert ov.dtype == tv.dtype and ov.shape == tv.shape, where
        err = rel_err(ov, tv)
        _record(f"{name} {tv.dtype}", err)
        assert err <= _tol(tv.dtype, muon), f"{where}: relative error {err:.3e}"
    for i in range(len(ts.params)):
        tstate, ostate = ts.state_of(i), os_.state_of(i)
        where = f"{name} {label} step {ts.t} state of param {i}"
        if tstate is None or ostate is None:
            assert tstate is None and ostate is None, f"{where}: torch {tstate is not None}, ours {ostate is not None}"
            continue
        assert list(ostate) == list(tstate), f"{where}: keys {list(ostate)}, torch's {list(tstate)}"
        pdtype = torch_values[i].dtype
        for key, ref in tstate.items():
            err = compare_value(f"{where} [{key!r}]", ostate[key], ref, _tol(_state_dtype(ref, pdtype), muon),
                                exact=key == "step")
            _record(f"{name} {_state_dtype(ref, pdtype)} state", err)


def _state_dtype(ref, pdtype):
    return _np_dtype(ref) if isinstance(ref, torch.Tensor) else pdtype


def _same_group(og, tg, where, order=True):
    """One param group (or a state dict's group): the same options, in the same key order.

    An implementation flag set on our side only (the "flags flipped" scenario) matches
    torch's reference value. ``order=False`` where one side's groups were built by the
    constructor ("params" first) and the other's by load_state_dict ("params" last).
    """
    okeys, tkeys = list(og), list(tg)
    if not order:
        okeys, tkeys = sorted(okeys), sorted(tkeys)
    assert okeys == tkeys, f"{where}: keys {okeys}, torch's {tkeys}"
    for k in tkeys:
        if k == "params":
            assert len(og[k]) == len(tg[k])
        elif k in REFERENCE_FLAGS and og[k] and tg[k] == REFERENCE_FLAGS[k]:
            continue
        elif isinstance(tg[k], torch.Tensor):  # an lr set as a tensor / a JAX array
            assert isinstance(og[k], jax.Array) and og[k].dtype == _np_dtype(tg[k]), where
            assert np.asarray(og[k]).tolist() == tg[k].tolist(), f"{where} [{k!r}]"
        else:
            assert og[k] == tg[k], f"{where} [{k!r}]: {og[k]!r} != torch's {tg[k]!r}"


def check_groups(ts, os_, where="", order=True):
    """param_groups of both sides."""
    assert len(ts.opt.param_groups) == len(os_.opt.param_groups)
    for g, (tg, og) in enumerate(zip(ts.opt.param_groups, os_.opt.param_groups)):
        _same_group(og, tg, f"{where} group {g}", order)


def check_state_dicts(ts, os_, name, where=""):
    """``state_dict()`` of both sides: same layout, same indices, same values."""
    tsd, osd = ts.opt.state_dict(), os_.opt.state_dict()
    assert list(osd) == list(tsd)
    assert list(osd["state"]) == list(tsd["state"]), f"{where}: indices {list(osd['state'])}, torch's {list(tsd['state'])}"
    for index, tstate in tsd["state"].items():
        ostate = osd["state"][index]
        assert list(ostate) == list(tstate), f"{where}: state {index} keys {list(ostate)}, torch's {list(tstate)}"
        for key, ref in tstate.items():
            compare_value(f"{where} state_dict[{index}][{key!r}]", ostate[key], ref,
                          _tol(_state_dtype(ref, "float32"), name == "Muon"), exact=key == "step")
    assert len(osd["param_groups"]) == len(tsd["param_groups"])
    for g, (tg, og) in enumerate(zip(tsd["param_groups"], osd["param_groups"])):
        _same_group(og, tg, f"{where} state_dict group {g}")


def lazy(t):
    """Which parameters get a gradient at step t: only params 0 and 2 at step 0; all but
    param 0 at step 1 (its state exists, it skips a step); all of them from step 2 on."""

    def have(i):
        if t == 0:
            return i in (0, 2)
        if t == 1:
            return i != 0
        return True

    return have


def run(sides, name, steps, *, start_lazy=True, pairs=None, label=""):
    """Steps every side with the standard gradient pattern, comparing after each step."""
    pairs = pairs if pairs is not None else [tuple(sides)]
    for _ in range(steps):
        t = sides[0].t
        have = lazy(t) if start_lazy else (lambda i: True)
        for side in sides:
            assert side.t == t
            side.step(have)
        for ts, os_ in pairs:
            check(ts, os_, name, label)


def _n(name):
    return len([s for group in SPECS[name].shapes for s in group])

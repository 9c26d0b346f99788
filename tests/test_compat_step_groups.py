"""torch_compat's compiled step computes the scalar state once per step group (issue #16).

A step group is a set of parameters of one param group whose scalar state (``step``,
ASGD's ``eta`` and ``mu``, NAdam's ``mu_product``) is held in the same arrays: they were
stepped together, or loaded with equal values. The compiled step runs the core's update
once per step group, in its shared form, and gives the group's parameters the same new
arrays; torch's per-parameter ``step`` stays in ``state`` and ``state_dict()``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform
import torch_compat as tc
from torch_compat import optim
from torch_compat.optim.optimizer import GradxformOptimizer, _named_fields

rng = np.random.default_rng(16)
GRADS = [rng.normal(size=(3,)) for _ in range(12)]


def _params(count, dtype=None):
    return [tc.Parameter(jnp.asarray(np.linspace(-1.0, 1.0, 3) + i, dtype)) for i in range(count)]


def _step(opt, params, t, without=()):
    """One step with the gradients of step ``t``; parameters in ``without`` get none."""
    for i, p in enumerate(params):
        p.grad = None if i in without else jnp.asarray(GRADS[(t + i) % len(GRADS)], p.dtype)
    opt.step()


def _same(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _close(a, b):
    """Equal to rounding: XLA may round the last bit differently in two programs of
    different structure (here, optimizers over different parameter lists)."""
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-14, atol=0)


def test_scalar_state_keys_are_the_cores_shared_scalars():
    """The keys torch_compat shares between the parameters of a step group are exactly the
    state fields the core's ``init`` makes as one scalar for all the leaves."""
    for cls_name in optim.__all__:
        cls = getattr(optim, cls_name)
        if not (isinstance(cls, type) and issubclass(cls, GradxformOptimizer) and hasattr(cls, "_spec")):
            continue
        spec = cls._spec
        params = [jnp.zeros((2, 2)), jnp.zeros((2, 2))]
        state = getattr(gradxform, spec.alias)(1e-3).init(params)
        shared = {
            name
            for name, value, owner, _ in _named_fields(state)
            if isinstance(owner, cls._state_class) and name in spec.state_keys
            and isinstance(value, jax.Array) and value.shape == ()
        }
        assert set(cls._scalar_keys()) == shared, cls_name


def test_parameters_stepped_together_share_their_step():
    """After a step, the parameters stepped together hold the same ``step`` array; one
    whose first gradient came later holds its own, with a smaller value, for good; one
    without a gradient in a step leaves its group."""
    params = _params(4)
    opt = optim.Adam(params, lr=0.1)
    _step(opt, params, 0, without=(3,))
    _step(opt, params, 1)
    steps = [opt.state[p]["step"] for p in params]
    assert steps[0] is steps[1] is steps[2]
    assert steps[3] is not steps[0]
    assert [float(s) for s in steps] == [2.0, 2.0, 2.0, 1.0]
    _step(opt, params, 2, without=(1,))
    steps = [opt.state[p]["step"] for p in params]
    assert steps[0] is steps[2] and steps[1] is not steps[0] and steps[3] is not steps[0]
    assert [float(s) for s in steps] == [3.0, 2.0, 3.0, 2.0]
    assert steps[1] is not steps[3]  # equal values, stepped apart: no host read to merge them


def test_a_late_parameter_gets_the_numbers_of_its_own_steps():
    """A parameter whose first gradient came later, in its own step group, moves as the
    same parameter stepped alone (ASGD: its ``eta`` and ``mu`` too; NAdam: its
    ``mu_product``)."""
    for cls in (optim.Adam, optim.ASGD, optim.NAdam):
        params = _params(3)
        opt = cls(params, lr=0.1)
        alone = _params(3)[2:]
        opt_alone = cls(alone, lr=0.1)
        for t in range(4):
            _step(opt, params, t, without=(2,) if t == 0 else ())
            if t > 0:
                alone[0].grad = params[2].grad
                opt_alone.step()
        _close(params[2].data, alone[0].data)
        for key, value in opt_alone.state[alone[0]].items():
            _close(opt.state[params[2]][key], value)


def test_steps_stay_per_parameter_in_state_dict():
    """``state_dict()`` has one ``step`` per parameter (a copy of its own), as torch."""
    params = _params(3)
    opt = optim.Adam(params, lr=0.1)
    _step(opt, params, 0, without=(2,))
    _step(opt, params, 1)
    saved = opt.state_dict()["state"]
    assert sorted(saved) == [0, 1, 2]
    assert saved[0]["step"] is not saved[1]["step"]
    assert [float(saved[i]["step"]) for i in range(3)] == [2.0, 2.0, 1.0]
    assert saved[0]["step"].dtype == jnp.float32


def test_load_state_dict_shares_equal_steps():
    """Loading gives parameters with equal scalar state (as values) one array, so they
    step together again; the numbers are those of the optimizer that saved the state.
    (float32: a loaded ``eta`` or ``mu_product`` is cast to the parameter's dtype, as
    torch casts it, where the live one is float32.)"""
    for cls in (optim.Adam, optim.ASGD, optim.NAdam):
        params = _params(4, jnp.float32)
        opt = cls(params, lr=0.1)
        _step(opt, params, 0, without=(3,))
        _step(opt, params, 1)
        saved = opt.state_dict()
        saved["state"] = {i: {k: np.asarray(v) for k, v in s.items()} for i, s in saved["state"].items()}
        copies = [tc.Parameter(p.data) for p in params]
        loaded = cls(copies, lr=0.1)
        loaded.load_state_dict(saved)
        steps = [loaded.state[p]["step"] for p in copies]
        assert steps[0] is steps[1] is steps[2] and steps[3] is not steps[0], cls.__name__
        for t in (2, 3):
            _step(opt, params, t)
            _step(loaded, copies, t)
        for p, q in zip(params, copies):
            _same(p.data, q.data)
            for key, value in opt.state[p].items():
                _same(loaded.state[q][key], value)
        steps = [loaded.state[p]["step"] for p in copies]
        assert steps[0] is steps[1] is steps[2] and steps[3] is not steps[0]


def test_a_step_set_by_the_user_is_its_own_group():
    """A ``step`` assigned in ``state[p]`` is read for that parameter only (its own step
    group); the others keep stepping together. Each group moves as an optimizer of its
    own given the same state."""
    params = _params(3)
    opt = optim.Adam(params, lr=0.1)
    together = [tc.Parameter(params[0].data), tc.Parameter(params[2].data)]
    apart = [tc.Parameter(params[1].data)]
    references = [(optim.Adam(together, lr=0.1), together, (0, 2)), (optim.Adam(apart, lr=0.1), apart, (1,))]

    def step_references():
        for ref_opt, ref_params, indices in references:
            for q, i in zip(ref_params, indices):
                q.grad = params[i].grad
            ref_opt.step()

    _step(opt, params, 0)
    step_references()
    opt.state[params[1]]["step"] = jnp.asarray(10.0)
    references[1][0].state[apart[0]]["step"] = jnp.asarray(10.0)
    _step(opt, params, 1)
    step_references()
    steps = [opt.state[p]["step"] for p in params]
    assert steps[0] is steps[2] and steps[1] is not steps[0]
    assert [float(s) for s in steps] == [2.0, 11.0, 2.0]
    for ref_opt, ref_params, indices in references:
        for q, i in zip(ref_params, indices):
            _close(params[i].data, q.data)
            for key, value in ref_opt.state[q].items():
                _close(opt.state[params[i]][key], value)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_numbers_are_the_cores(dtype):
    """Parameters stepped together get, bit for bit, the numbers of the core's update on
    the same parameters (its shared step): the scalar coefficients are computed once,
    as the core computes them, not once per parameter."""
    shapes = [(3,), (4, 5), (7,), (2, 3), (16,)]
    local = np.random.default_rng(0)
    for cls, make in ((optim.Adam, gradxform.adam), (optim.AdamW, gradxform.adamw), (optim.RAdam, gradxform.radam)):
        start = [jnp.asarray(local.normal(size=s), dtype) for s in shapes]
        grads = [[jnp.asarray(local.normal(size=s), dtype) for s in shapes] for _ in range(6)]
        params = [tc.Parameter(jnp.array(p, copy=True)) for p in start]
        opt = cls(params, lr=0.01)
        tx = make(0.01)

        @jax.jit
        def core_step(p, s, g, tx=tx):
            updates, s = tx.update(g, s, p)
            return gradxform.apply_updates(p, updates), s

        core_params, core_state = start, tx.init(start)
        for g in grads:
            for p, gi in zip(params, g):
                p.grad = gi
            opt.step()
            core_params, core_state = core_step(core_params, core_state, g)
        for p, c in zip(params, core_params):
            _same(p.data, c)


def test_sparse_adam_steps_stay_python_ints():
    params = _params(3)
    opt = optim.SparseAdam(params, lr=0.1)
    _step(opt, params, 0, without=(2,))
    _step(opt, params, 1)
    assert [opt.state[p]["step"] for p in params] == [2, 2, 1]
    assert all(type(opt.state[p]["step"]) is int for p in params)


def test_skipped_steps_keep_the_groups():
    """A skipped non-finite step leaves every step as it was, still one array per group."""
    params = _params(3)
    opt = optim.Adam(params, lr=0.1)
    opt.set_skip_non_finite()
    _step(opt, params, 0, without=(2,))
    before = [np.asarray(p.data) for p in params]
    for p in params:
        p.grad = jnp.full(3, jnp.nan)
    opt.step()
    assert opt.skipped_steps == 1
    assert len(opt.state) == 2  # the parameter stepped for the first time got no state
    steps = [opt.state[p]["step"] for p in params[:2]]
    assert steps[0] is steps[1] and float(steps[0]) == 1.0
    for p, b in zip(params, before):
        _same(p.data, b)


def _kernels_of_steady_step(cls, count, **options):
    """Kernels (fusions) of the compiled step ``cls`` runs once every parameter has state."""
    params = [tc.Parameter(jnp.full((16,), 0.5 + i, jnp.float32)) for i in range(count)]
    opt = cls(params, lr=1e-3, **options)
    for p in params:
        p.grad = jnp.ones(16, jnp.float32)
    opt.step()
    recorded = {}
    original = GradxformOptimizer._compiled_step

    def recording(self, key, statics):
        fn = original(self, key, statics)

        def call(*args):
            recorded["args"] = args
            recorded["lowered"] = fn.lower(*args)
            return fn(*args)

        return call

    GradxformOptimizer._compiled_step = recording
    try:
        opt.step()
    finally:
        GradxformOptimizer._compiled_step = original
    text = recorded["lowered"].compile().as_text()
    return text[text.index("ENTRY"):].count(" fusion(")


def _core_kernels(make, count):
    params = [jnp.full((16,), 0.5 + i, jnp.float32) for i in range(count)]
    tx = make()

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gradxform.apply_updates(params, updates), state

    text = jax.jit(step, donate_argnums=(0, 1)).lower(params, tx.init(params), params).compile().as_text()
    return text[text.index("ENTRY"):].count(" fusion(")


@pytest.mark.parametrize(
    "cls, options, make",
    [
        (optim.Adam, {}, lambda: gradxform.adam(1e-3)),
        (optim.SGD, dict(momentum=0.9), lambda: gradxform.sgd(1e-3, momentum=0.9)),
    ],
)
def test_scalar_kernels_do_not_grow_per_parameter(cls, options, make):
    """Each parameter adds to torch_compat's compiled step the kernels it adds to the
    core's (one shared step): its scalar work (step + 1, bias corrections, ...) is done
    once per step group, not once per parameter (6 kernels per Adam parameter before)."""
    ours = (_kernels_of_steady_step(cls, 12, **options) - _kernels_of_steady_step(cls, 6, **options)) / 6
    core = (_core_kernels(make, 12) - _core_kernels(make, 6)) / 6
    assert ours <= core, (ours, core)


def test_a_skipped_step_keeps_a_one_element_step_of_shape_1():
    """A loaded ``step`` of shape ``[1]`` (torch accepts any one-element step) survives a
    skipped step as the scalar it is (before, the skip and the step disagreed on its
    shape and the compiled step failed)."""
    p = tc.Parameter(jnp.ones(3))
    opt = optim.Adam([p], lr=0.1)
    p.grad = jnp.ones(3)
    opt.step()
    saved = opt.state_dict()
    saved["state"][0]["step"] = np.array([1.0], np.float32)
    opt.load_state_dict(saved)
    opt.set_skip_non_finite()
    p.grad = jnp.full(3, jnp.nan)
    opt.step()
    assert opt.skipped_steps == 1
    assert opt.state[p]["step"].shape == () and float(opt.state[p]["step"]) == 1.0


def test_param_groups_keep_steps_of_their_own():
    """Each param group (its own options, one added later) has its own step groups: no
    step array is shared across param groups, and each group's parameters move as in
    an optimizer of that group alone."""
    params = _params(4)
    opt = optim.Adam([{"params": params[:2]}], lr=0.1)
    _step(opt, params[:2], 0)
    alone = [tc.Parameter(p.data) for p in params]
    first = optim.Adam(alone[:2], lr=0.1)
    first.load_state_dict(opt.state_dict())
    opt.add_param_group({"params": params[2:], "betas": (0.8, 0.9)})
    second = optim.Adam(alone[2:], lr=0.1, betas=(0.8, 0.9))
    for t in (1, 2):
        _step(opt, params, t)
        for i, q in enumerate(alone):
            q.grad = params[i].grad
        first.step()
        second.step()
    steps = [opt.state[p]["step"] for p in params]
    assert steps[0] is steps[1] and steps[2] is steps[3] and steps[0] is not steps[2]
    assert [float(s) for s in steps] == [3.0, 3.0, 2.0, 2.0]
    for p, q in zip(params, alone):
        _close(p.data, q.data)

"""Layer (a) of STYLE.md: every optimizer alias x problems x dtypes.

For each alias this checks that

* it converges on small problems (a quadratic over a nested pytree with a matrix, and a
  least-squares regression), run as a jitted ``lax.scan`` so the whole update is carried
  through ``scan`` (which already requires stable state dtypes and shapes);
* state leaves keep their dtype and shape, parameters keep theirs (bfloat16 stays
  bfloat16), and ``state_dtype=`` chooses the dtype of the moment buffers;
* changing the learning rate (or any other float hyperparameter) with
  ``gradxform.set_hyperparams`` does not recompile a jitted update, and does change
  what the update computes;
* a schedule can be given for the learning rate of every alias (and for other
  hyperparameters), is evaluated at the right step, and is reported by
  ``gradxform.get_hyperparams``.

Expected values come from the math (linearity in the learning rate, ASGD's eta formula,
Rprop's initial-step-size rule) or from running the same optimizer with the
hyperparameters set by hand, never from stored gradxform output.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform
from gradxform.registry import FIRST_ORDER

ALIASES = FIRST_ORDER

# Settings under which each alias solves the table's problems in STEPS steps. The
# non-default flags (momentum + Nesterov, centered + momentum, AMSGrad, decoupled decay,
# lr_decay, ...) make the table exercise the optimizers' less common branches too.
CONFIGS = {
    "sgd": dict(learning_rate=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
    "asgd": dict(learning_rate=0.1, lambd=1e-3, t0=20.0),
    "rprop": dict(learning_rate=0.01, etas=(0.5, 1.2), step_sizes=(1e-6, 1.0)),
    "adagrad": dict(learning_rate=0.5, lr_decay=1e-3, initial_accumulator_value=0.1),
    "adadelta": dict(learning_rate=1.0, eps=1e-3),
    "rmsprop": dict(learning_rate=0.01, centered=True, momentum=0.5),
    "adam": dict(learning_rate=0.05, amsgrad=True),
    "adamw": dict(learning_rate=0.05, weight_decay=1e-3),
    "adamax": dict(learning_rate=0.1),
    "sparse_adam": dict(learning_rate=0.05),
    "nadam": dict(learning_rate=0.05, weight_decay=1e-4, decoupled_weight_decay=True),
    "radam": dict(learning_rate=0.1),
    "adafactor": dict(learning_rate=0.1),
    "muon": dict(learning_rate=0.05, weight_decay=0.0),
}

STEPS = 150
CONVERGED_RATIO = 1e-2  # final loss / initial loss; a sign error or a no-op gives >= 1


def fast_jit(fn):
    """``jax.jit`` with XLA's backend optimizations off: these tests are dominated by
    compile time (two cores), and none of them measures speed."""
    return jax.jit(fn, compiler_options={"xla_backend_optimization_level": 0})


def make(alias, **overrides):
    return getattr(gradxform, alias)(**{**CONFIGS[alias], **overrides})


def host(tree):
    """The tree's arrays as numpy arrays (compared on the host: no eager jax ops)."""
    return jax.tree.map(np.asarray, tree)


def numpy_grads(params, seed):
    """A gradient tree drawn on the host."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)


def trees_differ(a, b):
    return any(
        not np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def compute_dtype(dtype):
    """float32 for 16-bit params, the dtype itself otherwise."""
    return jnp.promote_types(dtype, jnp.float32)


# --------------------------------------------------------------------------- problems


def quadratic(dtype, matrices_only=False):
    """A separable, moderately ill-conditioned quadratic over a nested dict of params.

    Two leaves (a matrix and, nested one level down, a vector; Muon gets a second matrix
    there instead), to keep compile times short.
    """
    rng = np.random.default_rng(0)
    shapes = {"w": (4, 3), "block": {"u": (2, 5)} if matrices_only else {"b": (3,)}}
    is_shape = lambda x: isinstance(x, tuple)  # noqa: E731
    start = jax.tree.map(lambda s: rng.normal(size=s), shapes, is_leaf=is_shape)
    target = jax.tree.map(lambda s: rng.normal(size=s), shapes, is_leaf=is_shape)
    curvature = jax.tree.map(lambda t: np.linspace(0.5, 2.0, t.size).reshape(t.shape), target)
    params = jax.tree.map(lambda x: jnp.asarray(x, dtype), start)
    work = compute_dtype(dtype)

    def loss(p):
        terms = jax.tree.map(
            lambda x, t, c: 0.5 * jnp.sum(jnp.asarray(c, work) * (x.astype(work) - jnp.asarray(t, work)) ** 2),
            p,
            target,
            curvature,
        )
        return sum(jax.tree.leaves(terms))

    return params, loss


def least_squares(dtype, matrices_only=False):
    """Linear regression ``X @ w + b ~ Y`` with a noiseless target (minimum loss 0)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(32, 5))
    w_true, b_true = rng.normal(size=(5, 3)), rng.normal(size=(3,))
    params = {"linear": {"w": rng.normal(size=(5, 3)) * 0.1, "b": np.zeros(3)}}
    y = x @ w_true + b_true
    if matrices_only:  # Muon only takes 2-D parameters: no bias
        del params["linear"]["b"]
        y = x @ w_true
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype), params)
    work = compute_dtype(dtype)

    def loss(p):
        layer = p["linear"]
        pred = jnp.asarray(x, work) @ layer["w"].astype(work)
        if "b" in layer:
            pred = pred + layer["b"].astype(work)
        return 0.5 * jnp.mean(jnp.sum((pred - jnp.asarray(y, work)) ** 2, axis=1))

    return params, loss


PROBLEMS = {"quadratic": quadratic, "least_squares": least_squares}


def problem(name, alias, dtype):
    return PROBLEMS[name](dtype, matrices_only=(alias == "muon"))


def small_params():
    """One float32 matrix (every alias, Muon included, takes it): the hyperparameter and
    schedule tests below compile one update per alias and need nothing bigger."""
    return {"w": jnp.asarray(np.random.default_rng(5).normal(size=(4, 3)), jnp.float32)}


def scan_program(tx, loss, steps, maximize=False):
    """``steps`` updates of ``tx`` on ``loss`` in one ``lax.scan`` (a function to jit).

    It returns the final params, the initial and final states, the loss before each step
    and the loss at the end.
    """
    objective = (lambda p: -loss(p)) if maximize else loss
    sign = -1 if maximize else 1

    def go(params):
        def body(carry, _):
            p, state = carry
            value, grads = jax.value_and_grad(objective)(p)
            updates, state = tx.update(grads, state, p)
            return (gradxform.apply_updates(p, updates), state), sign * value

        state0 = tx.init(params)
        (p, state), values = jax.lax.scan(body, (params, state0), None, length=steps)
        return p, state0, state, values, loss(p)

    return go


def buffer_leaves(state):
    """The optimizer's array buffers: float leaves with at least one dimension.

    Hyperparameters and per-parameter scalars (ASGD's eta, NAdam's mu_product) are
    scalars, step counters are integers: neither is a moment buffer.
    """
    return [
        leaf
        for leaf in jax.tree.leaves(state)
        if jnp.issubdtype(leaf.dtype, jnp.floating) and leaf.ndim >= 1
    ]


# --------------------------------------------------------------------------- convergence

DTYPE_CASES = {
    # name: (param dtype, state_dtype option)
    "float32": (jnp.float32, None),
    "float64": (jnp.float64, None),
    "bfloat16": (jnp.bfloat16, None),
    "bfloat16-state-float32": (jnp.bfloat16, jnp.float32),
}

TABLE = [
    ("quadratic", "float32"),
    ("quadratic", "float64"),
    ("quadratic", "bfloat16"),
    ("quadratic", "bfloat16-state-float32"),
    ("least_squares", "float32"),
]


# ``maximize`` goes through the shared chain for most aliases; these build it themselves
# (torch's Muon has no ``maximize``). Run on the float32 quadratic, ascending ``-loss``.
MAXIMIZE_ALIASES = ("adam", "asgd", "rprop", "sparse_adam", "adafactor")


@pytest.mark.parametrize("alias", ALIASES)
def test_converges_with_stable_dtypes(alias):
    """Every (problem, dtype) case of one alias, compiled together (to save compile time)
    and checked one by one."""
    cases = [(p, d, False) for p, d in TABLE if jax.config.jax_enable_x64 or "float64" not in d]
    if alias in MAXIMIZE_ALIASES:
        cases.append(("quadratic", "float32", True))
    programs, inputs = [], []
    for problem_name, dtype_case, maximize in cases:
        dtype, state_dtype = DTYPE_CASES[dtype_case]
        params, loss = problem(problem_name, alias, dtype)
        overrides = {} if state_dtype is None else {"state_dtype": state_dtype}
        if maximize:
            overrides["maximize"] = True
        programs.append(scan_program(make(alias, **overrides), loss, STEPS, maximize))
        inputs.append(params)
    results = fast_jit(lambda all_params: [go(p) for go, p in zip(programs, all_params)])(inputs)

    for (problem_name, dtype_case, maximize), params, result in zip(cases, inputs, results):
        case = f"{alias} on {problem_name}, {dtype_case}" + (", maximize" if maximize else "")
        final, state0, state, values, end = result
        dtype, state_dtype = DTYPE_CASES[dtype_case]

        # Converges: the loss falls well below where it started.
        start, end = float(values[0]), float(end)
        assert math.isfinite(end), f"{case}: loss became {end}"
        assert end < CONVERGED_RATIO * start, f"{case}: loss {start:.4g} -> {end:.4g}"
        assert float(values[-1]) < start, case

        # Parameters keep their dtype and shape (bfloat16 stays bfloat16).
        chex.assert_trees_all_equal_dtypes(final, params, custom_message=case)
        chex.assert_trees_all_equal_shapes(final, params, custom_message=case)
        # State leaves keep dtype and shape across steps (scan needs it too; say it plainly).
        chex.assert_trees_all_equal_structs(state, state0, custom_message=case)
        chex.assert_trees_all_equal_dtypes(state, state0, custom_message=case)
        chex.assert_trees_all_equal_shapes(state, state0, custom_message=case)
        assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state)), case

        # Moment buffers: the params' dtype by default, ``state_dtype`` when given.
        expected = jnp.dtype(state_dtype if state_dtype is not None else dtype)
        buffers = buffer_leaves(state.inner_state)
        assert buffers, f"{case}: keeps no buffers?"
        assert {b.dtype for b in buffers} == {expected}, (case, [b.dtype for b in buffers])

        # The step counter counts the updates.
        assert int(state.count) == STEPS, case


def test_update_with_state_dtype_float32_keeps_float32_moments_for_bf16_params():
    """One Adam step: float32 moments equal the float32 math on the bfloat16 gradient."""
    params = {"w": jnp.asarray([[1.0, -2.0], [0.5, 3.0]], jnp.bfloat16)}
    grads = {"w": jnp.asarray([[0.1, 0.2], [-0.3, 0.7]], jnp.bfloat16)}
    tx = gradxform.adam(0.1, state_dtype=jnp.float32)

    @fast_jit
    def step(grads, params):
        updates, state = tx.update(grads, tx.init(params), params)
        return gradxform.apply_updates(params, updates), state

    new_params, state = host(step(grads, params))
    assert new_params["w"].dtype == jnp.bfloat16
    (adam_state,) = [s for s in state.inner_state if isinstance(s, gradxform.ScaleByAdamState)]
    g = np.asarray(grads["w"], np.float32)
    assert adam_state.exp_avg["w"].dtype == jnp.float32
    assert adam_state.exp_avg_sq["w"].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(adam_state.exp_avg["w"]), 0.1 * g, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(adam_state.exp_avg_sq["w"]), 0.001 * g * g, rtol=1e-5)
    # First Adam step: the update is -lr * sign(g) (up to eps).
    expected = np.asarray(params["w"], np.float32) - 0.1 * np.sign(g)
    np.testing.assert_allclose(np.asarray(new_params["w"], np.float32), expected, rtol=1e-2)


# --------------------------------------------------------------------------- no recompilation

# The float hyperparameters each alias must keep in its state (torch's names), and a new
# value for each that changes the next update or state.
HYPERPARAM_CHANGES = {
    "sgd": dict(momentum=0.5, dampening=0.3, weight_decay=0.1),
    "asgd": dict(lambd=0.5, alpha=0.1, t0=0.0, weight_decay=0.1),
    "rprop": dict(etas=(0.3, 1.5), step_sizes=(1e-6, 1e-3)),
    "adagrad": dict(lr_decay=0.5, weight_decay=0.1, eps=0.5),
    "adadelta": dict(rho=0.5, eps=0.5, weight_decay=0.1),
    "rmsprop": dict(alpha=0.5, eps=0.5, weight_decay=0.1, momentum=0.1),
    "adam": dict(betas=(0.5, 0.9), eps=0.5, weight_decay=0.1),
    "adamw": dict(betas=(0.5, 0.9), eps=0.5, weight_decay=0.1),
    "adamax": dict(betas=(0.5, 0.9), eps=0.5, weight_decay=0.1),
    "sparse_adam": dict(betas=(0.5, 0.9), eps=0.5),
    "nadam": dict(betas=(0.5, 0.9), eps=0.5, weight_decay=0.1, momentum_decay=0.5),
    "radam": dict(betas=(0.5, 0.9), eps=0.5, weight_decay=0.1),
    "adafactor": dict(beta2_decay=-0.3, eps=(None, 10.0), d=1.25, weight_decay=0.1),
    "muon": dict(weight_decay=0.1, momentum=0.5, ns_coefficients=(2.0, -1.5, 0.5), eps=100.0),
}
# A concrete 0 weight decay (or momentum) leaves the feature, and its hyperparameter, out
# of the state; give every alias a non-zero one here. sgd: dampening needs a
# non-Nesterov buffer to be meaningful (and valid in torch).
RECOMPILE_OVERRIDES = {
    alias: dict(weight_decay=1e-3) for alias, changes in HYPERPARAM_CHANGES.items() if "weight_decay" in changes
}
RECOMPILE_OVERRIDES["sgd"].update(nesterov=False)

# The update is ``-learning_rate * direction`` with a direction independent of it.
# Adafactor too while ``learning_rate <= 1/sqrt(step)`` (its relative step is min of both).
LINEAR_IN_LR = {"sgd", "adagrad", "adadelta", "rmsprop", "adam", "adamw", "adamax",
                "sparse_adam", "nadam", "radam", "adafactor", "muon"}


WARM_STEPS = 6  # RAdam rectifies (and so uses eps) from its 6th step on


def warm_setup(alias):
    """A jitted update with a trace counter, a state after a few steps, and a fresh gradient."""
    params = small_params()
    tx = make(alias, **RECOMPILE_OVERRIDES.get(alias, {}))
    traces = []

    def step(grads, state, params):
        traces.append(None)  # runs only while tracing
        return tx.update(grads, state, params)

    jitted = jax.jit(step)
    grads = numpy_grads(params, seed=1)
    warm = tx.init(params)
    for _ in range(WARM_STEPS):
        _, warm = jitted(grads, warm, params)
    # A larger gradient for the measured step (so that e.g. Adafactor's update RMS exceeds
    # 1 and its clipping threshold ``d`` matters), mostly of the same signs as before.
    test_grads = jax.tree.map(
        lambda g, n: jnp.asarray(4.0 * np.asarray(g) + 0.5 * np.asarray(n), np.float32),
        grads,
        numpy_grads(params, seed=2),
    )
    return params, jitted, traces, warm, test_grads


@pytest.mark.parametrize("alias", ALIASES)
def test_changing_hyperparameters_does_not_recompile(alias):
    params, jitted, traces, warm, grads = warm_setup(alias)
    base_updates, base_state = host(jitted(grads, warm, params))
    assert len(traces) == 1

    hyperparams = gradxform.get_hyperparams(warm)
    assert set(hyperparams) == {"learning_rate", *HYPERPARAM_CHANGES[alias]}
    lr = float(hyperparams["learning_rate"])

    # Learning rate.
    new_lr = lr / 2
    lr_state = gradxform.set_hyperparams(warm, learning_rate=new_lr)
    updates, state = host(jitted(grads, lr_state, params))
    assert len(traces) == 1, f"{alias} retraced after set_hyperparams(learning_rate=...)"
    assert float(gradxform.get_hyperparams(state)["learning_rate"]) == pytest.approx(new_lr)
    if alias in LINEAR_IN_LR:
        chex.assert_trees_all_close(updates, jax.tree.map(lambda u: u / 2, base_updates), rtol=1e-6)
        assert trees_differ(updates, base_updates)
    elif alias == "asgd":
        # This step used the eta stored by the previous one; the next eta follows the new
        # learning rate: eta = lr / (1 + lambd * lr * t) ** alpha after t updates.
        lambd, alpha, t = CONFIGS["asgd"]["lambd"], 0.75, WARM_STEPS + 1  # alpha: the default
        expected_eta = np.float32(new_lr / (1 + lambd * new_lr * t) ** alpha)
        (asgd_state,) = [s for s in state.inner_state if isinstance(s, gradxform.ScaleByAsgdState)]
        for eta in jax.tree.leaves(asgd_state.eta):
            np.testing.assert_allclose(eta, expected_eta, rtol=1e-6)
        assert trees_differ(state.inner_state, base_state.inner_state)
    elif alias == "rprop":
        # As in torch, Rprop's learning rate is only the initial step size.
        chex.assert_trees_all_equal(updates, base_updates)

    # Every other float hyperparameter, one at a time.
    for name, value in HYPERPARAM_CHANGES[alias].items():
        changed = gradxform.set_hyperparams(warm, **{name: value})
        updates, state = host(jitted(grads, changed, params))
        assert len(traces) == 1, f"{alias} retraced after set_hyperparams({name}=...)"
        reported = gradxform.get_hyperparams(state)[name]
        expected = [v for v in jax.tree.leaves(value)]
        np.testing.assert_allclose([float(r) for r in jax.tree.leaves(reported)], expected, rtol=1e-12)
        assert trees_differ((updates, state.inner_state), (base_updates, base_state.inner_state)), (
            f"{alias}: changing {name} had no effect"
        )
    assert jitted._cache_size() == 1


def test_learning_rate_as_jax_scalar_does_not_recompile():
    """An lr given as a jax scalar is the builder's: the state records it with a float's
    dtype and shape, and a step that builds the optimizer from a traced lr (as
    optax.inject_hyperparams does) compiles once for every value."""
    alias = "adam"
    params = small_params()
    grads = numpy_grads(params, seed=3)
    traces = []

    def step(lr, grads, state, params):
        traces.append(None)
        return make(alias, learning_rate=lr).update(grads, state, params)

    state = make(alias, learning_rate=jnp.asarray(0.1, jnp.float32)).init(params)
    chex.assert_trees_all_equal_shapes_and_dtypes(
        jax.tree.leaves(state), jax.tree.leaves(make(alias, learning_rate=0.1).init(params))
    )
    jitted = jax.jit(step)
    u1, _ = host(jitted(jnp.asarray(0.1, jnp.float32), grads, state, params))
    u2, _ = host(jitted(jnp.asarray(0.05, jnp.float32), grads, state, params))
    assert len(traces) == 1
    chex.assert_trees_all_close(u2, jax.tree.map(lambda u: u / 2, u1), rtol=1e-6)


# --------------------------------------------------------------------------- schedules

SCHEDULE_STEPS = 4


def lr_schedule(base):
    return lambda count: base / (1.0 + count)


def run_schedule_comparison(tx_scheduled, tx_constant, by_hand, params):
    """Feeds the same gradients, at fixed params, to the scheduled optimizer and to the
    constant one, in one jitted scan; with ``by_hand`` also to the constant one with
    ``by_hand(k)`` set before step ``k``. Returns the hyperparameters at init, the final
    states and the stacked updates of each step."""
    rng = np.random.default_rng(4)
    grads = jax.tree.map(
        lambda p: jnp.asarray(rng.normal(size=(SCHEDULE_STEPS, *p.shape)), p.dtype), params
    )

    @fast_jit
    def go(params, grads):
        def body(states, inputs):
            k, g = inputs
            u1, s1 = tx_scheduled.update(g, states[0], params)
            u2, s2 = tx_constant.update(g, states[1], params)
            if by_hand is None:
                return (s1, s2), (u1, u2)
            u3, s3 = tx_constant.update(g, gradxform.set_hyperparams(states[2], **by_hand(k)), params)
            return (s1, s2, s3), (u1, u2, u3)

        states = (tx_scheduled.init(params), tx_constant.init(params))
        if by_hand is not None:
            states += (tx_constant.init(params),)
        first = gradxform.get_hyperparams(states[0])
        final, updates = jax.lax.scan(body, states, (jnp.arange(SCHEDULE_STEPS), grads))
        return first, final, updates

    return host(go(params, grads))


@pytest.mark.parametrize("alias", ALIASES)
def test_learning_rate_schedule(alias):
    params = small_params()
    base = CONFIGS[alias]["learning_rate"]
    schedule = lr_schedule(base)
    tx_scheduled = make(alias, learning_rate=schedule)
    tx_constant = make(alias, learning_rate=base)
    linear = alias in LINEAR_IN_LR
    # Where the update is not linear in the lr, compare with the lr set by hand each step.
    by_hand = None if linear else (lambda k: {"learning_rate": schedule(k)})

    first, final, updates = run_schedule_comparison(tx_scheduled, tx_constant, by_hand, params)
    u_sched, u_const = updates[:2]
    # init reports the value at step 0; after n updates, the one used by the last (n - 1).
    assert float(first["learning_rate"]) == pytest.approx(base)
    reported = float(gradxform.get_hyperparams(final[0])["learning_rate"])
    assert reported == pytest.approx(schedule(SCHEDULE_STEPS - 1))
    if linear:
        # Same gradients and params, so the same directions: step k is scaled by lr_k / lr_0
        # (an off-by-one in the step the schedule sees would scale by the wrong factors).
        factors = np.asarray([schedule(k) / base for k in range(SCHEDULE_STEPS)])
        expected = jax.tree.map(
            lambda u: u * factors.reshape(-1, *[1] * (u.ndim - 1)).astype(u.dtype), u_const
        )
        chex.assert_trees_all_close(u_sched, expected, rtol=1e-6)
        assert trees_differ(u_sched, u_const)
    else:
        # The schedule is evaluated at the step count: the same as setting it by hand.
        chex.assert_trees_all_close(u_sched, updates[2], rtol=1e-6, atol=1e-7)
        if alias == "asgd":
            assert trees_differ(u_sched, u_const)
        else:  # Rprop's lr only sets the initial step size (as in torch): sched(0) == base
            assert alias == "rprop"
            chex.assert_trees_all_equal(u_sched, u_const)


OTHER_SCHEDULES = [
    # (alias, hyperparameter, schedule, constant value at step 0)
    ("adam", "eps", lambda count: 0.1 * (1.0 + count), 0.1),
    ("sgd", "momentum", lambda count: 0.9 - 0.4 / (1.0 + count), 0.5),
    ("adam", "betas", (lambda count: 0.5 + 0.1 * count, 0.999), (0.5, 0.999)),
    ("rmsprop", "alpha", lambda count: 0.9 + 0.02 * count, 0.9),
]


@pytest.mark.parametrize(
    "alias,name,schedule,constant", OTHER_SCHEDULES, ids=[f"{a}-{n}" for a, n, *_ in OTHER_SCHEDULES]
)
def test_schedule_on_other_hyperparameter(alias, name, schedule, constant):
    params = small_params()
    tx_scheduled = make(alias, **{name: schedule})
    tx_constant = make(alias, **{name: constant})

    def value_at(k):
        return jax.tree.map(lambda s: s(k) if callable(s) else s, schedule, is_leaf=callable)

    first, (s_sched, _, _), (u_sched, u_const, u_hand) = run_schedule_comparison(
        tx_scheduled, tx_constant, lambda k: {name: value_at(k)}, params
    )
    expected_first = jax.tree.leaves(value_at(0))
    expected_last = jax.tree.leaves(value_at(SCHEDULE_STEPS - 1))
    np.testing.assert_allclose([float(v) for v in jax.tree.leaves(first[name])], expected_first, rtol=1e-12)
    reported = gradxform.get_hyperparams(s_sched)[name]
    np.testing.assert_allclose([float(v) for v in jax.tree.leaves(reported)], expected_last, rtol=1e-6)
    chex.assert_trees_all_close(u_sched, u_hand, rtol=1e-6, atol=1e-7)
    assert trees_differ(u_sched, u_const)
    # The learning rate stays a constant hyperparameter.
    lr = float(gradxform.get_hyperparams(s_sched)["learning_rate"])
    assert lr == pytest.approx(CONFIGS[alias]["learning_rate"])

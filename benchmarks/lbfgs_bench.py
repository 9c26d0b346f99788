"""L-BFGS beside optax, scipy and torch, in one process (float64, history size 10).

    python benchmarks/lbfgs_bench.py [--repeats 7] [--quick] [--table {all,solve,implicit,compat,steps,bounds}]

For each problem it prints the median warm solve time of

* ``gradxform.minimize`` (one jitted call, strong-Wolfe line search),
* optax's ``lbfgs`` (zoom line search) in a ``lax.while_loop``, jitted,
* scipy's L-BFGS-B with a jitted JAX value-and-gradient,
* torch's ``LBFGS`` (strong Wolfe) with a closure,
* ``torch_compat.optim.LBFGS`` with the same closure work as torch,

the first call including compilation (gradxform, optax), iteration counts, and each
time as a ratio to gradxform's. Every solver runs to max|grad| <= 1e-7 (optax:
||grad||_2 <= 1e-7), at most 1000 iterations.

The ``compat`` table (not part of ``all``) times torch's ``LBFGS.step(closure)`` and
``torch_compat``'s in rounds of one run each, the two orders in turn
(``_timing.rounds``), the same closure work as above, and prints the median of the
rounds' ratios: the quickest way to compare the two on a loaded machine. The
``steps`` table (not part of ``all``) does the same over 25 steps of one optimizer with
torch's default ``history_size=100`` and ``max_iter=20``, where the state (history lists
growing to 100 pairs) is read in and written out at every step.

The ``bounds`` table (not part of ``all``) is ``benchmarks/lbfgsb_bench.py``'s: the
bounded solver (``minimize(..., bounds=...)``, L-BFGS-B) against scipy's L-BFGS-B and
jaxopt's ``LBFGSB`` on scipy's bounded test problems (optimistix has no bounded solver).

The ``implicit`` table times a hyperparameter gradient through a solve: the validation
loss of an L2-regularised logistic regression, differentiated with respect to the
regularisation strength. ``jax.grad`` through ``gradxform.minimize`` (implicit function
theorem: one solve, then one conjugate-gradient solve with Hessian-vector products)
against unrolled differentiation (``jax.grad`` through a ``lax.scan`` of a fixed number of
optax ``lbfgs`` steps without line search, the number of iterations ``minimize`` took),
with the two gradients' relative difference. optax, scipy and torch are benchmark
contenders, not dependencies of gradxform: a contender that is not installed is left out.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import gradxform  # noqa: E402

MAX_ITER, HISTORY, TOL = 1000, 10, 1e-7
# The options every L-BFGS here runs with (minimize's, torch's and torch_compat's names).
OPTIONS = dict(max_iter=MAX_ITER, max_eval=MAX_ITER * 5, history_size=HISTORY, tolerance_grad=TOL,
               tolerance_change=0.0, line_search_fn="strong_wolfe")


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def make_logistic(seed=0, n=500, d=50):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, d))
    w = rng.standard_normal(d)
    b = (a @ w + 0.5 * rng.standard_normal(n) > 0).astype(np.float64)
    return a, b


def logistic_jax(a, b):
    a, b = jnp.asarray(a), jnp.asarray(b)

    def f(w):
        z = a @ w
        return jnp.mean(jnp.logaddexp(0.0, z) - b * z) + 1e-3 * jnp.sum(w**2)

    return f


def problems():
    out = []
    for n in (2, 100, 1000):
        x0 = np.tile([-1.2, 1.0], n // 2)
        out.append((f"rosenbrock-{n}", rosenbrock, x0, "rosenbrock"))
    a, b = make_logistic()
    out.append(("logistic-500x50", logistic_jax(a, b), np.zeros(a.shape[1]), ("logistic", a, b)))
    return out


def timed(fn, repeats):
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def gradxform_solver(f, outputs=lambda result: result):
    """``minimize`` with ``OPTIONS``, jitted; ``outputs`` picks what the jitted call returns
    from the ``MinimizeResult`` (all of it by default)."""
    return jax.jit(lambda x: outputs(gradxform.minimize(f, x, **OPTIONS)))


def optax_solver(f):
    import optax
    import optax.tree_utils as otu

    opt = optax.lbfgs(memory_size=HISTORY)
    value_and_grad = optax.value_and_grad_from_state(f)

    def solve(x):
        def step(carry):
            params, state = carry
            value, grad = value_and_grad(params, state=state)
            updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=f)
            return optax.apply_updates(params, updates), state

        def going(carry):
            _, state = carry
            count = otu.tree_get(state, "count")
            grad = otu.tree_get(state, "grad")
            return (count == 0) | ((count < MAX_ITER) & (otu.tree_norm(grad) >= TOL))

        params, state = jax.lax.while_loop(going, step, (x, opt.init(x)))
        return params, otu.tree_get(state, "count")

    return jax.jit(solve)


def scipy_solve(f, x0):
    from scipy.optimize import minimize

    vg = jax.jit(jax.value_and_grad(f))

    def fun(x):
        value, grad = vg(x)
        return float(value), np.asarray(grad)

    fun(x0)  # compile outside the timing
    return lambda: minimize(fun, x0, jac=True, method="L-BFGS-B",
                            options=dict(maxcor=HISTORY, gtol=TOL, maxiter=MAX_ITER, ftol=0.0))


def torch_problem(spec, x0, options=OPTIONS):
    """A fresh ``torch.optim.LBFGS`` on the problem: ``(x, optimizer, closure)``."""
    import torch

    if spec == "rosenbrock":
        def f(x):
            return torch.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)
    else:
        _, a, b = spec
        a, b = torch.tensor(a), torch.tensor(b)

        def f(w):
            z = a @ w
            return torch.mean(torch.logaddexp(torch.zeros((), dtype=z.dtype), z) - b * z) + 1e-3 * torch.sum(w**2)

    x = torch.tensor(x0, requires_grad=True)
    opt = torch.optim.LBFGS([x], **options)

    def closure():
        opt.zero_grad()
        loss = f(x)
        loss.backward()
        return loss

    return x, opt, closure


def compat_problem(loss_fn, x0, options=OPTIONS, optimizer=None):
    """The same with ``torch_compat.optim.LBFGS`` (or the class ``optimizer``); the
    closure: ``torch_compat.backward`` of ``loss_fn(params)`` (the same function object
    each time: its value and gradient compile once per function)."""
    import torch_compat
    from torch_compat import optim

    model = torch_compat.as_parameters({"x": jnp.asarray(x0)})
    opt = (optimizer or optim.LBFGS)(torch_compat.parameters(model), **options)

    def closure():
        opt.zero_grad()
        return torch_compat.backward(loss_fn, model)

    return torch_compat.parameters(model)[0], opt, closure


def solver(problem, steps=1):
    """A call that makes a fresh optimizer with ``problem()`` and steps it ``steps`` times
    (returns ``n_iter``)."""

    def solve():
        x, opt, closure = problem()
        for _ in range(steps):
            opt.step(closure)
        return opt.state[x]["n_iter"]

    return solve


def torch_setup(spec, x0, options=OPTIONS, steps=1):
    return solver(lambda: torch_problem(spec, x0, options), steps)


def compat_loss(f):
    """``f`` as a loss of the ``{"x": x}`` parameters ``compat_problem`` makes."""
    return lambda p: f(p["x"])


def compat_setup(f, x0, options=OPTIONS, steps=1):
    loss_fn = compat_loss(f)
    return solver(lambda: compat_problem(loss_fn, x0, options), steps)


def stepper(problem, warm):
    """One optimizer made with ``problem()`` and stepped ``warm`` times; each call then
    takes one more step."""
    _, opt, closure = problem()
    for _ in range(warm):
        opt.step(closure)
    return lambda: opt.step(closure)


def first_call(make, x0, repeats):
    """Compile + solve with a fresh jit each time (a new function object)."""
    times = []
    for _ in range(repeats):
        solver = make()
        start = time.perf_counter()
        jax.block_until_ready(solver(x0))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_hyper_problem(seed=1, n_train=400, n_val=200, d=50):
    """Training and validation losses of an L2-regularised logistic regression."""
    a, b = make_logistic(seed, n_train + n_val, d)
    a_train, b_train = jnp.asarray(a[:n_train]), jnp.asarray(b[:n_train])
    a_val, b_val = jnp.asarray(a[n_train:]), jnp.asarray(b[n_train:])

    def logistic(w, a, b):
        z = a @ w
        return jnp.mean(jnp.logaddexp(0.0, z) - b * z)

    def train_loss(w, log_lam):
        return logistic(w, a_train, b_train) + jnp.exp(log_lam) * jnp.sum(w**2)

    def val_loss(w):
        return logistic(w, a_val, b_val)

    return train_loss, val_loss, d


def implicit_table(repeats):
    """Hypergradient d val_loss(w*(lam)) / d log(lam): implicit against unrolled."""
    from _timing import race

    train_loss, val_loss, d = make_hyper_problem()
    w0 = jnp.zeros(d)
    log_lam = jnp.asarray(np.log(1e-2))

    def make_implicit():
        def hyper(log_lam):
            result = gradxform.minimize(train_loss, w0, log_lam, **OPTIONS)
            return val_loss(result.params), result.n_iter

        return jax.jit(jax.grad(hyper, has_aux=True))

    def make_unrolled_forward():
        # The same iterations (gradxform.lbfgs runs minimize's loop, without the implicit
        # rule), differentiated through every iteration and line-search step: forward mode,
        # since reverse mode cannot go through a lax.while_loop.
        tx = gradxform.lbfgs(**OPTIONS)

        def hyper(log_lam):
            f = lambda w: train_loss(w, log_lam)  # noqa: E731
            value, grad = jax.value_and_grad(f)(w0)
            updates, _ = tx.update(grad, tx.init(w0), w0, value_fn=f, value=value)
            return val_loss(w0 + updates)

        return jax.jit(jax.jacfwd(hyper))

    implicit = make_implicit()
    grad_implicit, n_iter = implicit(log_lam)
    steps = int(n_iter)
    unrolled = make_unrolled_forward()
    contenders = {
        "jax.grad through minimize (implicit)": (make_implicit, lambda x: implicit(x)[0]),
        "jax.jacfwd through the same L-BFGS loop (unrolled)": (make_unrolled_forward, unrolled),
    }
    try:
        import optax
    except ImportError:  # optax is a benchmark contender only
        optax = None
    if optax is not None:
        def make_unrolled_optax():
            opt = optax.lbfgs(learning_rate=1.0, memory_size=HISTORY, linesearch=None)

            def hyper(log_lam):
                f = lambda w: train_loss(w, log_lam)  # noqa: E731

                def step(carry, _):
                    w, state = carry
                    updates, state = opt.update(jax.grad(f)(w), state, w)
                    return (optax.apply_updates(w, updates), state), None

                (w, _), _ = jax.lax.scan(step, (w0, opt.init(w0)), None, length=steps)
                return val_loss(w)

            return jax.jit(jax.grad(hyper))

        contenders[f"jax.grad through {steps} optax.lbfgs steps (lax.scan, no line search)"] = (
            make_unrolled_optax, make_unrolled_optax())
    grads = {name: float(fn(log_lam)) for name, (_, fn) in contenders.items()}
    warm = race({name: (lambda fn=fn: jax.block_until_ready(fn(log_lam))) for name, (_, fn) in contenders.items()},
                repeats)
    base = warm["jax.grad through minimize (implicit)"]
    print()
    print(f"| hypergradient (logistic 400x50, validation 200; {steps} iterations) | warm median (ms) | "
          "ratio to implicit | first call incl. compile (s) | d val / d log(lam) | relative difference |")
    print("|---|---|---|---|---|---|")
    for name, (make, _) in contenders.items():
        first = first_call(make, log_lam, max(2, repeats // 3))
        difference = abs(grads[name] - float(grad_implicit)) / abs(float(grad_implicit))
        print(f"| {name} | {warm[name] * 1e3:.2f} | {warm[name] / base:.2f} | {first:.2f} | "
              f"{grads[name]:.6g} | {difference:.1e} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="2 repeats, small problems only")
    parser.add_argument("--table", choices=("all", "solve", "implicit", "compat", "steps", "bounds"), default="all")
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else args.repeats
    if args.table == "bounds":  # L-BFGS-B against scipy and jaxopt: lbfgsb_bench.py's table
        import lbfgsb_bench

        lbfgsb_bench.main(["--repeats", str(repeats)])
        return
    try:
        import torch

        torch.set_num_threads(2)
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    import optax
    import scipy

    print(f"# {platform.processor() or platform.machine()}, {jax.device_count()} jax device(s), "
          f"jax {jax.__version__}, optax {optax.__version__}, scipy {scipy.__version__}, torch {torch_version}")
    if args.table in ("compat", "steps"):
        compat_table(args, repeats, steps=1 if args.table == "compat" else STEPS)
        return
    if args.table != "implicit":
        solve_table(args, repeats, torch_version)
    if args.table != "solve":
        implicit_table(repeats)


STEPS = 25
"""Steps per run in the ``steps`` table."""


def compat_table(args, repeats, steps=1):
    """torch's LBFGS.step(closure) against torch_compat's, timed in rounds of one run of
    each, the two orders in turn, after a first run of each (torch_compat's, its compiles
    included, is printed apart). The ratio is the median of the rounds' ratios.

    With ``steps=1`` (the ``compat`` table) a run is one step with ``OPTIONS``. Else (the
    ``steps`` table) it is ``steps`` steps of one fresh optimizer with torch's defaults
    (``history_size=100``, ``max_iter=20``) and the strong-Wolfe search: the state is read
    in and written out at every step, its history lists growing to 100 pairs. The table
    then also times one optimizer of each, stepped ``steps`` times, step by step."""
    options = OPTIONS if steps == 1 else dict(line_search_fn="strong_wolfe")
    # With several steps, one optimizer of each, stepped ``steps`` times, is also timed
    # step by step: on a problem solved by then (logistic), the cost of a step itself.
    later = f"| a step after the {steps}th: torch, compat (ms) | ratio " if steps > 1 else ""
    print(f"| problem ({steps} step{'s' * (steps > 1)}) | torch.optim.LBFGS (ms) | torch_compat.optim.LBFGS (ms) | "
          f"ratio to torch {later}| torch_compat's first run (s) | iterations (torch, compat) |")
    print("|---|---|---|---|" + "---|---|" * bool(later) + "---|---|")
    for name, f, x0_np, spec in problems():
        if (args.quick and name.endswith("1000")) or (steps > 1 and name == "rosenbrock-2"):
            continue
        solvers = {"torch": torch_setup(spec, x0_np, options, steps), "compat": compat_setup(f, x0_np, options, steps)}
        start = time.perf_counter()
        iterations = {"compat": int(solvers["compat"]())}
        first = time.perf_counter() - start
        iterations["torch"] = int(solvers["torch"]())
        times, ratio = _paired(solvers, repeats)
        row = f"| {name} | {times['torch'] * 1e3:.1f} | {times['compat'] * 1e3:.1f} | {ratio:.2f} "
        if later:
            each, ratio = _paired({"torch": stepper(lambda: torch_problem(spec, x0_np, options), steps),
                                   "compat": stepper(lambda: compat_problem(compat_loss(f), x0_np, options), steps)},
                                  20 * repeats)
            row += f"| {each['torch'] * 1e3:.2f}, {each['compat'] * 1e3:.2f} | {ratio:.2f} "
        print(row + f"| {first:.2f} | {iterations['torch']}, {iterations['compat']} |")


def _paired(runners, repeats):
    """``(median seconds per runner, median of the rounds' compat / torch ratios)`` over
    ``max(repeats, 10)`` rounds (``_timing.rounds``)."""
    from _timing import rounds

    samples = rounds(runners, max(repeats, 10))
    ratio = statistics.median(c / t for c, t in zip(samples["compat"], samples["torch"]))
    return {name: statistics.median(times) for name, times in samples.items()}, ratio


def solve_table(args, repeats, torch_version):
    print("| problem | solver | warm median (ms) | ratio to gradxform | first call incl. compile (s) | iterations |")
    print("|---|---|---|---|---|---|")
    for name, f, x0_np, spec in problems():
        if args.quick and name.endswith("1000"):
            continue
        x0 = jnp.asarray(x0_np)
        ours = gradxform_solver(f)
        jax.block_until_ready(ours(x0))
        warm, result = timed(lambda: jax.block_until_ready(ours(x0)), repeats)
        first = first_call(lambda: gradxform_solver(f), x0, max(2, repeats // 3))
        rows = [("gradxform.minimize", warm, first, int(result.n_iter))]
        theirs = optax_solver(f)
        jax.block_until_ready(theirs(x0))
        t, (_, count) = timed(lambda: jax.block_until_ready(theirs(x0)), repeats)
        rows.append(("optax.lbfgs (while_loop)", t, first_call(lambda: optax_solver(f), x0, max(2, repeats // 3)), int(count)))
        solve = scipy_solve(f, x0_np)
        t, res = timed(solve, repeats)
        rows.append(("scipy L-BFGS-B (jax grads)", t, None, int(res.nit)))
        if torch_version:
            solve = torch_setup(spec, x0_np)
            t, n = timed(solve, max(2, repeats // 2))
            rows.append(("torch.optim.LBFGS", t, None, int(n)))
            solve = compat_setup(f, x0_np)
            solve()
            t, n = timed(solve, max(2, repeats // 2))
            rows.append(("torch_compat.optim.LBFGS", t, None, int(n)))
        for solver, t, first_t, iters in rows:
            first_text = "" if first_t is None else f"{first_t:.2f}"
            print(f"| {name} | {solver} | {t * 1e3:.2f} | {t / warm:.2f} | {first_text} | {iters} |")


if __name__ == "__main__":
    main()

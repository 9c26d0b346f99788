"""Smooth test problems for L-BFGS, written twice: in JAX and in torch (same formulas).

Each problem has float64 data made from a seed, a starting point as a dict of numpy
arrays (ordered as ``jax.tree`` orders dict keys), and the objective in both frameworks.
"""

from __future__ import annotations

import numpy as np


def make(name: str, seed: int):
    rng = np.random.default_rng(seed)
    if name == "logistic":
        a = rng.standard_normal((40, 6))
        b = (rng.random(40) > 0.5).astype(np.float64)
        x0 = {"b": np.zeros(()), "w": 0.1 * rng.standard_normal(6)}
        return dict(a=a, b=b), x0
    if name == "quadratic":
        m = rng.standard_normal((8, 8))
        q = m @ m.T / 8 + 0.1 * np.eye(8)
        c = rng.standard_normal(8)
        x0 = {"x": rng.standard_normal(8)}
        return dict(q=q, c=c), x0
    if name == "curve_fit":
        t = np.linspace(0, 4, 30)
        y = 2.0 * np.exp(-1.3 * t) + 0.5 + 0.01 * rng.standard_normal(30)
        x0 = {"amplitude": np.array(1.0), "offset": np.array(0.0), "rate": np.array(0.5)}
        return dict(t=t, y=y), x0
    raise ValueError(name)


NAMES = ("logistic", "quadratic", "curve_fit")


def jax_objective(name):
    import jax.numpy as jnp

    if name == "logistic":
        def f(p, a, b):
            z = a @ p["w"] + p["b"]
            return jnp.mean(jnp.logaddexp(0.0, z) - b * z) + 0.01 * jnp.sum(p["w"] ** 2)
    elif name == "quadratic":
        def f(p, q, c):
            return 0.5 * p["x"] @ (q @ p["x"]) - c @ p["x"]
    else:
        def f(p, t, y):
            r = p["amplitude"] * jnp.exp(-p["rate"] * t) + p["offset"] - y
            return 0.5 * jnp.sum(r**2)
    return f


def torch_objective(name):
    import torch

    if name == "logistic":
        def f(p, a, b):
            z = a @ p["w"] + p["b"]
            return torch.mean(torch.logaddexp(torch.zeros((), dtype=z.dtype), z) - b * z) + 0.01 * torch.sum(p["w"] ** 2)
    elif name == "quadratic":
        def f(p, q, c):
            return 0.5 * p["x"] @ (q @ p["x"]) - c @ p["x"]
    else:
        def f(p, t, y):
            r = p["amplitude"] * torch.exp(-p["rate"] * t) + p["offset"] - y
            return 0.5 * torch.sum(r**2)
    return f


# Options covering both line-search modes, small histories, budgets and lr.
OPTIONS = (
    dict(),
    dict(line_search_fn="strong_wolfe"),
    dict(max_iter=5, history_size=3),
    dict(max_iter=7, history_size=2, line_search_fn="strong_wolfe"),
    dict(lr=0.5, max_iter=10, max_eval=11),
    dict(lr=0.8, tolerance_change=1e-6, line_search_fn="strong_wolfe"),
)

STEPS = 3  # consecutive step() calls, so state carries over


def run_torch(name, seed, options):
    """Runs torch.optim.LBFGS; returns per-step params, losses, n_iter and func_evals."""
    import torch

    data, x0 = make(name, seed)
    params = {k: torch.tensor(v, requires_grad=True) for k, v in x0.items()}
    tdata = {k: torch.tensor(v) for k, v in data.items()}
    f = torch_objective(name)
    opt = torch.optim.LBFGS(list(params.values()), **options)

    def closure():
        opt.zero_grad()
        loss = f(params, **tdata)
        loss.backward()
        return loss

    out = {"params": [], "loss": [], "n_iter": [], "func_evals": []}
    for _ in range(STEPS):
        loss = opt.step(closure)
        state = opt.state[next(iter(params.values()))]
        out["params"].append({k: v.detach().numpy().copy() for k, v in params.items()})
        out["loss"].append(float(loss))
        out["n_iter"].append(state["n_iter"])
        out["func_evals"].append(state["func_evals"])
    return out

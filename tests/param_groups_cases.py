"""Param-group parity cases: one torch optimizer with three param groups, for each optimizer.

numpy only (no torch, no jax), shared by ``make_golden_param_groups.py`` (which runs
torch) and ``test_param_groups.py`` (which runs gradxform against the golden file and,
where torch is installed, against torch live).

Each case has five parameters, named by their paths, and three torch param groups:

* group 0: the parameters a *predicate* picks (non-muon: those of fewer than 2
  dimensions; Muon, which takes matrices only: those whose name ends in ``v`` or ``u``),
  with half the learning rate and one more option changed (:data:`GROUP0_OPTIONS`);
* group 1: the parameters whose path matches the *regex* ``head/.*`` and that group 0
  did not take (the first match wins), with twice the learning rate;
* group 2: the rest, with the defaults.

The membership of each group is written out below by hand (:data:`MEMBERS`), not
computed, so the test checks gradxform's matching rules against it.
"""

from __future__ import annotations

import numpy as np

STEPS = 6
OPTIMIZERS = (
    "sgd asgd rprop adagrad adadelta rmsprop adam adamw adamax sparse_adam nadam radam adafactor muon"
).split()
TORCH_NAMES = dict(
    zip(
        OPTIMIZERS,
        "SGD ASGD Rprop Adagrad Adadelta RMSprop Adam AdamW Adamax SparseAdam NAdam RAdam Adafactor Muon".split(),
    )
)

SHAPES = {"body/b": (4,), "body/w": (3, 4), "head/b": (2,), "head/w": (4, 2), "scale": ()}
MUON_SHAPES = {"body/v": (4, 4), "body/w": (3, 4), "head/u": (2, 3), "head/w": (4, 2), "extra": (5, 3)}

MEMBERS = {
    # ndim < 2 -> group 0; then head/.* -> group 1 (head/b is already in group 0); the rest.
    "default": (("body/b", "head/b", "scale"), ("head/w",), ("body/w",)),
    # name ends in v or u -> group 0 (head/u included); then head/.* -> head/w; the rest.
    "muon": (("body/v", "head/u"), ("head/w",), ("body/w", "extra")),
}

# The defaults (torch spelling), chosen to switch on each optimizer's features.
DEFAULTS = {
    "sgd": dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
    "asgd": dict(lr=0.01, lambd=1e-4, alpha=0.75, t0=3.0, weight_decay=0.01),
    "rprop": dict(lr=0.01, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0)),
    "adagrad": dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1, eps=1e-10),
    "adadelta": dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.01),
    "rmsprop": dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.01, momentum=0.5, centered=True),
    "adam": dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, amsgrad=True),
    "adamw": dict(lr=0.01, weight_decay=0.1),
    "adamax": dict(lr=0.02, eps=1e-8, weight_decay=0.01),
    "sparse_adam": dict(lr=0.01),
    "nadam": dict(lr=0.01, weight_decay=0.01, momentum_decay=4e-3),
    "radam": dict(lr=0.01, weight_decay=0.01),
    "adafactor": dict(lr=0.01, beta2_decay=-0.8, d=1.0, weight_decay=0.01),
    "muon": dict(lr=0.02, weight_decay=0.1, momentum=0.95),
}

# Group 0's options besides its learning rate: a different value of a float option, and
# where the optimizer has one, a feature switched off (momentum 0: no buffer) or a flag.
GROUP0_OPTIONS = {
    "sgd": dict(momentum=0.0),
    "asgd": dict(lambd=1e-3, t0=1.0),
    "rprop": dict(etas=(0.4, 1.3)),
    # Not initial_accumulator_value: torch 2.13's Adagrad ignores a group's own value (it
    # fills every "sum" with the constructor's), gradxform honours it (see the docs page).
    "adagrad": dict(lr_decay=0.0, eps=1e-8),
    "adadelta": dict(rho=0.8),
    "rmsprop": dict(momentum=0.0, alpha=0.9),
    "adam": dict(betas=(0.8, 0.99), amsgrad=False),
    "adamw": dict(weight_decay=0.0),
    "adamax": dict(eps=1e-6, betas=(0.8, 0.99)),
    "sparse_adam": dict(betas=(0.8, 0.99)),
    "nadam": dict(momentum_decay=3e-3, decoupled_weight_decay=True),
    "radam": dict(weight_decay=0.05, decoupled_weight_decay=True),
    "adafactor": dict(beta2_decay=-0.7, weight_decay=0.0),
    "muon": dict(momentum=0.9, nesterov=False),
}

COEF = 0.75  # the gradient is COEF * p + noise_t, each side on its own parameters


def shapes(name: str) -> dict:
    return MUON_SHAPES if name == "muon" else SHAPES


def members(name: str) -> tuple:
    return MEMBERS["muon" if name == "muon" else "default"]


def torch_groups(name: str) -> list[dict]:
    """The three groups' options (torch spelling), without ``params``."""
    lr = DEFAULTS[name]["lr"]
    return [{"lr": lr * 0.5, **GROUP0_OPTIONS[name]}, {"lr": lr * 2.0}, {}]


def gradxform_options(torch_options: dict) -> dict:
    """torch's option names -> gradxform's (``lr`` is ``learning_rate``)."""
    out = dict(torch_options)
    if "lr" in out:
        out["learning_rate"] = out.pop("lr")
    return out


def data(name: str) -> tuple[dict, dict]:
    """``(params0, noise)``: ``{path: array}`` and ``{path: [STEPS, *shape]}``, float64."""
    rng = np.random.default_rng([sum(map(ord, name)), 17])
    params0 = {path: rng.standard_normal(shape) for path, shape in shapes(name).items()}
    noise = {path: 0.5 * rng.standard_normal((STEPS,) + shape) for path, shape in shapes(name).items()}
    return params0, noise


def gradient(p, noise_t):
    """The gradient recipe, for numpy, torch or jax arrays alike."""
    return COEF * p + noise_t


def run_torch(name: str, params0: dict, noise: dict) -> dict:
    """torch's trajectory: ``{path: [STEPS, *shape]}``, the params after every step.

    One ``torch.optim.<Name>`` with the three groups of :data:`MEMBERS` (the
    single-tensor implementation, ``foreach=False`` where it exists); SparseAdam gets
    the gradient as a sparse tensor (every entry present).
    """
    import torch

    tensors = {path: torch.tensor(p, requires_grad=True) for path, p in params0.items()}
    groups = [
        {"params": [tensors[path] for path in paths], **options}
        for paths, options in zip(members(name), torch_groups(name))
    ]
    kwargs = dict(DEFAULTS[name])
    if name not in ("sparse_adam", "muon"):
        kwargs["foreach"] = False
    optimizer = getattr(torch.optim, TORCH_NAMES[name])(groups, **kwargs)
    trajectory = {path: np.empty((STEPS,) + np.shape(p)) for path, p in params0.items()}
    for t in range(STEPS):
        with torch.no_grad():
            for path, p in tensors.items():
                g = gradient(p, torch.from_numpy(np.array(noise[path][t])))
                p.grad = g.to_sparse() if name == "sparse_adam" else g
        optimizer.step()
        for path, p in tensors.items():
            trajectory[path][t] = p.detach().numpy()
    return trajectory


# ---------------------------------------------------------------- golden packing
# One file for all optimizers; per optimizer three members, the leaves flattened and
# concatenated in sorted path order: "<name>/p0" [n], "<name>/noise" and "<name>/traj"
# [STEPS, n].


def pack(tree: dict, lead: int = 0) -> np.ndarray:
    return np.concatenate(
        [np.asarray(tree[path]).reshape(np.shape(tree[path])[:lead] + (-1,)) for path in sorted(tree)], axis=-1
    )


def unpack(flat: np.ndarray, name: str, lead: int = 0) -> dict:
    out, start = {}, 0
    for path in sorted(shapes(name)):
        shape = shapes(name)[path]
        size = int(np.prod(shape, dtype=np.int64))
        out[path] = flat[..., start : start + size].reshape(flat.shape[:lead] + shape)
        start += size
    if start != flat.shape[-1]:
        raise ValueError("packed size does not match the shapes")
    return out

"""Deterministic parity cases: gradxform against torch 2.13's ``torch.optim``.

A *case* is everything needed to run one optimizer for :data:`STEPS` steps on both
sides: hyperparameters (in torch's spelling and in gradxform's), parameter shapes, the
dtype, and the gradient recipe. Everything is drawn from ``numpy.random.default_rng``
seeded by ``(crc32(name), seed, stream)``, so a ``(name, seed)`` pair always means the
same case. numpy only (and the names from ``gradxform.registry``): this module imports no torch.

Gradient recipe (the same formula on both sides, each side applying it to its *own*
current parameters, in the parameter dtype, so any divergence shows and compounds)::

    g_t = (coef * p_t + noise_t) * mask_t

``coef`` is a positive scalar that is exact in float32 and bfloat16 (a multiple of
1/64), ``noise_t`` a random array per step and leaf, and ``mask_t`` (SparseAdam only,
else absent) zeroes whole rows and single entries, as an embedding's gradient would
look; torch gets that gradient as ``dense.to_sparse()``.

Hyperparameter choices are recorded in :attr:`Case.choices` as ``label -> [index,
n_options]`` so that a set of cases can be checked to cover every option of every flag
(:func:`missing_coverage`), e.g. ``maximize`` both ways, ``weight_decay`` zero and
positive, ``amsgrad``, ``nesterov``, ``centered``, Adafactor's ``eps1=None`` ...
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from typing import Any, Callable

import numpy as np

from gradxform.registry import FIRST_ORDER, SPECS

STEPS = 30
"""Steps per trajectory."""

OPTIMIZERS = list(FIRST_ORDER)

TORCH_NAMES = {name: SPECS[name].torch_name for name in OPTIMIZERS}

NO_COMPLEX = frozenset(name for name in OPTIMIZERS if SPECS[name].complex_message)
"""Optimizers for which torch 2.13 refuses complex parameters."""

REAL_DTYPES = ("float64", "float32")
COMPLEX_DTYPES = ("complex128", "complex64")

# torch's implementation flags with no gradxform meaning; the torch side passes
# ``foreach=False`` where the constructor has it, to pin the single-tensor reference.
TORCH_HAS_FOREACH = frozenset(name for name in OPTIMIZERS if "foreach" in (o.name for o in SPECS[name].options))


def dtypes_for(name: str) -> tuple[str, ...]:
    """The parameter dtypes torch supports for optimizer ``name``."""
    return REAL_DTYPES if name in NO_COMPLEX else REAL_DTYPES + COMPLEX_DTYPES


# --------------------------------------------------------------------------- drawing


class Draw:
    """A seeded random source that records its discrete choices."""

    def __init__(self, *key: int):
        self.rng = np.random.default_rng(list(key))
        self.choices: dict[str, list[int]] = {}

    def choice(self, label: str, options: list) -> Any:
        """One of ``options`` (a callable option is called to draw its value)."""
        i = int(self.rng.integers(len(options)))
        self.choices[label] = [i, len(options)]
        value = options[i]
        return value() if callable(value) else value

    def flag(self, label: str) -> bool:
        return bool(self.choice(label, [False, True]))

    def uniform(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def loguniform(self, lo: float, hi: float) -> float:
        return float(np.exp(self.rng.uniform(np.log(lo), np.log(hi))))

    def integer(self, lo: int, hi: int) -> int:
        """An int in ``[lo, hi]``."""
        return int(self.rng.integers(lo, hi + 1))


def _key(name: str) -> int:
    return zlib.crc32(name.encode())


# ----------------------------------------------------------------- hyperparameters
# Each function draws torch keyword arguments (``lr`` included) covering every flag of
# ``torch.optim.<Name>.__init__`` in torch 2.13, within valid ranges.


def _weight_decay(d: Draw, hi: float = 0.3) -> float:
    return d.choice("weight_decay", [0.0, lambda: d.loguniform(1e-3, hi)])


def _betas(d: Draw, b2_lo: float = 0.9, b2_hi: float = 0.9999) -> tuple[float, float]:
    b1 = d.choice("beta1", [0.0, lambda: d.uniform(0.5, 0.95)])
    return (b1, d.uniform(b2_lo, b2_hi))


def _eps(d: Draw, default: float, lo: float = 1e-10, hi: float = 1e-3) -> float:
    return d.choice("eps", [default, lambda: d.loguniform(lo, hi)])


def _sgd(d: Draw) -> dict:
    nesterov = d.flag("nesterov")
    if nesterov:  # torch: Nesterov needs momentum > 0 and dampening == 0
        momentum, dampening = d.uniform(0.3, 0.95), 0.0
    else:
        momentum = d.choice("momentum", [0.0, lambda: d.uniform(0.3, 0.95)])
        dampening = d.choice("dampening", [0.0, lambda: d.uniform(0.05, 0.9)])
    return dict(
        lr=d.loguniform(1e-3, 0.1),
        momentum=momentum,
        dampening=dampening,
        weight_decay=_weight_decay(d),
        nesterov=nesterov,
        maximize=d.flag("maximize"),
    )


def _asgd(d: Draw) -> dict:
    return dict(
        lr=d.loguniform(1e-3, 0.05),
        lambd=d.loguniform(1e-5, 0.3),
        alpha=d.uniform(0.5, 1.0),
        # small t0 so that averaging (mu < 1) starts within the trajectory
        t0=d.choice(
            "t0", [lambda: float(d.integer(0, 8)), lambda: d.uniform(0.0, 12.0), 1e6]
        ),
        weight_decay=_weight_decay(d),
        maximize=d.flag("maximize"),
    )


def _rprop(d: Draw) -> dict:
    return dict(
        lr=d.loguniform(1e-3, 0.1),
        etas=(d.uniform(0.2, 0.8), d.uniform(1.05, 1.6)),
        step_sizes=(
            d.choice("step_size_min", [1e-6, lambda: d.loguniform(1e-5, 2e-3)]),
            d.choice("step_size_max", [50.0, lambda: d.uniform(0.01, 0.15)]),
        ),
        maximize=d.flag("maximize"),
    )


def _adagrad(d: Draw) -> dict:
    return dict(
        lr=d.loguniform(1e-3, 0.3),
        lr_decay=d.choice("lr_decay", [0.0, lambda: d.loguniform(1e-3, 0.3)]),
        weight_decay=_weight_decay(d),
        initial_accumulator_value=d.choice(
            "initial_accumulator_value", [0.0, lambda: d.uniform(0.01, 1.0)]
        ),
        eps=_eps(d, 1e-10, 1e-10, 1e-2),
        maximize=d.flag("maximize"),
    )


def _adadelta(d: Draw) -> dict:
    return dict(
        lr=d.choice("lr", [1.0, lambda: d.uniform(0.1, 2.0)]),
        rho=d.uniform(0.5, 0.99),
        eps=_eps(d, 1e-6, 1e-8, 1e-2),
        weight_decay=_weight_decay(d),
        maximize=d.flag("maximize"),
    )


def _rmsprop(d: Draw) -> dict:
    return dict(
        lr=d.loguniform(1e-4, 1e-2),
        alpha=d.uniform(0.8, 0.999),
        eps=_eps(d, 1e-8),
        weight_decay=_weight_decay(d),
        momentum=d.choice("momentum", [0.0, lambda: d.uniform(0.3, 0.95)]),
        centered=d.flag("centered"),
        maximize=d.flag("maximize"),
    )


def _adam(d: Draw) -> dict:
    return dict(
        lr=d.loguniform(1e-3, 0.1),
        betas=_betas(d),
        eps=_eps(d, 1e-8),
        weight_decay=_weight_decay(d),
        amsgrad=d.flag("amsgrad"),
        maximize=d.flag("maximize"),
        decoupled_weight_decay=d.flag("decoupled_weight_decay"),
    )


def _adamw(d: Draw) -> dict:
    return dict(
        lr=d.loguniform(1e-3, 0.1),
        betas=_betas(d),
        eps=_eps(d, 1e-8),
        weight_decay=d.choice("weight_decay", [0.0, 1e-2, lambda: d.uniform(0.05, 0.5)]),
        amsgrad=d.flag("amsgrad"),
        maximize=d.flag("maximize"),
    )


def _adamax(d: Draw) -> dict:
    return dict(
        lr=d.loguniform(1e-3, 0.1),
        betas=_betas(d),
        eps=_eps(d, 1e-8),
        weight_decay=_weight_decay(d),
        maximize=d.flag("maximize"),
    )


def _sparse_adam(d: Draw) -> dict:
    return dict(
        lr=d.loguniform(1e-3, 0.1),
        betas=_betas(d),
        eps=_eps(d, 1e-8),
        maximize=d.flag("maximize"),
    )


def _nadam(d: Draw) -> dict:
    return dict(
        lr=d.loguniform(1e-3, 0.1),
        betas=_betas(d),
        eps=_eps(d, 1e-8),
        weight_decay=_weight_decay(d),
        momentum_decay=d.choice("momentum_decay", [0.004, lambda: d.loguniform(1e-3, 0.1)]),
        decoupled_weight_decay=d.flag("decoupled_weight_decay"),
        maximize=d.flag("maximize"),
    )


def _radam(d: Draw) -> dict:
    # beta2 in [0.9, 0.999]: rho_inf >= 19, so both the unrectified first steps and the
    # rectified ones (rho_t > 5) happen within 30 steps.
    return dict(
        lr=d.loguniform(1e-3, 0.1),
        betas=_betas(d, 0.9, 0.999),
        eps=_eps(d, 1e-8),
        weight_decay=_weight_decay(d),
        decoupled_weight_decay=d.flag("decoupled_weight_decay"),
        maximize=d.flag("maximize"),
    )


def _adafactor(d: Draw) -> dict:
    # rho_t = min(lr, 1/sqrt(t)): a large lr makes the 1/sqrt(t) branch win after a few
    # steps; eps2 large makes alpha = max(eps2, rms(p)) * rho_t take the eps2 branch.
    return dict(
        lr=d.choice("lr", [lambda: d.loguniform(0.005, 0.15), lambda: d.uniform(0.25, 0.6)]),
        beta2_decay=d.choice("beta2_decay", [-0.8, lambda: d.uniform(-1.0, -0.5)]),
        eps=(
            d.choice("eps1", [None, lambda: d.loguniform(1e-30, 1e-3)]),
            d.choice("eps2", [1e-3, lambda: d.loguniform(1e-5, 1e-2), lambda: d.uniform(1.5, 3.0)]),
        ),
        d=d.choice("d", [1.0, lambda: d.uniform(1.0, 3.0)]),  # torch: d >= 1
        weight_decay=_weight_decay(d),
        maximize=d.flag("maximize"),
    )


# Newton–Schulz coefficient sets; each has p(1) = a + b + c ~ 1 so iterations stay bounded.
NS_COEFFICIENTS = [
    (3.4445, -4.775, 2.0315),  # torch's default
    (2.0, -1.5, 0.5),
    (15 / 8, -10 / 8, 3 / 8),
    (3.0, -3.2, 1.2),
]


def _muon(d: Draw) -> dict:
    return dict(
        lr=d.loguniform(1e-3, 0.05),
        weight_decay=d.choice("weight_decay", [0.0, 0.1, lambda: d.uniform(0.01, 0.3)]),
        momentum=d.choice("momentum", [0.0, 0.95, lambda: d.uniform(0.5, 0.99)]),
        nesterov=d.flag("nesterov"),
        ns_coefficients=d.choice("ns_coefficients", NS_COEFFICIENTS),
        eps=d.choice("eps", [1e-7, lambda: d.loguniform(1e-9, 1e-5)]),
        ns_steps=d.choice("ns_steps", [5, 1, 2, lambda: d.integer(3, 7)]),
        adjust_lr_fn=d.choice("adjust_lr_fn", [None, "original", "match_rms_adamw"]),
    )


_DRAWERS: dict[str, Callable[[Draw], dict]] = {
    "sgd": _sgd,
    "asgd": _asgd,
    "rprop": _rprop,
    "adagrad": _adagrad,
    "adadelta": _adadelta,
    "rmsprop": _rmsprop,
    "adam": _adam,
    "adamw": _adamw,
    "adamax": _adamax,
    "sparse_adam": _sparse_adam,
    "nadam": _nadam,
    "radam": _radam,
    "adafactor": _adafactor,
    "muon": _muon,
}


def to_gradxform_kwargs(torch_kwargs: dict) -> dict:
    """torch keyword arguments -> gradxform's: ``lr`` is spelled ``learning_rate``."""
    kwargs = dict(torch_kwargs)
    kwargs["learning_rate"] = kwargs.pop("lr")
    for flag in ("foreach", "fused", "capturable", "differentiable"):
        kwargs.pop(flag, None)
    return kwargs


def _draw_hyperparams(name: str, seed: int) -> tuple[dict, dict, dict]:
    d = Draw(_key(name), seed, 0)
    torch_kwargs = _DRAWERS[name](d)
    return torch_kwargs, to_gradxform_kwargs(torch_kwargs), d.choices


def _make_hyperparams_fn(name: str) -> Callable[[int], tuple[dict, dict]]:
    def hyperparams(seed: int) -> tuple[dict, dict]:
        torch_kwargs, gx_kwargs, _ = _draw_hyperparams(name, seed)
        return torch_kwargs, gx_kwargs

    hyperparams.__name__ = f"{name}_hyperparams"
    hyperparams.__doc__ = f"seed -> (torch_kwargs, gradxform_kwargs) for {TORCH_NAMES[name]}."
    return hyperparams


HYPERPARAMS: dict[str, Callable[[int], tuple[dict, dict]]] = {
    name: _make_hyperparams_fn(name) for name in OPTIMIZERS
}
"""``HYPERPARAMS[name](seed) -> (torch_kwargs, gradxform_kwargs)``."""


# -------------------------------------------------------------------------- cases


@dataclasses.dataclass(frozen=True)
class Case:
    """One parity scenario. See the module docstring for the gradient recipe.

    ``groups`` is ``None`` for a single torch param group / one gradxform transform, or a
    tuple of ``(leaf_indices, lr)``: one torch optimizer with one param group per entry
    (each with its own ``lr``), against one gradxform transform per entry.
    """

    name: str
    seed: int
    torch_kwargs: dict
    gx_kwargs: dict
    dtype: str
    shapes: tuple
    coef: float
    noise_scale: float
    steps: int = STEPS
    sparse: bool = False
    groups: tuple | None = None
    choices: dict = dataclasses.field(default_factory=dict)

    @property
    def id(self) -> str:
        tag = "-groups" if self.groups else ""
        return f"{self.name}-seed{self.seed}-{self.dtype}{tag}"

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        return json.dumps(data)

    @staticmethod
    def from_json(text: str) -> "Case":
        data = json.loads(text)
        data["shapes"] = tuple(tuple(s) for s in data["shapes"])
        data["torch_kwargs"] = detuple(data["torch_kwargs"])
        data["gx_kwargs"] = detuple(data["gx_kwargs"])
        if data.get("groups") is not None:
            data["groups"] = tuple((tuple(idx), lr) for idx, lr in data["groups"])
        return Case(**data)


def detuple(kwargs: dict) -> dict:
    """JSON lists back to tuples (``betas``, ``etas``, ``eps``, ``ns_coefficients``)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def _shapes(name: str, rng: np.random.Generator) -> tuple:
    n = lambda lo, hi: int(rng.integers(lo, hi + 1))  # noqa: E731
    if name == "muon":  # 2-D only: one tall, one wide, one square-ish
        r = n(2, 5)
        shapes = [(r + n(1, 4), r), (r, r + n(1, 4)), (n(1, 5), n(1, 5))]
    else:  # 0-d, 1-d, 2-d, 3-d; sizes 1 included (Adafactor's factored axes)
        shapes = [(), (n(1, 5),), (n(1, 4), n(1, 4)), (n(1, 3), n(1, 3), n(2, 4))]
    return tuple(shapes)


def make_case(
    name: str, seed: int, *, dtype: str | None = None, groups: bool = False, steps: int = STEPS
) -> Case:
    """The case for ``(name, seed)``; ``dtype`` overrides the drawn dtype."""
    torch_kwargs, gx_kwargs, choices = _draw_hyperparams(name, seed)
    d = Draw(_key(name), seed, 1)
    drawn_dtype = d.choice("dtype", list(dtypes_for(name)))
    choices.update(d.choices)
    if dtype is None:
        dtype = drawn_dtype
    if dtype not in dtypes_for(name):
        raise ValueError(f"{name} does not support {dtype}")
    choices["dtype"] = [list(dtypes_for(name)).index(dtype), len(dtypes_for(name))]
    shapes = _shapes(name, d.rng)
    coef = int(d.rng.integers(8, 129)) / 64.0  # exact in bfloat16: 0.125 .. 2
    noise_scale = d.loguniform(0.05, 3.0)
    group_spec = None
    if groups:
        # two param groups with different lr; the second group gets the other leaves
        lr = torch_kwargs["lr"]
        split = int(d.rng.integers(1, len(shapes)))
        group_spec = (
            (tuple(range(split)), lr),
            (tuple(range(split, len(shapes))), lr * d.choice("lr_ratio", [0.1, 3.0])),
        )
    return Case(
        name=name,
        seed=seed,
        torch_kwargs=torch_kwargs,
        gx_kwargs=gx_kwargs,
        dtype=dtype,
        shapes=shapes,
        coef=coef,
        noise_scale=noise_scale,
        steps=steps,
        sparse=name == "sparse_adam",
        groups=group_spec,
        choices=choices,
    )


def _random(rng: np.random.Generator, shape, dtype: str, scale: float = 1.0) -> np.ndarray:
    x = scale * rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * scale * rng.standard_normal(shape)
    return np.asarray(x, dtype=dtype)


def initial_params(case: Case) -> list[np.ndarray]:
    rng = np.random.default_rng([_key(case.name), case.seed, 2])
    return [_random(rng, s, case.dtype) for s in case.shapes]


def noises(case: Case) -> list[np.ndarray]:
    """Per leaf, ``[steps, *shape]`` noise in the param dtype."""
    rng = np.random.default_rng([_key(case.name), case.seed, 3])
    return [_random(rng, (case.steps,) + s, case.dtype, case.noise_scale) for s in case.shapes]


def masks(case: Case) -> list[np.ndarray] | None:
    """Per leaf, ``[steps, *shape]`` 0/1 masks in the param dtype (SparseAdam), else None.

    Rows (first axis) are dropped with probability 0.4 and single entries with 0.1; leaf
    0 gets no gradient at all at step 2, so torch's empty-gradient skip is exercised.
    """
    if not case.sparse:
        return None
    rng = np.random.default_rng([_key(case.name), case.seed, 4])
    out = []
    for j, s in enumerate(case.shapes):
        keep = rng.random((case.steps,) + s) >= 0.1
        if len(s):
            keep &= (rng.random((case.steps, s[0]) + (1,) * (len(s) - 1)) >= 0.4)
        if j == 0:
            keep[2] = False
        out.append(keep.astype(case.dtype))
    return out


def gradient(p, noise_t, coef: float, mask_t=None):
    """The gradient recipe, for numpy, torch or jax arrays alike."""
    g = coef * p + noise_t
    if mask_t is not None:
        g = g * mask_t
    return g


# ---------------------------------------------------------------------- coverage


def missing_coverage(cases: list[Case]) -> dict[str, list[int]]:
    """``label -> option indices never drawn`` over ``cases`` (one optimizer's)."""
    seen: dict[str, set[int]] = {}
    sizes: dict[str, int] = {}
    for case in cases:
        for label, (index, n) in case.choices.items():
            if label == "lr_ratio":
                continue
            seen.setdefault(label, set()).add(index)
            sizes[label] = n
    return {
        label: sorted(set(range(sizes[label])) - seen[label])
        for label in sizes
        if set(range(sizes[label])) - seen[label]
    }


def covering_seeds(name: str, minimum: int, start: int = 0, stop: int = 200) -> list[int]:
    """A small set of seeds in ``[start, stop)`` covering every option of every flag.

    Greedy set cover: repeatedly the seed whose case draws the most options not drawn
    yet (the lowest such seed on ties), until every option of every label (dtype
    included) is drawn; then the lowest unused seeds up to ``minimum``. Sorted.
    """
    cases = {seed: make_case(name, seed) for seed in range(start, stop)}
    options = lambda c: {(k, i) for k, (i, _) in c.choices.items() if k != "lr_ratio"}  # noqa: E731
    wanted = set()
    for case in cases.values():
        wanted |= {(k, i) for k, (_, n) in case.choices.items() if k != "lr_ratio" for i in range(n)}
    chosen: list[int] = []
    covered: set = set()
    while covered != wanted:
        seed = max(cases, key=lambda s: (len(options(cases[s]) - covered), -s))
        gain = options(cases[seed]) - covered
        if not gain:
            raise RuntimeError(f"seeds [{start}, {stop}) never draw {sorted(wanted - covered)} for {name}")
        chosen.append(seed)
        covered |= gain
    for seed in cases:
        if len(chosen) >= minimum:
            break
        if seed not in chosen:
            chosen.append(seed)
    return sorted(chosen)


# ---------------------------------------------------------------- golden packing


def pack(leaves: list[np.ndarray], lead: int = 0) -> np.ndarray:
    """Concatenates leaves, flattened past their first ``lead`` axes (fewer npz members)."""
    return np.concatenate(
        [np.asarray(x).reshape(np.shape(x)[:lead] + (-1,)) for x in leaves], axis=-1
    )


def unpack(flat: np.ndarray, shapes, lead: int = 0) -> list[np.ndarray]:
    """Inverse of :func:`pack`, given the leaves' shapes (without the lead axes)."""
    out, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape, dtype=np.int64))
        piece = flat[..., start : start + size]
        out.append(piece.reshape(flat.shape[:lead] + tuple(shape)))
        start += size
    if start != flat.shape[-1]:
        raise ValueError("packed array size does not match the shapes")
    return out


@dataclasses.dataclass
class GoldenCase:
    """One case of a golden file, unpacked."""

    case: Case
    params0: list
    noise: list
    masks: list | None
    trajectory: list
    state: list  # per leaf, {key: array}


def read_golden(path: str) -> tuple[dict, list[GoldenCase]]:
    """``(meta, cases)`` from a file written by ``make_golden.py``."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["__meta__"]))
        cases = []
        for i, entry in enumerate(meta["cases"]):
            case = Case.from_json(entry["case"])
            shapes = case.shapes
            masks = None
            if f"c{i}_mask" in data:
                masks = [m.astype(case.dtype) for m in unpack(data[f"c{i}_mask"], shapes, 1)]
            state: list[dict] = [{} for _ in shapes]
            for key, leaf_shapes in entry["state_shapes"].items():
                leaves = [j for j, s in enumerate(leaf_shapes) if s is not None]
                values = unpack(data[f"c{i}_state_{key}"], [leaf_shapes[j] for j in leaves])
                for j, v in zip(leaves, values):
                    state[j][key] = v
            cases.append(
                GoldenCase(
                    case=case,
                    params0=unpack(data[f"c{i}_p0"], shapes),
                    noise=unpack(data[f"c{i}_noise"], shapes, 1),
                    masks=masks,
                    trajectory=unpack(data[f"c{i}_traj"], shapes, 1),
                    state=state,
                )
            )
    return meta, cases


def read_golden_meta(path: str) -> dict:
    """Only the ``__meta__`` entry (cheap: for test collection)."""
    with np.load(path, allow_pickle=False) as data:
        return json.loads(str(data["__meta__"]))

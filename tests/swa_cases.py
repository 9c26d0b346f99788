"""``swa_utils`` scenarios, written once for torch and for torch_compat.

A scenario is ``run(backend) -> dict[str, np.ndarray]``. The backend builds models and
optimizers and brings the ``swa_utils`` module, so the same code runs torch 2.13's
``torch.optim.swa_utils`` (``make_golden_swa.py`` stores the results in
``tests/golden/swa_utils.npz``; ``test_swa_utils_live.py`` runs it live) and torch_compat's
(``test_swa_utils.py`` compares with the golden file).

AveragedModel scenarios feed a fixed sequence of model values (numpy RNG, seeded) to
``update_parameters`` and record, after each update, every entry of the averaged model's
``state_dict()`` (``n_averaged`` included) as float64. SWALR scenarios record each group's
``lr`` at every optimizer step. A scenario that expects an error records ``error``:
``"Type: message"``.
"""

from __future__ import annotations

import numpy as np

TORCH_VERSION_PREFIX = "2.13.0"
UPDATES = 6
STEPS = 16

# The model of the AveragedModel scenarios: name -> (shape, kind); "param", or "buffer".
# As a torch_compat tree: {"0": {"weight", "bias"}, "1": {"running_mean", "count"}};
# as a torch module: submodule "0" with two Parameters, submodule "1" with two buffers.
LAYOUT = {
    "0.weight": ((3, 4), "param"),
    "0.bias": ((3,), "param"),
    "1.running_mean": ((3,), "buffer"),
    "1.count": ((), "int_buffer"),
}


def model_values(seed: int, dtype) -> list[dict[str, np.ndarray]]:
    """The model's values before each update: ``UPDATES + 1`` dicts (the first is the
    initial model)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(UPDATES + 1):
        values = {}
        for name, (shape, kind) in LAYOUT.items():
            if kind == "int_buffer":
                values[name] = np.asarray(7 * k + int(rng.integers(0, 5)), dtype=np.int64)
            else:
                values[name] = rng.standard_normal(shape).astype(dtype)
        out.append(values)
    return out


class CompatBackend:
    name = "torch_compat"

    def __init__(self):
        import jax.numpy as jnp

        import torch_compat
        from torch_compat import optim
        from torch_compat.optim import lr_scheduler, swa_utils

        self.S, self.L, self.optim, self.jnp, self.tc = swa_utils, lr_scheduler, optim, jnp, torch_compat

    def model(self, values):
        tree: dict = {}
        for name, value in values.items():
            module, leaf = name.split(".")
            kind = LAYOUT[name][1]
            tree.setdefault(module, {})[leaf] = (
                self.tc.Parameter(self.jnp.asarray(value)) if kind == "param" else self.jnp.asarray(value)
            )
        return tree

    def set_values(self, model, values):
        """Writes ``values`` into the model; returns the model (a new tree for buffers)."""
        for name, value in values.items():
            module, leaf = name.split(".")
            if LAYOUT[name][1] == "param":
                model[module][leaf].data = self.jnp.asarray(value)
            else:
                model[module][leaf] = self.jnp.asarray(value)
        return model

    def parameter(self):
        return self.tc.Parameter(self.jnp.zeros(1))

    @staticmethod
    def numpy(value):
        return np.asarray(value)


class TorchBackend:
    name = "torch"

    def __init__(self):
        import torch
        from torch.optim import lr_scheduler, swa_utils

        self.S, self.L, self.optim, self.torch = swa_utils, lr_scheduler, torch.optim, torch

    def model(self, values):
        torch = self.torch
        root = torch.nn.Module()
        for name, value in values.items():
            module, leaf = name.split(".")
            if not hasattr(root, module):
                root.add_module(module, torch.nn.Module())
            sub = getattr(root, module)
            tensor = torch.as_tensor(np.array(value))
            if LAYOUT[name][1] == "param":
                sub.register_parameter(leaf, torch.nn.Parameter(tensor))
            else:
                sub.register_buffer(leaf, tensor)
        return root

    def set_values(self, model, values):
        torch = self.torch
        with torch.no_grad():
            for name, value in values.items():
                module, leaf = name.split(".")
                getattr(getattr(model, module), leaf).copy_(torch.as_tensor(np.array(value)))
        return model

    def parameter(self):
        return self.torch.nn.Parameter(self.torch.zeros(1))

    @staticmethod
    def numpy(value):
        return value.detach().numpy()


# -- AveragedModel ---------------------------------------------------------------------------------


def custom_avg_fn(averaged, current, num_averaged):
    """A user's own avg_fn, written with operators only (runs on tensors and arrays)."""
    return averaged + (current - averaged) * 0.25


def averaged(dtype, *, seed=0, use_buffers=False, avg=None):
    """``avg``: ``None`` (the default), ``("avg_fn", S -> fn)`` or ``("multi_avg_fn", S -> fn)``."""

    def run(B):
        values = model_values(seed, dtype)
        model = B.model(values[0])
        kwargs = {"use_buffers": use_buffers}
        if avg is not None:
            kwargs[avg[0]] = avg[1](B.S)
        swa = B.S.AveragedModel(model, **kwargs)
        record: dict[str, list] = {}
        for k in range(1, UPDATES + 1):
            model = B.set_values(model, values[k])
            swa.update_parameters(model)
            for name, value in swa.state_dict().items():
                record.setdefault(name, []).append(B.numpy(value).astype(np.float64))
        return {name: np.stack(rows) for name, rows in record.items()}

    return run


def nnx_model(nnx, seed=0):
    """A flax nnx Linear(4, 3) -> BatchNorm(3, momentum=0.9) -> Dropout(0.0), for update_bn."""

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(4, 3, rngs=rngs)
            self.norm = nnx.BatchNorm(3, momentum=0.9, rngs=rngs)
            self.drop = nnx.Dropout(0.0, rngs=rngs)

        def __call__(self, x):
            return self.drop(self.norm(self.linear(x)))

    return Net(nnx.Rngs(seed))


# -- SWALR -----------------------------------------------------------------------------------------


def swalr(lrs=(0.1,), steps=STEPS, resume_at=None, before=None, **kwargs):
    """Each group's lr at every optimizer step; ``resume_at``: rebuild the optimizer and
    scheduler from their state dicts at that step; ``before``: steps of a StepLR(3, 0.5)
    run before SWALR takes over (torch's documented pattern)."""

    def run(B):
        def build():
            groups = [{"params": [B.parameter()], "lr": lr} for lr in lrs]
            return B.optim.SGD(groups, lr=lrs[0], momentum=0.9)

        opt = build()
        first = B.L.StepLR(opt, 3, 0.5) if before else None
        sched = None if before else B.S.SWALR(opt, **kwargs)
        rows = []
        for k in range(steps):
            if before and k == before:
                sched = B.S.SWALR(opt, **kwargs)
            if resume_at is not None and k == resume_at:
                opt_state, sched_state = opt.state_dict(), sched.state_dict()
                opt = build()
                opt.load_state_dict(opt_state)
                sched = B.S.SWALR(opt, **kwargs)
                sched.load_state_dict(sched_state)
            rows.append([float(np.asarray(g["lr"])) for g in opt.param_groups])
            opt.step()
            (sched if sched is not None else first).step()
        return {"lr": np.asarray(rows, dtype=np.float64)}

    return run


def error(body):
    """A scenario that records the exception ``body(B)`` raises."""

    def run(B):
        try:
            body(B)
        except Exception as exc:  # noqa: BLE001 (recorded and compared)
            return {"error": np.asarray(f"{type(exc).__name__}: {exc}")}
        return {"error": np.asarray("no error")}

    return run


def _sgd(B, groups=1):
    return B.optim.SGD([{"params": [B.parameter()]} for _ in range(groups)], lr=0.1)


def scenarios() -> dict:
    """Every scenario by name."""
    ema = ("avg_fn", lambda S: S.get_ema_avg_fn(0.9))
    ema_multi = ("multi_avg_fn", lambda S: S.get_ema_multi_avg_fn(0.9))
    swa_avg = ("avg_fn", lambda S: S.get_swa_avg_fn())
    swa_multi = ("multi_avg_fn", lambda S: S.get_swa_multi_avg_fn())
    custom = ("avg_fn", lambda S: custom_avg_fn)
    out = {}
    for dtype in ("float32", "float64"):
        out[f"swa_default_{dtype}"] = averaged(dtype)
        out[f"swa_default_buffers_{dtype}"] = averaged(dtype, use_buffers=True, seed=1)
        out[f"ema_avg_fn_{dtype}"] = averaged(dtype, avg=ema, seed=2)
        out[f"ema_multi_avg_fn_buffers_{dtype}"] = averaged(dtype, avg=ema_multi, use_buffers=True, seed=3)
        out[f"swa_avg_fn_buffers_{dtype}"] = averaged(dtype, avg=swa_avg, use_buffers=True, seed=4)
        out[f"swa_multi_avg_fn_{dtype}"] = averaged(dtype, avg=swa_multi, seed=5)
        out[f"custom_avg_fn_{dtype}"] = averaged(dtype, avg=custom, seed=6)
    out.update(
        {
            "swalr_cos": swalr(swa_lr=0.05),
            "swalr_linear": swalr(swa_lr=0.05, anneal_epochs=5, anneal_strategy="linear"),
            "swalr_zero_epochs": swalr(swa_lr=0.02, anneal_epochs=0),
            "swalr_two_groups": swalr(lrs=(0.1, 0.3), swa_lr=[0.01, 0.2], anneal_epochs=7),
            "swalr_resumed": swalr(lrs=(0.1, 0.3), swa_lr=0.05, anneal_epochs=8, resume_at=5),
            "swalr_after_steplr": swalr(swa_lr=0.05, anneal_epochs=4, anneal_strategy="linear", before=5),
            "swalr_bad_strategy": error(lambda B: B.S.SWALR(_sgd(B), 0.1, anneal_strategy="exp")),
            "swalr_negative_epochs": error(lambda B: B.S.SWALR(_sgd(B), 0.1, anneal_epochs=-1)),
            "swalr_float_epochs": error(lambda B: B.S.SWALR(_sgd(B), 0.1, anneal_epochs=2.0)),
            "swalr_wrong_list": error(lambda B: B.S.SWALR(_sgd(B, 2), [0.1, 0.2, 0.3])),
            "ema_bad_decay": error(lambda B: B.S.get_ema_avg_fn(1.5)),
            "ema_multi_bad_decay": error(lambda B: B.S.get_ema_multi_avg_fn(-0.1)),
            "both_avg_fns": error(
                lambda B: B.S.AveragedModel(
                    B.model(model_values(0, "float32")[0]),
                    avg_fn=B.S.get_swa_avg_fn(),
                    multi_avg_fn=B.S.get_swa_multi_avg_fn(),
                )
            ),
        }
    )
    return out


def compare(name: str, ours: dict, theirs: dict, rtol: float) -> None:
    """Asserts the records of one scenario agree (errors by text, numbers to ``rtol``)."""
    assert sorted(ours) == sorted(theirs), (name, sorted(ours), sorted(theirs))
    for field in theirs:
        mine, want = np.asarray(ours[field]), np.asarray(theirs[field])
        if want.dtype.kind in "US":
            assert str(mine) == str(want), (name, field)
        else:
            np.testing.assert_allclose(mine, want, rtol=rtol, atol=0, err_msg=f"{name}: {field}")


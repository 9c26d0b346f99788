"""Draws every learning-rate schedule into one PNG gallery.

Each panel shows a schedule over the optimizer steps: the functional schedule of
``gradxform.schedules`` as a line, and its torch_compat twin
(``torch_compat.optim.lr_scheduler``) as dots on top of it, so the two can be seen to
agree. Panels of cyclic schedules also show the momentum cycled against the rate
(right axis, dashed). The torch-only schedulers (LambdaLR, MultiplicativeLR,
ChainedScheduler) and reduce-on-plateau, which follows a metric, have their own panels.

Usage::

    pip install -e ".[examples]"
    python examples/schedules_gallery.py [--quick] [--out schedules_gallery.png]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Callable

import jax

jax.config.update("jax_enable_x64", True)  # torch's learning rates are Python floats (doubles)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import gradxform  # noqa: E402
from gradxform import schedules as S  # noqa: E402
from torch_compat.optim import lr_scheduler as L  # noqa: E402

LR = 0.1


@dataclasses.dataclass
class Panel:
    title: str
    functional: Callable[[int], object] | None = None  # steps -> schedule
    scheduler: Callable[[int], Callable] | None = None  # steps -> (optimizer -> scheduler)
    momentum: bool = False
    metrics: Callable[[int], np.ndarray] | None = None  # steps -> metric per step
    note: str = ""


def validation_loss(steps: int) -> np.ndarray:
    """A made-up validation loss: it improves, then plateaus with a little noise."""
    t = np.arange(steps, dtype=np.float64)
    return np.maximum(0.35, 1.0 - 2.0 * t / steps) + 0.01 * np.sin(1.7 * t)


def plateau_curve(steps: int) -> np.ndarray:
    """The learning rate gradxform.reduce_on_plateau gives, fed one metric per step."""
    tx = gradxform.reduce_on_plateau(factor=0.5, patience=steps // 20, cooldown=steps // 40)
    update = jax.jit(tx.update)
    state = tx.init(jnp.zeros(1))
    lrs = [LR * float(state.scale)]
    for metric in validation_loss(steps)[:-1]:
        _, state = update(jnp.ones(1), state, value=metric)
        lrs.append(LR * float(state.scale))
    return np.asarray(lrs)


def panels(steps: int) -> list[Panel]:
    q = max(steps // 10, 1)  # a tenth of the run
    return [
        Panel("ConstantLR · constant", lambda n: S.constant(LR, 1 / 3, 2 * q), lambda n: lambda o: L.ConstantLR(o, 1 / 3, 2 * q)),
        Panel("LinearLR · linear (warm-up)", lambda n: S.linear(LR, 0.1, 1.0, 3 * q), lambda n: lambda o: L.LinearLR(o, 0.1, 1.0, 3 * q)),
        Panel("PolynomialLR · polynomial (power 2)", lambda n: S.polynomial(LR, n - q, 2.0), lambda n: lambda o: L.PolynomialLR(o, n - q, 2.0)),
        Panel("StepLR · step", lambda n: S.step(LR, 2 * q, 0.5), lambda n: lambda o: L.StepLR(o, 2 * q, 0.5)),
        Panel(
            "MultiStepLR · multistep",
            lambda n: S.multistep(LR, [3 * q, 6 * q, 8 * q], 0.3),
            lambda n: lambda o: L.MultiStepLR(o, [3 * q, 6 * q, 8 * q], 0.3),
        ),
        Panel("ExponentialLR · exponential", lambda n: S.exponential(LR, 0.5 ** (1 / (2 * q))), lambda n: lambda o: L.ExponentialLR(o, 0.5 ** (1 / (2 * q)))),
        Panel(
            "CosineAnnealingLR · cosine_annealing",
            lambda n: S.cosine_annealing(LR, 6 * q, 0.01),
            lambda n: lambda o: L.CosineAnnealingLR(o, 6 * q, 0.01),
            note="past T_max the cosine goes back up",
        ),
        Panel(
            "CosineAnnealingWarmRestarts (T_mult=1)",
            lambda n: S.cosine_annealing_warm_restarts(LR, 2 * q),
            lambda n: lambda o: L.CosineAnnealingWarmRestarts(o, 2 * q),
        ),
        Panel(
            "CosineAnnealingWarmRestarts (T_mult=2)",
            lambda n: S.cosine_annealing_warm_restarts(LR, max(q // 2, 1), 2, 0.005),
            lambda n: lambda o: L.CosineAnnealingWarmRestarts(o, max(q // 2, 1), 2, 0.005),
        ),
        Panel(
            "CyclicLR triangular · cyclic",
            lambda n: S.cyclic(0.01, LR, q),
            lambda n: lambda o: L.CyclicLR(o, 0.01, LR, q),
            momentum=True,
        ),
        Panel(
            "CyclicLR triangular2 (up q, down 2q)",
            lambda n: S.cyclic(0.01, LR, q, 2 * q, "triangular2"),
            lambda n: lambda o: L.CyclicLR(o, 0.01, LR, q, 2 * q, "triangular2"),
            momentum=True,
        ),
        Panel(
            "CyclicLR exp_range (gamma)",
            lambda n: S.cyclic(0.01, LR, q, mode="exp_range", gamma=0.5 ** (1 / (4 * q))),
            lambda n: lambda o: L.CyclicLR(o, 0.01, LR, q, mode="exp_range", gamma=0.5 ** (1 / (4 * q))),
            momentum=True,
        ),
        Panel(
            "CyclicLR custom scale_fn (per cycle)",
            lambda n: S.cyclic(0.01, LR, q, scale_fn=lambda c: 1 / jnp.sqrt(c)),
            lambda n: lambda o: L.CyclicLR(o, 0.01, LR, q, scale_fn=lambda c: 1 / math.sqrt(c)),
            momentum=True,
        ),
        Panel("OneCycleLR cos · one_cycle", lambda n: S.one_cycle(LR, n), lambda n: lambda o: L.OneCycleLR(o, LR, n), momentum=True),
        Panel(
            "OneCycleLR linear, three-phase",
            lambda n: S.one_cycle(LR, n, 0.3, "linear", three_phase=True),
            lambda n: lambda o: L.OneCycleLR(o, LR, n, pct_start=0.3, anneal_strategy="linear", three_phase=True),
            momentum=True,
        ),
        Panel(
            "SequentialLR · join (warm-up, cosine)",
            lambda n: S.join([S.linear(LR, 0.1, 1.0, 2 * q), S.cosine_annealing(LR, n - 2 * q)], [2 * q]),
            lambda n: lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.1, 1.0, 2 * q), L.CosineAnnealingLR(o, n - 2 * q)], [2 * q]),
        ),
        Panel(
            "LambdaLR · any callable",
            lambda n: (lambda count: LR * (1 + jnp.cos(count / q)) / 2 * 0.98**count),
            lambda n: lambda o: L.LambdaLR(o, lambda e: (1 + math.cos(e / q)) / 2 * 0.98**e),
        ),
        Panel(
            "MultiplicativeLR (torch_compat only)",
            None,
            lambda n: lambda o: L.MultiplicativeLR(o, lambda e: 0.9 if e % (2 * q) == 0 else 1.0),
            note="multiplies the current lr: no closed form",
        ),
        Panel(
            "ChainedScheduler: ConstantLR + ExponentialLR",
            None,
            lambda n: lambda o: L.ChainedScheduler([L.ConstantLR(o, 0.5, 2 * q), L.ExponentialLR(o, 0.5 ** (1 / (3 * q)))]),
        ),
        Panel(
            "ReduceLROnPlateau · reduce_on_plateau",
            lambda n: None,  # drawn from plateau_curve
            lambda n: lambda o: L.ReduceLROnPlateau(o, factor=0.5, patience=n // 20, cooldown=n // 40),
            metrics=validation_loss,
        ),
    ]


def draw(panel: Panel, ax, steps: int) -> None:
    x = np.arange(steps)
    if panel.metrics is not None:
        ax.plot(x, plateau_curve(steps), color="C0", lw=1.8, label="gradxform")
        metric_ax = ax.twinx()
        metric_ax.plot(x, panel.metrics(steps), color="C2", lw=0.8, alpha=0.6)
        metric_ax.set_ylabel("metric", color="C2", fontsize=7)
        metric_ax.tick_params(labelsize=6, colors="C2")
    elif panel.functional is not None:
        ax.plot(x, S.sample(panel.functional(steps), steps), color="C0", lw=1.8, label="gradxform")
    if panel.scheduler is not None:
        metrics = None if panel.metrics is None else panel.metrics(steps)
        lrs = L.sample_lrs(panel.scheduler(steps), steps, lr=LR, metrics=metrics)[:, 0]
        ax.plot(x, lrs, "o", color="C3", ms=2.0, markevery=max(steps // 60, 1), label="torch_compat")
        if panel.momentum:
            momentum = L.sample_lrs(panel.scheduler(steps), steps, lr=LR, key="momentum")[:, 0]
            momentum_ax = ax.twinx()
            momentum_ax.plot(x, momentum, "--", color="C1", lw=1.0)
            momentum_ax.set_ylabel("momentum", color="C1", fontsize=7)
            momentum_ax.tick_params(labelsize=6, colors="C1")
    ax.set_title(panel.title, fontsize=8.5)
    if panel.note:
        ax.text(0.98, 0.95, panel.note, transform=ax.transAxes, ha="right", va="top", fontsize=6, color="0.35")
    ax.tick_params(labelsize=6)
    ax.set_xlabel("optimizer step", fontsize=7)
    ax.set_ylabel("lr", fontsize=7)
    ax.grid(alpha=0.3)


def hand_modified(ax, steps: int) -> None:
    """A chainable scheduler carries a hand-made change along; a schedule cannot see it."""
    half = steps // 2

    def halve_at_half(opt):
        scheduler = L.ExponentialLR(opt, 0.5 ** (1 / (steps / 4)))
        original_step = scheduler.step

        def step():
            original_step()
            if scheduler.last_epoch == half:
                opt.param_groups[0]["lr"] *= 0.5  # by hand

        scheduler.step = step
        return scheduler

    x = np.arange(steps)
    ax.plot(x, S.sample(S.exponential(LR, 0.5 ** (1 / (steps / 4))), steps), color="C0", lw=1.8)
    ax.plot(x, L.sample_lrs(halve_at_half, steps, lr=LR)[:, 0], "o", color="C3", ms=2.0, markevery=max(steps // 60, 1))
    ax.set_title("ExponentialLR, lr halved by hand mid-run", fontsize=8.5)
    ax.text(0.98, 0.95, "chainable form follows; closed form does not", transform=ax.transAxes,
            ha="right", va="top", fontsize=6, color="0.35")
    ax.tick_params(labelsize=6)
    ax.set_xlabel("optimizer step", fontsize=7)
    ax.grid(alpha=0.3)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, lower resolution")
    parser.add_argument("--out", default="schedules_gallery.png", help="the PNG to write")
    args = parser.parse_args(argv)
    steps = 60 if args.quick else 200
    all_panels = panels(steps)
    columns = 4
    rows = math.ceil((len(all_panels) + 1) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.7 * rows))
    axes = axes.ravel()
    for panel, ax in zip(all_panels, axes):
        draw(panel, ax, steps)
    hand_modified(axes[len(all_panels)], steps)
    for ax in axes[len(all_panels) + 1 :]:
        ax.axis("off")
    handles, labels = axes[0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], ls="--", color="C1"))
    labels.append("momentum (right axis)")
    fig.suptitle(f"Learning-rate schedules over {steps} steps (initial lr {LR})", y=0.995, fontsize=12)
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.975), ncol=3, fontsize=9, frameon=False)
    # Fixed margins: tight_layout would draw the whole figure once more.
    fig.subplots_adjust(left=0.04, right=0.96, bottom=0.04, top=0.93, wspace=0.38, hspace=0.55)
    fig.savefig(args.out, dpi=70 if args.quick else 110)
    plt.close(fig)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()

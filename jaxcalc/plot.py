"""Figures as PNG or SVG: learning rates on x**2, Rosenbrock with descent and Newton paths, training curves.

matplotlib is an optional extra (``pip install 'jaxcalc[plot]'``). Figures are drawn on
matplotlib's Agg canvas directly, without pyplot, so no global backend or state is touched.
Every figure is ``FIGSIZE`` inches at ``DPI``: ``PIXELS`` = (1200, 500) pixels; :func:`save`
writes it in the format its file name asks for (``FORMATS``).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcalc.checkpoint import atomic_write
from jaxcalc.data import MissingExtraError
from jaxcalc.descent import classify_lr, descent

__all__ = [
    "FIGSIZE",
    "DPI",
    "PIXELS",
    "LEARNING_RATES",
    "FORMATS",
    "new_figure",
    "figure_format",
    "save",
    "descent_figure",
    "contour_figure",
    "train_figure",
]

FIGSIZE = (12.0, 5.0)  # inches
DPI = 100
PIXELS = (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))  # (width, height)
FORMATS = ("png", "svg")  # by file extension; a name without one is a PNG
LEARNING_RATES = (0.1, 0.3, 0.85, 1.0, 1.05)  # x shrinks by 0.8, 0.4, -0.7; flips sign; grows by -1.1


def new_figure() -> Any:
    """An empty ``matplotlib.figure.Figure`` on an Agg canvas; MissingExtraError without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("plots need matplotlib: pip install 'jaxcalc[plot]'") from None
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_format(path: str | os.PathLike) -> str:
    """ "png" or "svg" from the extension of ``path`` (none: "png"); ValueError for any other."""
    ext = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if ext == "":
        return "png"
    if ext not in FORMATS:
        raise ValueError(f"cannot write a .{ext[:20]} figure; name a .png or .svg file")
    return ext


def save(fig: Any, path: str | os.PathLike) -> str:
    """Write ``fig`` atomically (temp file + os.replace) as PNG or SVG, by ``path``'s extension.

    A PNG is exactly PIXELS; an SVG is FIGSIZE inches (its viewBox in points). Returns the format.
    """
    fmt = figure_format(path)
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=DPI))
    return fmt


def descent_figure(x0: float = 10.0, steps: int = 20, lrs: tuple[float, ...] = LEARNING_RATES) -> Any:
    """Gradient descent on f(x) = x**2, x_{k+1} = (1 - 2 lr) x_k, for several learning rates.

    Left: the iterates x_k; right: f(x_k) on a log scale. lr < 1 converges, lr = 1 bounces
    between +x0 and -x0, lr > 1 diverges.
    """
    fig = new_figure()
    ax_x, ax_f = fig.subplots(1, 2)
    epochs = np.arange(steps + 1)
    with jax.enable_x64(True):
        for lr in lrs:
            traj = descent(lambda x: x**2, jnp.asarray(x0, jnp.float64), lr, steps)
            xs = np.concatenate([[x0], np.asarray(traj.params)])
            label = f"lr = {lr:g}: {classify_lr(traj.params, x0)}"
            ax_x.plot(epochs, xs, marker="o", ms=3, label=label)
            ax_f.semilogy(epochs, np.maximum(xs**2, 1e-300), marker="o", ms=3, label=label)
    ax_x.axhline(0, color="0.6", lw=0.8)
    ax_x.set(xlabel="epoch k", ylabel="x_k", title="iterates of x <- x - lr * 2x")
    ax_x.set_ylim(-3 * x0, 3 * x0)
    ax_f.set(xlabel="epoch k", ylabel="f(x_k) = x_k^2", title="loss per epoch (log scale)")
    ax_x.xaxis.get_major_locator().set_params(integer=True)
    ax_f.xaxis.get_major_locator().set_params(integer=True)
    ax_x.legend(fontsize=8)
    ax_f.legend(fontsize=8)
    return fig


def contour_figure(lr: float = 1e-3, tol: float = 1e-6) -> Any:
    """Rosenbrock in 2-D: log-spaced contours, gradient arrows, the GD path beside Newton's.

    Both start at (-1.2, 1); GD uses ``lr``. Left: the whole valley; right: ||grad f|| per
    iteration (log-log), with the iteration counts to reach ||grad f||_inf <= ``tol``.
    """
    from jaxcalc.cases.functions import rosenbrock, rosenbrock_grad
    from jaxcalc.newton import minimize, rosenbrock_problem

    fig = new_figure()
    ax, ax_g = fig.subplots(1, 2, width_ratios=(1.3, 1))
    with jax.enable_x64(True):
        f, x0, x_star = rosenbrock_problem(2)
        newton = minimize(f, x0, "newton", tol=tol, record=20)
        gd = minimize(f, x0, "gd", lr=lr, tol=tol, max_iter=200_000, record=200_000)
        n_newton, n_gd = int(newton.iterations), int(gd.iterations)
        gd_path, newton_path = np.asarray(gd.path[: n_gd + 1]), np.asarray(newton.path[: n_newton + 1])
        # The window holds both paths (Newton's second step dives far below the valley).
        y_lo = min(-1.0, float(newton_path[:, 1].min()) - 0.3, float(gd_path[:, 1].min()) - 0.3)
        gx, gy = np.meshgrid(np.linspace(-2, 2, 400), np.linspace(y_lo, 3, 400))
        z = np.asarray(rosenbrock(jnp.stack([gx, gy], axis=-1)))
        qx, qy = np.meshgrid(np.linspace(-1.8, 1.8, 16), np.linspace(y_lo + 0.2, 2.8, 16))
        g = np.asarray(rosenbrock_grad(jnp.stack([qx, qy], axis=-1)))
        gd_norms = np.max(np.abs(np.asarray(jax.vmap(jax.grad(f))(jnp.asarray(gd_path)))), axis=1)
        nt_norms = np.max(np.abs(np.asarray(jax.vmap(jax.grad(f))(jnp.asarray(newton_path)))), axis=1)
    ax.contour(gx, gy, z, levels=np.logspace(-1, 4, 20), cmap="viridis", linewidths=0.8)
    length = np.hypot(g[..., 0], g[..., 1])
    ax.quiver(qx, qy, -g[..., 0] / length, -g[..., 1] / length, color="0.55", width=0.002, scale=40)
    ax.plot(
        gd_path[:, 0],
        gd_path[:, 1],
        color="tab:red",
        lw=1.2,
        label=f"gradient descent, lr {lr:g}: {n_gd} steps",
    )
    ax.plot(
        newton_path[:, 0], newton_path[:, 1], "o-", color="tab:blue", ms=4, label=f"Newton: {n_newton} steps"
    )
    ax.plot(*np.asarray(x0), "ks", ms=6, label="start (-1.2, 1)")
    ax.plot(*np.asarray(x_star), "k*", ms=12, label="minimum (1, 1)")
    ax.set(xlabel="x", ylabel="y", title="Rosenbrock 100(y - x^2)^2 + (1 - x)^2, arrows: -grad f")
    ax.set_xlim(-2, 2)
    ax.set_ylim(y_lo, 3)
    ax.legend(fontsize=8, loc="lower left")
    ax_g.loglog(np.arange(1, n_gd + 2), gd_norms, color="tab:red", label="gradient descent")
    ax_g.loglog(np.arange(1, n_newton + 2), nt_norms, "o-", color="tab:blue", label="Newton")
    ax_g.axhline(tol, color="0.5", ls="--", lw=0.8, label=f"tolerance {tol:g}")
    ax_g.set(xlabel="iteration + 1", ylabel="max |grad f|", title="gradient norm per iteration")
    ax_g.legend(fontsize=8)
    return fig


def _series(history: list[dict], key: str) -> np.ndarray:
    return np.asarray([float(r[key]) for r in history])


def train_figure(log: dict[str, Any]) -> Any:
    """Train/test loss (log scale) and accuracy per epoch from a ``jaxcalc train --json`` log.

    Raises ValueError when the log lacks a history with epoch, train_loss, test_loss,
    train_accuracy and test_accuracy in every record.
    """
    history = log.get("history") if isinstance(log, dict) else None
    keys = ("epoch", "train_loss", "test_loss", "train_accuracy", "test_accuracy")
    if not isinstance(history, list) or not history:
        raise ValueError("the log has no 'history' of epochs (write one with 'jaxcalc train --json FILE')")
    try:
        epoch, series = _series(history, "epoch"), {k: _series(history, k) for k in keys[1:]}
    except (KeyError, TypeError, ValueError, OverflowError):
        raise ValueError(f"every record of the log's history needs {', '.join(keys)} as numbers") from None
    if not all(np.all(np.isfinite(v)) for v in (epoch, *series.values())):
        raise ValueError("the log's history holds a value that is not a finite number")
    fig = new_figure()
    ax_l, ax_a = fig.subplots(1, 2)
    for split, color in (("train", "tab:blue"), ("test", "tab:orange")):
        ax_l.semilogy(epoch, series[f"{split}_loss"], color=color, label=f"{split} loss")
        ax_a.plot(epoch, 100 * series[f"{split}_accuracy"], color=color, label=f"{split} accuracy")
    sizes, config = log.get("sizes"), log.get("config")
    sizes = "-".join(str(s) for s in sizes if isinstance(s, int))[:80] if isinstance(sizes, list) else ""
    grad = config.get("grad", "") if isinstance(config, dict) else ""
    grad = grad[:40] if isinstance(grad, str) else ""
    ax_l.set(
        xlabel="epoch",
        ylabel="mean cross-entropy",
        title=" ".join(filter(None, ("MLP", sizes, "on digits,", grad, "backprop"))),
    )
    final = 100 * series["test_accuracy"][-1]
    ax_a.set(
        xlabel="epoch", ylabel="accuracy (%)", title=f"accuracy per epoch (test {final:.1f}% at the end)"
    )
    ax_a.set_ylim(max(0.0, min(100 * series["test_accuracy"].min(), 90.0) - 2), 100.5)
    ax_l.legend()
    ax_a.legend()
    return fig

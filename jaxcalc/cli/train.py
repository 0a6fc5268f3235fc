"""`jaxcalc train`: backprop on the digits with a progress bar; the last line gives the test accuracy.

jaxcalc train                                  # handwritten backward pass, 100 epochs
jaxcalc train --grad autodiff --json log.json  # the same run by jax.value_and_grad, logged
jaxcalc train --epochs 50 --checkpoint run.npz && jaxcalc train --resume run.npz
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any, TextIO

from jaxcalc.cli import UsageError


class _Bar:
    """A small text progress bar on a terminal (silent when the stream is not one)."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30) -> None:
        stream = sys.stderr if stream is None else stream
        self.total, self.stream, self.width = max(total, 1), stream, width
        self.live = bool(getattr(stream, "isatty", lambda: False)())

    def show(self, done: int, text: str) -> None:
        if not self.live:
            return
        fill = int(self.width * min(done, self.total) / self.total)
        bar = "#" * fill + "." * (self.width - fill)
        self.stream.write(f"\r[{bar}] {done}/{self.total} {text}\x1b[K")
        self.stream.flush()

    def clear(self) -> None:
        """Erase the bar, so that a log line can take its place."""
        if self.live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def close(self) -> None:
        self.clear()


def _hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected widths like 128 or 128,64, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return widths


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="backprop training of an MLP on the digits data set",
        description="Train an MLP on scikit-learn's digits (fixed split) with Adam, one compiled call "
        "per epoch. The last line reads like 'test accuracy: 97.5%%'.",
    )
    p.add_argument("--grad", choices=("handwritten", "autodiff"), default="handwritten", help="backward pass")
    p.add_argument("--epochs", type=int, help="total epochs (default 100; a resumed run counts its old ones)")
    p.add_argument("--hidden", type=_hidden, metavar="W[,W...]", help="hidden layer widths (default 128)")
    p.add_argument("--batch-size", type=int, help="mini-batch size (default 64)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default 0.001)")
    p.add_argument("--seed", type=int, help="seed of the init and the shuffles (default 0)")
    p.add_argument("--devices", type=int, default=1, help="data-parallel devices (default 1)")
    p.add_argument("--checkpoint", metavar="FILE", help="save the run here (atomically) after every epoch")
    p.add_argument("--resume", metavar="FILE", help="continue the run saved in FILE, bit for bit")
    p.add_argument("--json", metavar="FILE", help="write the per-epoch log as JSON")
    p.set_defaults(func=run)


def _check_writable(path: str | None, what: str) -> None:
    if path is None:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"cannot write {what} {path!r}: directory {parent!r} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"cannot write {what} {path!r}: it is a directory")


def _config(args: argparse.Namespace, stored: Any) -> Any:
    """The run's TrainConfig: command-line values over the checkpoint's over the defaults."""
    from jaxcalc.train import TrainConfig

    base = stored if stored is not None else TrainConfig()
    given = {"hidden": args.hidden, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed}
    if stored is not None:
        for name, value in given.items():
            if value is not None and value != getattr(stored, name):
                flag = "--" + name.replace("_", "-")
                raise UsageError(
                    f"{flag} {value} does not match the checkpoint {args.resume!r}, "
                    f"which was trained with {getattr(stored, name)}"
                )
    config = base._replace(
        **{k: v for k, v in given.items() if v is not None},
        epochs=args.epochs if args.epochs is not None else TrainConfig().epochs,
        grad=args.grad,
        devices=args.devices,
    )
    if config.epochs < 1 or config.batch_size < 1 or config.devices < 1:
        raise UsageError("--epochs, --batch-size and --devices must be at least 1")
    if not (math.isfinite(config.lr) and config.lr > 0):
        raise UsageError(f"--lr must be a positive number, got {config.lr}")
    return config


def _write_log(path: str, report: dict[str, Any]) -> None:
    from jaxcalc.cli._common import write_json

    write_json(path, report)


def run(args: argparse.Namespace) -> int:
    import jax

    from jaxcalc import __version__
    from jaxcalc.checkpoint import CheckpointError, load_train_state, save_train_state
    from jaxcalc.data import MissingExtraError, load_digits
    from jaxcalc.parallel import DeviceCountError, data_mesh
    from jaxcalc.train import evaluate, model_sizes, train

    _check_writable(args.checkpoint, "checkpoint")
    _check_writable(args.json, "log")
    try:
        data = load_digits()
    except MissingExtraError as exc:
        raise UsageError(str(exc)) from None
    state, stored, history = None, None, []
    if args.resume:
        try:
            state, stored, history = load_train_state(args.resume, data.n_features, data.n_classes)
        except CheckpointError as exc:
            raise UsageError(str(exc)) from None
    config = _config(args, stored)
    try:
        devices = list(data_mesh(config.devices).devices.flat)
    except DeviceCountError as exc:
        raise UsageError(str(exc)) from None
    if config.batch_size % config.devices:
        raise UsageError(
            f"--batch-size {config.batch_size} does not split evenly over {config.devices} devices"
        )
    sizes = "-".join(map(str, model_sizes(config, data.n_features, data.n_classes)))
    print(
        f"MLP {sizes} on digits ({len(data.y_train)} train / {len(data.y_test)} test), "
        f"adam lr {config.lr:g}, "
        f"batch {config.batch_size}, {config.epochs} epochs, grad {config.grad}, "
        f"{jax.default_backend()} x{len(devices)} ({devices[0].device_kind})"
        + (f", resumed at epoch {state.epoch}" if state is not None else "")
    )
    steps_per_epoch = len(data.y_train) // config.batch_size
    start = 0 if state is None else state.epoch
    bar = _Bar((config.epochs - start) * steps_per_epoch)
    every = max(1, config.epochs // 10)

    def on_epoch(record: dict[str, Any]) -> None:
        if args.checkpoint:
            kept = [{k: v for k, v in r.items() if k != "state"} for r in (*history, record)]
            try:
                save_train_state(args.checkpoint, record["state"], config, kept)
            except OSError as exc:
                raise UsageError(
                    f"cannot write checkpoint {args.checkpoint!r}: {exc.strerror or exc}"
                ) from None
        if record["epoch"] % every == 0 or record["epoch"] in (1, config.epochs):
            bar.clear()
            print(
                f"epoch {record['epoch']:4d}  train loss {record['train_loss']:.4f} "
                f"acc {100 * record['train_accuracy']:5.1f}%  test loss {record['test_loss']:.4f} "
                f"acc {100 * record['test_accuracy']:5.1f}%",
                flush=True,
            )
        done = (record["epoch"] - start) * steps_per_epoch
        bar.show(done, f"epoch {record['epoch']}/{config.epochs} loss {record['step_losses'][-1]:.4f}")

    t0 = time.perf_counter()
    try:
        state, logs = train(config, data, state, on_epoch)
    except DeviceCountError as exc:
        raise UsageError(str(exc)) from None
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    history = [*history, *logs]
    test_loss, test_acc = (float(v) for v in evaluate(state.params, data.x_test, data.y_test))
    if args.json:
        _write_log(
            args.json,
            {
                "command": "train",
                "jaxcalc": __version__,
                "jax": jax.__version__,
                "backend": jax.default_backend(),
                "devices": [str(d) for d in devices],
                "sizes": [int(s) for s in sizes.split("-")],
                "config": {**config._asdict(), "hidden": list(config.hidden)},
                "history": history,
                "test_loss": test_loss,
                "test_accuracy": test_acc,
                "wall_time_s": wall,
            },
        )
    print(f"trained {len(logs)} epochs in {wall:.1f} s")
    print(f"test accuracy: {100 * test_acc:.1f}%")
    return 0

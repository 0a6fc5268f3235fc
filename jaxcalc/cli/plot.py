"""`jaxcalc plot {descent,contour,train}`: figures as PNG (needs the ``plot`` extra, matplotlib).

jaxcalc plot descent --out descent.png     # learning rates on x**2
jaxcalc plot contour --out contour.png     # Rosenbrock: gradient descent vs Newton
jaxcalc plot train --log log.json          # curves of a 'jaxcalc train --json' run
"""

from __future__ import annotations

import argparse
import json
import os

from jaxcalc.cli import UsageError

KINDS = ("descent", "contour", "train")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="figures as PNG: descent, contour or train",
        description="Draw a figure as a PNG: 'descent' (learning rates on x**2), 'contour' (Rosenbrock "
        "with the gradient-descent and Newton paths), 'train' (loss and accuracy per epoch).",
    )
    p.add_argument("kind", choices=KINDS, help="which figure")
    p.add_argument("--out", metavar="FILE.png", help="where to write it (default KIND.png)")
    p.add_argument(
        "--log", metavar="FILE.json", help="for 'train': a 'jaxcalc train --json' log (default: a short run)"
    )
    p.set_defaults(func=run)


def _read_log(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UsageError(f"log {path!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read log {path!r}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"log {path!r} is not JSON: {exc.msg} at line {exc.lineno}") from None


def _short_run() -> dict:
    """A 20-epoch training run's log, for 'plot train' without --log."""
    from jaxcalc.data import load_digits
    from jaxcalc.train import TrainConfig, model_sizes, train

    config = TrainConfig(epochs=20)
    data = load_digits()
    _, history = train(config, data)
    return {
        "sizes": list(model_sizes(config, data.n_features, data.n_classes)),
        "config": {**config._asdict(), "hidden": list(config.hidden)},
        "history": history,
    }


def run(args: argparse.Namespace) -> int:
    from jaxcalc import plot
    from jaxcalc.data import MissingExtraError

    if args.log and args.kind != "train":
        raise UsageError("--log goes with 'jaxcalc plot train' only")
    out = args.out or f"{args.kind}.png"
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise UsageError(f"cannot write {out!r}: directory {parent!r} does not exist")
    if os.path.isdir(out):
        raise UsageError(f"cannot write {out!r}: it is a directory")
    try:
        plot.new_figure()  # fail early, in one line, without matplotlib
        if args.kind == "descent":
            fig = plot.descent_figure()
        elif args.kind == "contour":
            fig = plot.contour_figure()
        else:
            log = _read_log(args.log) if args.log else _short_run()
            try:
                fig = plot.train_figure(log)
            except ValueError as exc:
                raise UsageError(f"log {args.log!r}: {exc}") from None
        plot.save_png(fig, out)
    except MissingExtraError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write {out!r}: {exc.strerror or exc}") from None
    width, height = plot.PIXELS
    print(f"wrote {out} ({width}x{height} px)")
    return 0

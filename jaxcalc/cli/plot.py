"""`jaxcalc plot {descent,contour,train}`: figures as PNG or SVG (needs the ``plot`` extra, matplotlib).

jaxcalc plot descent --out descent.png     # learning rates on x**2
jaxcalc plot contour --out contour.png     # Rosenbrock: gradient descent vs Newton
jaxcalc plot train --log log.json          # curves of a 'jaxcalc train --json' run
jaxcalc plot descent --out descent.svg     # the same figure as SVG
"""

from __future__ import annotations

import argparse
import json
import os
import stat

from jaxcalc.cli import UsageError

KINDS = ("descent", "contour", "train")
MAX_LOG_BYTES = 64 * 2**20  # a 'train --json' log of a million epochs is far smaller


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="figures as PNG or SVG: descent, contour or train",
        description="Draw a figure as a PNG or SVG: 'descent' (learning rates on x**2), 'contour' "
        "(Rosenbrock with the gradient-descent and Newton paths), 'train' (loss and accuracy per epoch).",
    )
    p.add_argument("kind", choices=KINDS, help="which figure")
    p.add_argument("--out", metavar="FILE", help="where to write it: FILE.png or FILE.svg (default KIND.png)")
    p.add_argument(
        "--log", metavar="FILE.json", help="for 'train': a 'jaxcalc train --json' log (default: a short run)"
    )
    p.set_defaults(func=run)


def _read_log(path: str) -> dict:
    """The JSON of a regular file of at most MAX_LOG_BYTES; UsageError (one line) otherwise."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would block or never end
            raise UsageError(f"log {path!r} is not a regular file")
        if info.st_size > MAX_LOG_BYTES:
            raise UsageError(f"log {path!r} holds {info.st_size:,} bytes, more than {MAX_LOG_BYTES:,}")
        with open(path, encoding="utf-8") as f:
            return json.loads(f.read(MAX_LOG_BYTES + 1))
    except FileNotFoundError:
        raise UsageError(f"log {path!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read log {path!r}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"log {path!r} is not JSON: {exc.msg} at line {exc.lineno}") from None
    except RecursionError:
        raise UsageError(f"log {path!r} is nested too deeply to be a 'jaxcalc train --json' log") from None


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


def _samefile(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def run(args: argparse.Namespace) -> int:
    from jaxcalc import plot
    from jaxcalc.data import MissingExtraError

    if args.log and args.kind != "train":
        raise UsageError("--log goes with 'jaxcalc plot train' only")
    out = args.out or f"{args.kind}.png"
    try:
        fmt = plot.figure_format(out)
    except ValueError as exc:
        raise UsageError(f"--out {out!r}: {exc}") from None
    if args.log and (os.path.realpath(args.log) == os.path.realpath(out) or _samefile(args.log, out)):
        raise UsageError(f"--out {out!r} would overwrite the --log it reads")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise UsageError(f"cannot write {out!r}: directory {parent!r} does not exist")
    if os.path.isdir(out):
        raise UsageError(f"cannot write {out!r}: it is a directory")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write {out!r}: directory {parent!r} is not writable")
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
        plot.save(fig, out)
    except MissingExtraError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write {out!r}: {exc.strerror or exc}") from None
    width, height = plot.PIXELS
    size = f"{width}x{height} px" if fmt == "png" else f"SVG, {plot.FIGSIZE[0]:g}x{plot.FIGSIZE[1]:g} in"
    print(f"wrote {out} ({size})")
    return 0

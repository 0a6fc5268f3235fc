"""`jaxcalc train`: backprop on the digits with a progress bar; the last line gives the test accuracy.

jaxcalc train                                  # handwritten backward pass, 100 epochs
jaxcalc train --grad autodiff --json log.json  # the same run by jax.value_and_grad, logged
jaxcalc train --epochs 50 --checkpoint run.npz && jaxcalc train --epochs 100 --resume run.npz

Many processes (``jax.distributed``): run the same command in every process, with
``--coordinator HOST:PORT --num-processes N --process-id I`` (HOST:PORT is where process 0
listens), or with none of them under SLURM / Open MPI (detected from the environment) or
with ``--distributed`` on a Cloud TPU pod, where ``jax.distributed.initialize()`` finds
them itself. Each process then runs under a small supervisor: the training process's own
messages (progress bar, log lines, errors) pass through, the runtime's C++ log is held
back, and when the runtime aborts the process (a peer died, the coordinator cannot be
reached, a timeout ran out) the supervisor prints one line saying which, so every process
of a failed run ends within ``--dist-timeout`` seconds with one line and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from jaxcalc.cli import UsageError

# Limits of the numeric options (the library's own limits are in jaxcalc.train).
MAX_EPOCHS = 1_000_000
MAX_WIDTH = 65_536  # one hidden layer
MAX_LAYERS = 16  # hidden layers
MAX_LR = 10.0
MAX_DEVICES = 4096
MAX_PROCESSES = 65_536
MAX_DIST_TIMEOUT = 86_400  # seconds
DEFAULT_DIST_TIMEOUT = 300  # seconds, as jax.distributed.initialize's own default
RUNTIME_LOG_KEEP = 64 * 1024  # bytes of the runtime's C++ log a supervisor keeps for its one line

_WORKER_ENV = "JAXCALC_TRAIN_WORKER"  # set in the supervised process: the fds of the real stdout, stderr
_ERROR_MARK = "\x1ejaxcalc-error: "  # the supervised process's own error line, sent to its supervisor
_CLUSTER_ENVS = {  # what jax.distributed.initialize() detects, and the variable giving the process count
    "SLURM": ("SLURM_NTASKS", ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID")),
    "Open MPI": ("OMPI_COMM_WORLD_SIZE", ("OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_RANK")),
}


# ----------------------------------------------------------------------------- option parsing


def _bounded_int(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi] (argparse names the flag in its message)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must lie in [{lo}, {hi}], got {text[:40]}")
        return value

    return parse


def _learning_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text[:40]!r}") from None
    if not (math.isfinite(value) and 0 < value <= MAX_LR):
        raise argparse.ArgumentTypeError(f"must lie in (0, {MAX_LR:g}], got {text[:40]}")
    return value


def _hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(",", MAX_LAYERS))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected widths like 128 or 128,64, got {text[:40]!r}") from None
    if len(widths) > MAX_LAYERS:
        raise argparse.ArgumentTypeError(f"at most {MAX_LAYERS} hidden layers")
    if not widths or not all(1 <= w <= MAX_WIDTH for w in widths):
        raise argparse.ArgumentTypeError(f"every width must lie in [1, {MAX_WIDTH}], got {text[:40]}")
    return widths


def _address(text: str) -> str:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT with a port in [1, 65535], got {text[:60]!r}")
    return text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="backprop training of an MLP on the digits data set",
        description="Train an MLP on scikit-learn's digits (fixed split) with Adam, one compiled call "
        "per epoch. The last line reads like 'test accuracy: 97.5%'. Runs on one process, or on many "
        "through jax.distributed (the batch split over every device of every process).",
    )
    p.add_argument("--grad", choices=("handwritten", "autodiff"), default="handwritten", help="backward pass")
    p.add_argument(
        "--epochs",
        type=_bounded_int(1, MAX_EPOCHS),
        help="total epochs (default 100; a resumed run counts its old ones, so ask for more than it holds)",
    )
    p.add_argument("--hidden", type=_hidden, metavar="W[,W...]", help="hidden layer widths (default 128)")
    p.add_argument(
        "--batch-size",
        type=_bounded_int(1, 10**9),
        help="mini-batch size, at most the training set (default 64)",
    )
    p.add_argument("--lr", type=_learning_rate, help=f"Adam learning rate in (0, {MAX_LR:g}] (default 0.001)")
    p.add_argument(
        "--seed", type=_bounded_int(0, 2**31 - 1), help="seed of the init and the shuffles (default 0)"
    )
    p.add_argument(
        "--devices",
        type=_bounded_int(1, MAX_DEVICES),
        help="data-parallel devices (default 1; with many processes, every device of every process)",
    )
    p.add_argument("--checkpoint", metavar="FILE", help="save the run here (atomically) after every epoch")
    p.add_argument("--resume", metavar="FILE", help="continue the run saved in FILE, bit for bit")
    p.add_argument("--json", metavar="FILE", help="write the per-epoch log as JSON")
    dist = p.add_argument_group("many processes (jax.distributed)")
    dist.add_argument("--coordinator", type=_address, metavar="HOST:PORT", help="where process 0 listens")
    dist.add_argument(
        "--num-processes", type=_bounded_int(1, MAX_PROCESSES), metavar="N", help="processes in the run"
    )
    dist.add_argument(
        "--process-id", type=_bounded_int(0, MAX_PROCESSES - 1), metavar="I", help="this process, 0..N-1"
    )
    dist.add_argument(
        "--distributed",
        action="store_true",
        help="join a run whose coordinator, size and rank jax.distributed.initialize() detects itself "
        "(Cloud TPU pods, Kubernetes); implied under SLURM and Open MPI with more than one task",
    )
    dist.add_argument(
        "--dist-timeout",
        type=_bounded_int(1, MAX_DIST_TIMEOUT),
        default=DEFAULT_DIST_TIMEOUT,
        metavar="S",
        help="longest wait for the other processes: to connect, to answer, to finish "
        f"(default {DEFAULT_DIST_TIMEOUT})",
    )
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------- checks before any work


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_paths(args: argparse.Namespace) -> None:
    """Refuse outputs that would overwrite an input or each other, and unwritable outputs."""
    if args.checkpoint and args.json and _same_file(args.checkpoint, args.json):
        raise UsageError(f"--checkpoint and --json name the same file {args.json!r}; give two files")
    if args.resume and args.json and _same_file(args.resume, args.json):
        raise UsageError(f"--json {args.json!r} would overwrite the checkpoint --resume reads")


def _check_writable(path: str | None, flag: str) -> None:
    if path is None:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"cannot write {flag} {path!r}: directory {parent!r} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"cannot write {flag} {path!r}: it is a directory")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write {flag} {path!r}: directory {parent!r} is not writable")


def _cluster() -> str | None:
    """The name of the multi-process launcher this process runs under, if any (size > 1)."""
    for name, (size_var, others) in _CLUSTER_ENVS.items():
        size = os.environ.get(size_var, "")
        if size.isdigit() and int(size) > 1 and all(v in os.environ for v in others):
            return name
    return None


def _distributed(args: argparse.Namespace) -> bool:
    """Whether this is one process of a multi-process run; checks the three flags' agreement."""
    given = [args.coordinator is not None, args.num_processes is not None, args.process_id is not None]
    if any(given) and not all(given):
        raise UsageError("give --coordinator, --num-processes and --process-id together")
    if all(given):
        if args.process_id >= args.num_processes:
            raise UsageError(
                f"--process-id {args.process_id} is out of range for --num-processes {args.num_processes} "
                f"(0..{args.num_processes - 1})"
            )
        return True
    return args.distributed or _cluster() is not None


def _config(args: argparse.Namespace, stored: Any, devices: int) -> Any:
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
    return base._replace(
        **{k: v for k, v in given.items() if v is not None},
        epochs=args.epochs if args.epochs is not None else TrainConfig().epochs,
        grad=args.grad,
        devices=devices,
    )


def _check_config(config: Any, data: Any, args: argparse.Namespace) -> None:
    from jaxcalc.train import MAX_PARAMETERS, model_sizes, n_parameters

    n_train = len(data.y_train)
    if config.batch_size > n_train:
        raise UsageError(f"--batch-size {config.batch_size} exceeds the {n_train} training examples")
    sizes = model_sizes(config, data.n_features, data.n_classes)
    n_params = n_parameters(sizes)
    if n_params > MAX_PARAMETERS:
        raise UsageError(
            f"--hidden {','.join(map(str, config.hidden))}: a {'-'.join(map(str, sizes))} MLP has "
            f"{n_params:,} parameters, more than the {MAX_PARAMETERS:,} allowed"
        )
    if config.batch_size % config.devices:
        raise UsageError(
            f"--batch-size {config.batch_size} does not split evenly over {config.devices} devices"
        )


# ----------------------------------------------------------------------------- the supervisor


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """The command line of this run, for the supervised training process."""
    argv = ["train", "--grad", args.grad, "--dist-timeout", str(args.dist_timeout)]
    for flag, value in (
        ("--epochs", args.epochs),
        ("--hidden", None if args.hidden is None else ",".join(map(str, args.hidden))),
        ("--batch-size", args.batch_size),
        ("--lr", None if args.lr is None else repr(args.lr)),
        ("--seed", args.seed),
        ("--devices", args.devices),
        ("--checkpoint", args.checkpoint),
        ("--resume", args.resume),
        ("--json", args.json),
        ("--coordinator", args.coordinator),
        ("--num-processes", args.num_processes),
        ("--process-id", args.process_id),
    ):
        if value is not None:
            argv += [flag, str(value)]
    return argv + (["--distributed"] if args.distributed else [])


def _runtime_reason(log: str, args: argparse.Namespace) -> str | None:
    """What the runtime's C++ log says went wrong, in words; None when it says nothing known."""
    address = args.coordinator or "the coordinator"
    if "heartbeat timeout" in log or "unhealthy (stopped sending heartbeats)" in log:
        return f"another process stopped answering for {args.dist_timeout} s (it died or hangs)"
    if "RegisterTask" in log and ("DEADLINE_EXCEEDED" in log or "Deadline Exceeded" in log):
        if args.process_id == 0:
            return f"not every process connected to {address} within {args.dist_timeout} s"
        return (
            f"could not reach the coordinator {address} within {args.dist_timeout} s "
            "(is process 0 running there?)"
        )
    if "Socket closed" in log or "Connection reset" in log or "UNAVAILABLE" in log:
        return f"lost the coordinator {address} (process 0 died or is unreachable)"
    if "Barrier" in log or "barrier" in log:
        return f"the processes did not all reach the end within {args.dist_timeout} s (one of them died)"
    fatal = re.findall(r"^F\d{4} [^\]]*\] (.*)$", log, flags=re.MULTILINE)
    return fatal[-1][:300] if fatal else None


def _supervise(args: argparse.Namespace) -> int:
    """Run this process's training in a child whose C++ log is held back; one line if it aborts.

    The child's Python ``sys.stdout`` and ``sys.stderr`` write to this process's own; its
    file descriptors 1 and 2, where the C++ runtime and gloo write, are a pipe read here
    (the last RUNTIME_LOG_KEEP bytes are kept). SIGTERM and SIGHUP are passed on; SIGINT
    reaches the child from the terminal.
    """
    sys.stdout.flush()
    out_fd, err_fd = os.dup(1), os.dup(2)
    read_fd, write_fd = os.pipe()
    import jaxcalc

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(jaxcalc.__file__)))
    path = os.pathsep.join(filter(None, (package_root, os.environ.get("PYTHONPATH"))))
    env = dict(os.environ, PYTHONPATH=path, **{_WORKER_ENV: f"{out_fd},{err_fd}"})  # this very jaxcalc
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "jaxcalc", *_worker_argv(args)],
            stdin=subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            pass_fds=(out_fd, err_fd),
            env=env,
        )
    finally:
        for fd in (write_fd, out_fd, err_fd):
            os.close(fd)
    kept = bytearray()

    def drain() -> None:
        with open(read_fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                kept.extend(chunk)
                del kept[:-RUNTIME_LOG_KEEP]

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():  # signal handlers live there only
        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGHUP)}
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the child gets it itself
    try:
        code = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    reader.join(timeout=5)
    log = kept.decode("utf-8", "replace")
    at = log.rfind(_ERROR_MARK)
    if at >= 0:  # the child's own line, even when the runtime aborted it right after
        own = log[at + len(_ERROR_MARK) :].split("\n", 1)[0]
        print("error: " + own, file=sys.stderr, flush=True)
        return 130 if code == 130 else 2
    if code == 0:
        return 0
    who = f"process {args.process_id}" if args.process_id is not None else "this process"
    if code < 0:
        name = signal.Signals(-code).name
        reason = _runtime_reason(log, args) if name == "SIGABRT" else None
        reason = reason or f"it was ended by {name}"
    else:
        reason = _runtime_reason(log, args) or f"it exited with status {code}"
    print(f"error: {who} of the distributed run stopped: {reason}", file=sys.stderr, flush=True)
    return 2


def _watch_parent() -> None:
    """End this process when its supervisor is gone (killed), instead of living on orphaned."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(2)

    threading.Thread(target=watch, daemon=True).start()


# ----------------------------------------------------------------------------- the run


def _read_resume(args: argparse.Namespace, process: int, n_processes: int) -> bytes | None:
    """The bytes of --resume, read by process 0 and broadcast to every other process."""
    from jaxcalc.checkpoint import CheckpointError, read_file

    if not args.resume:
        return None
    data, error = None, None
    if process == 0:
        try:
            data = read_file(args.resume)
        except CheckpointError as exc:
            error = str(exc)
    if n_processes == 1:
        if error:
            raise UsageError(error)
        return data
    import numpy as np
    from jax.experimental import multihost_utils

    payload = (error or "").encode() if data is None else data
    header = np.array([data is None, len(payload)], np.int32) if process == 0 else np.zeros(2, np.int32)
    failed, size = (int(v) for v in multihost_utils.broadcast_one_to_all(header))
    buffer = np.frombuffer(payload, np.uint8) if process == 0 else np.zeros(size, np.uint8)
    received = np.asarray(multihost_utils.broadcast_one_to_all(buffer)).tobytes()
    if failed:
        raise UsageError(received.decode(errors="replace"))
    return received


def _epoch_line(record: dict[str, Any]) -> str:
    return (
        f"epoch {record['epoch']:4d}  train loss {record['train_loss']:.4f} "
        f"acc {100 * record['train_accuracy']:5.1f}%  test loss {record['test_loss']:.4f} "
        f"acc {100 * record['test_accuracy']:5.1f}%"
    )


def _train(args: argparse.Namespace, process: int, n_processes: int) -> int:
    import jax
    from tqdm import tqdm

    from jaxcalc import __version__
    from jaxcalc.checkpoint import CheckpointError, load_train_state, save_train_state
    from jaxcalc.cli._common import write_json
    from jaxcalc.data import MissingExtraError, load_digits
    from jaxcalc.parallel import DeviceCountError, data_mesh
    from jaxcalc.train import model_sizes, train

    lead = process == 0  # only process 0 writes files and prints
    try:
        data = load_digits()
    except MissingExtraError as exc:
        raise UsageError(str(exc)) from None
    state, stored, history = None, None, []
    blob = _read_resume(args, process, n_processes)
    if args.resume:
        try:
            state, stored, history = load_train_state(args.resume, data.n_features, data.n_classes, blob)
        except CheckpointError as exc:
            raise UsageError(str(exc)) from None
    if n_processes > 1 and args.devices not in (None, jax.device_count()):
        raise UsageError(
            f"--devices {args.devices}: a run of {n_processes} processes uses all "
            f"its {jax.device_count()} devices"
        )
    config = _config(args, stored, args.devices or (jax.device_count() if n_processes > 1 else 1))
    if state is not None and state.epoch >= config.epochs:
        raise UsageError(
            f"--epochs {config.epochs}: the checkpoint {args.resume!r} already holds {state.epoch} epochs; "
            f"ask for more (e.g. --epochs {state.epoch + config.epochs}) to train on"
        )
    _check_config(config, data, args)
    try:
        devices = list(data_mesh(config.devices).devices.flat)
    except DeviceCountError as exc:
        raise UsageError(str(exc)) from None
    sizes = "-".join(map(str, model_sizes(config, data.n_features, data.n_classes)))
    where = f"{jax.default_backend()} x{len(devices)} ({devices[0].device_kind})"
    if n_processes > 1:
        where += f" over {n_processes} processes"
    if lead:
        print(
            f"MLP {sizes} on digits ({len(data.y_train)} train / {len(data.y_test)} test), "
            f"adam lr {config.lr:g}, batch {config.batch_size}, {config.epochs} epochs, grad {config.grad}, "
            f"{where}" + (f", resumed at epoch {state.epoch}" if state is not None else ""),
            flush=True,
        )
    steps_per_epoch = len(data.y_train) // config.batch_size
    start = 0 if state is None else state.epoch
    every = max(1, config.epochs // 10)
    bar = tqdm(
        total=(config.epochs - start) * steps_per_epoch,
        unit="step",
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
        disable=None if lead else True,  # None: only on a terminal
    )

    kept = list(history)  # every epoch so far, the checkpoint's and this run's

    def on_epoch(record: dict[str, Any]) -> None:
        kept.append({k: v for k, v in record.items() if k != "state"})
        if args.checkpoint and lead:
            try:
                save_train_state(args.checkpoint, record["state"], config, kept)
            except OSError as exc:
                raise UsageError(
                    f"cannot write checkpoint {args.checkpoint!r}: {exc.strerror or exc}"
                ) from None
        if lead and (record["epoch"] % every == 0 or record["epoch"] in (1, config.epochs)):
            tqdm.write(_epoch_line(record), file=sys.stdout)
            sys.stdout.flush()
        bar.set_postfix_str(f"epoch {record['epoch']}/{config.epochs} loss {record['step_losses'][-1]:.4f}")
        bar.update(steps_per_epoch)

    t0 = time.perf_counter()
    try:
        state, logs = train(config, data, state, on_epoch)
    except DeviceCountError as exc:
        raise UsageError(str(exc)) from None
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    history = [*history, *logs]
    test_loss, test_acc = history[-1]["test_loss"], history[-1]["test_accuracy"]  # of the final params
    if args.json and lead:
        write_json(
            args.json,
            {
                "command": "train",
                "jaxcalc": __version__,
                "jax": jax.__version__,
                "backend": jax.default_backend(),
                "devices": [str(d) for d in devices],
                "processes": n_processes,
                "sizes": [int(s) for s in sizes.split("-")],
                "config": {**config._asdict(), "hidden": list(config.hidden)},
                "history": history,
                "test_loss": test_loss,
                "test_accuracy": test_acc,
                "wall_time_s": wall,
            },
        )
    if lead:
        print(f"trained {len(logs)} epochs in {wall:.1f} s")
        print(f"test accuracy: {100 * test_acc:.1f}%", flush=True)
    return 0


def _worker(args: argparse.Namespace) -> int:
    """One process of a distributed run, under :func:`_supervise`; never returns normally on failure."""
    out_fd, err_fd = (int(fd) for fd in os.environ.pop(_WORKER_ENV).split(","))
    sys.stdout, sys.stderr = os.fdopen(out_fd, "w", buffering=1), os.fdopen(err_fd, "w", buffering=1)
    # SIGTERM ends a worker outright: its supervisor names the signal in the run's one error line
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _watch_parent()
    from jaxcalc.parallel import initialize

    code, who, line = 2, f"process {args.process_id}" if args.process_id is not None else "this process", None
    try:
        flags = (args.coordinator, args.num_processes, args.process_id)
        try:
            process, n_processes = initialize(*flags, timeout_s=args.dist_timeout)
        except (ValueError, TypeError) as exc:  # raised before any connection is tried
            raise UsageError(
                "jax.distributed.initialize() found no multi-process run to join "
                f"({' '.join(str(exc).split())[:120]}); give --coordinator, --num-processes and --process-id"
            ) from None
        who = f"process {process}"
        code = _train(args, process, n_processes)
    except UsageError as exc:
        line = str(exc)
    except KeyboardInterrupt:
        code, line = 130, "interrupted"
    except Exception as exc:  # the runtime's errors (a collective failed because a peer died, ...)
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        if "Gloo" in text or "Connection closed by peer" in text or "Connection reset" in text:
            text = f"another process of the run died (a collective with it failed: {text})"
        line = f"{who} of the distributed run stopped: {text}"
    if line is not None:
        # Through the supervisor, which prints it: one line, even if the runtime aborts us now.
        os.write(2, (_ERROR_MARK + line.replace("\n", " ") + "\n").encode("utf-8", "replace"))
    sys.stdout.flush()
    if code == 0:
        import jax

        jax.distributed.shutdown()  # waits (at most --dist-timeout) until every process is done
        return 0
    os._exit(code)  # no shutdown barrier: the others may be gone


def run(args: argparse.Namespace) -> int:
    _check_paths(args)
    distributed = _distributed(args)
    if distributed and _WORKER_ENV in os.environ:
        return _worker(args)
    if not distributed or args.process_id in (None, 0):
        _check_writable(args.checkpoint, "--checkpoint")
        _check_writable(args.json, "--json")
    if distributed:
        return _supervise(args)
    return _train(args, 0, 1)

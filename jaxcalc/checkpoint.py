"""Checkpoints: pytrees of arrays plus JSON metadata in one .npz, written atomically.

Layout of a checkpoint file (a plain NumPy ``.npz``, loadable with ``allow_pickle=False``):

    "<tree>/<path>"  one array per leaf of each named pytree, ``path`` as jax.tree_util.keystr
                     writes it (e.g. ``params/[0]['W']``), in the tree's dtype
    "__meta__"       a 0-d unicode array holding a JSON object: ``format``, and whatever the
                     caller stores (model sizes, epoch, step, key, history, ...)

Saving writes a temporary file ``.tmp-<pid>-<random>-<name>`` in the target's directory,
flushes and fsyncs it, then ``os.replace``\\ s it over the target: a reader sees either the
old file or the new one, never half of one, and a failed save leaves the old checkpoint
untouched. A save killed by SIGKILL leaves its temporary behind; the next save to the same
target removes every temporary of that target whose writer process no longer exists (and
those of older versions, which named none).
Loading never unpickles and reads only regular files (never a FIFO or a device) of at most
``MAX_BYTES`` (archive and unpacked members alike); any unreadable, truncated, oversized
or foreign file becomes one :class:`CheckpointError`.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import stat
import tempfile
import zipfile
from collections.abc import Callable
from typing import IO, Any, NamedTuple

import jax
import numpy as np

__all__ = [
    "FORMAT",
    "MAX_BYTES",
    "read_file",
    "CheckpointError",
    "Checkpoint",
    "tree_arrays",
    "atomic_write",
    "save",
    "load",
    "restore_tree",
    "save_train_state",
    "load_train_state",
]

FORMAT = "jaxcalc-checkpoint/1"
MAX_BYTES = 2**30  # a checkpoint file, and the sum of its unpacked members (train's limit: ~600 MB)
_META = "__meta__"
PyTree = Any


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit; the message is one line."""


class Checkpoint(NamedTuple):
    """What :func:`load` returns: flat arrays by name and the metadata dict."""

    path: str
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]


def tree_arrays(name: str, tree: PyTree) -> dict[str, np.ndarray]:
    """The leaves of ``tree`` as host arrays keyed ``name + keystr(path)`` (copies, never views)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {name + jax.tree_util.keystr(path): np.array(leaf, copy=True) for path, leaf in leaves}


def _temporary_pattern(path: str) -> re.Pattern[str]:
    # mkstemp's random part is 8 characters of [a-z0-9_]; earlier versions named no pid
    return re.compile(r"\.tmp-(?:(\d+)-)?[a-z0-9_]{8}-" + re.escape(os.path.basename(path)) + r"\Z")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**22  # someone else's live process (or a pid no system hands out)
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Remove the temporaries that killed saves to ``path`` left beside it; returns their names.

    A temporary is stale when the process named in it no longer exists (same host), or when
    it names no process (the format of older versions).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    pattern, removed = _temporary_pattern(path), []
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            match = pattern.match(name)
            pid = int(match.group(1)) if match and match.group(1) else None
            if match and (pid is None or (pid != os.getpid() and not _alive(pid))):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, name))
                    removed.append(name)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then os.replace it over ``path``.

    A reader sees the old file or the new one, never half of one; if ``write`` raises, the
    old file is untouched and the temporary file removed. Temporaries of ``path`` left by
    killed writers are removed first (:func:`remove_stale_temporaries`). The new file gets
    the usual permissions (0o666 less the umask), not mkstemp's private 0o600.

    A symbolic link is followed: its target is replaced and the link kept. What is not a
    regular file (a device such as /dev/stdout or /dev/full, a FIFO) is written in place,
    never replaced; a FIFO no process reads raises at once rather than waiting; a directory
    raises IsADirectoryError.
    """
    path = os.path.realpath(os.fspath(path))
    if os.path.exists(path) and not os.path.isfile(path):
        _write_in_place(path, write)
        return
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".tmp-{os.getpid()}-",
        suffix="-" + os.path.basename(path),
        dir=os.path.dirname(os.path.abspath(path)),
    )
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_in_place(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """``write`` into what ``path`` already is (a device, a FIFO), without replacing it."""
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    # O_NONBLOCK: opening a FIFO with no reader fails (ENXIO) instead of waiting for one
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    os.set_blocking(fd, True)
    with os.fdopen(fd, "wb") as f:
        write(f)
        f.flush()


def save(path: str | os.PathLike, trees: dict[str, PyTree], meta: dict[str, Any]) -> None:
    """Write ``trees`` (name -> pytree of arrays) and ``meta`` (JSON-able) to ``path`` atomically."""
    arrays: dict[str, np.ndarray] = {}
    for name, tree in trees.items():
        arrays.update(tree_arrays(name, tree))
    arrays[_META] = np.array(json.dumps({"format": FORMAT, **meta}, sort_keys=True))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def read_file(path: str | os.PathLike, limit: int = MAX_BYTES) -> bytes:
    """The bytes of the regular file ``path``; CheckpointError (one line) otherwise.

    The type is checked before opening, so a FIFO or a device never blocks or streams forever.
    """
    path = os.fspath(path)
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise CheckpointError(f"checkpoint {path!r} is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise CheckpointError(f"checkpoint {path!r} is not a regular file")
        if info.st_size > limit:
            raise CheckpointError(f"checkpoint {path!r} holds {info.st_size:,} bytes, more than {limit:,}")
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path!r} does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path!r}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise CheckpointError(f"checkpoint {path!r} holds more than {limit:,} bytes")
    return data


def load(path: str | os.PathLike, data: bytes | None = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save`; raises CheckpointError (one line) on any defect.

    ``data``: the file's bytes, already read (by :func:`read_file`, perhaps in another
    process); ``path`` then only names it in messages.
    """
    path = os.fspath(path)
    if data is None:
        data = read_file(path)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
        if unpacked > MAX_BYTES:
            raise CheckpointError(
                f"checkpoint {path!r} unpacks to {unpacked:,} bytes, more than {MAX_BYTES:,}"
            )
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: np.array(npz[k]) for k in npz.files}
    except CheckpointError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, zipfile.BadZipFile):
            reason = "not an npz archive (pickled data is never loaded)" if data[:1] == b"\x80" else reason
        raise CheckpointError(f"cannot read checkpoint {path!r}: {reason}") from None
    raw = arrays.pop(_META, None)
    if raw is None or raw.shape != () or raw.dtype.kind != "U":
        raise CheckpointError(f"{path!r} is not a jaxcalc checkpoint (no metadata)")
    try:
        meta = json.loads(str(raw))
    except json.JSONDecodeError:
        raise CheckpointError(f"checkpoint {path!r} has corrupt metadata") from None
    except RecursionError:
        raise CheckpointError(f"checkpoint {path!r} has metadata nested too deeply") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"checkpoint {path!r} has format {found!r}, expected {FORMAT!r}")
    return Checkpoint(path, arrays, meta)


def restore_tree(ckpt: Checkpoint, name: str, template: PyTree) -> PyTree:
    """Rebuild pytree ``name`` from ``ckpt`` in the structure of ``template``.

    ``template`` may hold arrays or ``jax.ShapeDtypeStruct``\\ s. Every leaf must be present
    with the template's shape and dtype; otherwise
    CheckpointError names the first leaf that does not fit.
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    expected = {name + jax.tree_util.keystr(p) for p, _ in leaves}
    stored = {k for k in ckpt.arrays if k.startswith(name + "[") or k == name}
    if stored != expected:
        extra, missing = sorted(stored - expected), sorted(expected - stored)
        what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise CheckpointError(f"checkpoint {ckpt.path!r} does not fit this run: {what}")
    out = []
    for p, leaf in leaves:
        key = name + jax.tree_util.keystr(p)
        value, shape, dtype = ckpt.arrays[key], tuple(np.shape(leaf)), np.dtype(leaf.dtype)
        if value.shape != shape or value.dtype != dtype:
            raise CheckpointError(
                f"checkpoint {ckpt.path!r} does not fit this run: {key} is {value.dtype}{list(value.shape)}, "
                f"expected {dtype}{list(shape)}"
            )
        out.append(value)
    return jax.tree_util.tree_unflatten(treedef, out)


# ----------------------------------------------------------------------------- training runs


def save_train_state(path: str | os.PathLike, state: Any, config: Any, history: list[dict]) -> None:
    """Save a :class:`jaxcalc.train.TrainState` with its config and per-epoch history, atomically.

    Stored: params, optimizer state, the PRNG key's raw data and implementation, epoch, step,
    the model's layer widths, the config and the history, so a resumed run is bit for bit
    the uninterrupted one.
    """
    sizes = [int(layer["W"].shape[0]) for layer in state.params] + [int(state.params[-1]["W"].shape[1])]
    meta = {
        "sizes": sizes,
        "config": {**config._asdict(), "hidden": list(config.hidden)},
        "epoch": int(state.epoch),
        "step": int(state.step),
        "key_impl": str(jax.random.key_impl(state.key)),
        "history": history,
    }
    trees = {"params": state.params, "opt_state": state.opt_state, "key": jax.random.key_data(state.key)}
    save(path, trees, meta)


def load_train_state(
    path: str | os.PathLike, n_features: int, n_classes: int, data: bytes | None = None
) -> tuple[Any, Any, list[dict]]:
    """(TrainState, TrainConfig, history) from a checkpoint of :func:`save_train_state`.

    ``data``: the file's bytes when already read (see :func:`load`). Raises CheckpointError
    when the file is unreadable or does not fit data with ``n_features`` inputs and
    ``n_classes`` classes.
    """
    from jaxcalc.train import TrainConfig, TrainState, init_state, model_sizes, validate

    ckpt = load(path, data)
    meta = ckpt.meta
    try:
        stored = meta["config"]
        config = TrainConfig(
            hidden=tuple(int(h) for h in stored["hidden"]),
            epochs=int(stored["epochs"]),
            batch_size=int(stored["batch_size"]),
            lr=float(stored["lr"]),
            seed=int(stored["seed"]),
            grad=str(stored["grad"]),
            devices=int(stored["devices"]),
        )
        epoch, step, sizes = int(meta["epoch"]), int(meta["step"]), [int(s) for s in meta["sizes"]]
        history, key_impl = list(meta["history"]), str(meta["key_impl"])
        if min(sizes) < 1 or epoch < 0 or step < 0 or not all(isinstance(r, dict) for r in history):
            raise ValueError
        validate(config, 10**9, n_features, n_classes)  # the batch size is checked against the data later
    except (KeyError, TypeError, ValueError, OverflowError):
        raise CheckpointError(f"checkpoint {ckpt.path!r} has incomplete or invalid metadata") from None
    want = list(model_sizes(config, n_features, n_classes))
    if sizes != want:
        raise CheckpointError(
            f"checkpoint {ckpt.path!r} holds a {'-'.join(map(str, sizes))} model, "
            f"the data needs {'-'.join(map(str, want))}"
        )

    # Shapes and dtypes only (nothing is computed): the structure every stored leaf must fit.
    def template() -> tuple:
        fresh = init_state(config, n_features, n_classes)
        return fresh.params, fresh.opt_state, jax.random.key_data(fresh.key)

    params, opt_state, key_data = jax.eval_shape(template)
    params = restore_tree(ckpt, "params", params)
    opt_state = restore_tree(ckpt, "opt_state", opt_state)
    key_data = restore_tree(ckpt, "key", key_data)
    try:
        key = jax.random.wrap_key_data(key_data, impl=key_impl)
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"checkpoint {ckpt.path!r} has an unknown key type {key_impl!r}") from None
    return TrainState(params, opt_state, key, epoch, step), config, history

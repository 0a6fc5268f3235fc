"""Shared fixtures: run the CLI in process; the golden sets that several test files read; a test
whose optional extra is missing is skipped."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import pytest

from jaxcalc.cli import main

ROOT = Path(__file__).resolve().parents[1]
# The committed golden set (``jaxcalc export golden --sizes golden``): every case at the golden
# size, in every regime, with the composites' stages. Tests only read it; one that changes files
# copies it to its tmp_path first. (A separate test proves it equals a fresh export byte for byte.)
COMMITTED_GOLDEN = ROOT / "golden"

# Top-level modules that only an optional extra installs (pyproject: torch, engines, plot, data).
OPTIONAL_EXTRAS = {
    "torch": "torch",
    "autograd": "engines",
    "micrograd": "engines",
    "sklearn": "data",
    "matplotlib": "plot",
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A test that fails only because an optional extra is not installed is reported as skipped,
    with the extra to install, so a fresh ``pip install -e .[dev]`` ends green."""
    outcome = yield
    report = outcome.get_result()
    exc = call.excinfo.value if call.excinfo is not None else None
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in OPTIONAL_EXTRAS:
        top = exc.name.split(".")[0]
        reason = f"needs {top}, which is not installed (pip install -e '.[{OPTIONAL_EXTRAS[top]}]')"
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {reason}")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture) -> Callable[..., tuple[int, str, str]]:
    """``jaxcalc ARGS`` in process: returns (exit status, stdout, stderr).

    Every call must leave JAX's x64 flag as it found it (the CLI scopes x64 to the command)
    and must never print a traceback.
    """

    def call(*args: object) -> tuple[int, str, str]:
        x64 = bool(jax.config.jax_enable_x64)
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        assert bool(jax.config.jax_enable_x64) == x64, "the CLI leaked its x64 setting"
        assert "Traceback" not in out + err
        return rc, out, err

    return call


# ----------------------------------------------------------------------------- shared golden sets


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def shared_dir(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """``build(DIR)`` once per test run, not once per pytest-xdist worker: the workers of one run
    share the parent of their base temporary directories, and the first to get here builds DIR
    there while the others wait for it. ``build`` must leave DIR absent or complete (the exporter
    renames a finished set into place). What is built must be read only."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # this run's directory, shared by its workers (and by nothing else)
    dest = root / name
    with _exclusive(root / f"{name}.lock"):
        if not dest.exists():
            build(dest)
    return dest


def _catalogue_instances() -> list:
    """The default export of the design table's cases (registered first, up to adam_step): every
    instance at the golden and tiles sizes in every regime, in export order."""
    from jaxcalc.cases import REGISTRY, instances

    names = tuple(REGISTRY)
    design = [REGISTRY[n] for n in names[: names.index("adam_step") + 1]]
    return instances(design, sizes=("golden", "tiles"))


def _build_catalogue(dest: Path) -> None:
    """Write at ``dest`` the golden set ``export_golden(dest, _catalogue_instances())`` writes.

    Only the tiles instances are computed; the golden-size ones are the committed set's files
    (the exporter's files and manifest entries depend on the instance alone). Should the committed
    set not come from this producer (other versions or backend), everything is exported afresh.
    """
    from jaxcalc.oracle.arrays import dumps
    from jaxcalc.oracle.exporter import export_golden
    from jaxcalc.oracle.golden import MANIFEST, load_golden, read_manifest

    todo = _catalogue_instances()
    with jax.enable_x64(True):
        tiles = dest.with_name(dest.name + "-tiles")
        export_golden(tiles, [i for i in todo if i.size != "golden"])
    fresh = read_manifest(tiles)
    committed = read_manifest(COMMITTED_GOLDEN)
    held = {e["id"]: e for e in committed["instances"]}
    header = {k: v for k, v in fresh.items() if k != "instances"}
    if header != {k: v for k, v in committed.items() if k != "instances"} or not all(
        i.id in held for i in todo if i.size == "golden"
    ):
        with jax.enable_x64(True):
            export_golden(dest, todo)
        return
    entries = {e["id"]: (tiles, e) for e in fresh["instances"]}
    entries.update({i.id: (COMMITTED_GOLDEN, held[i.id]) for i in todo if i.size == "golden"})
    staging = dest.with_name(dest.name + "-staging")
    (staging / "cases").mkdir(parents=True)
    for src, entry in entries.values():
        for f in entry["files"].values():
            shutil.copyfile(src / f["path"], staging / f["path"])
    manifest = {**header, "instances": [entries[i.id][1] for i in todo]}
    (staging / MANIFEST).write_text(dumps(manifest, indent=1))
    load_golden(staging)  # every file against its checksum, as verify reads it
    os.rename(staging, dest)
    shutil.rmtree(tiles)


@pytest.fixture(scope="session")
def catalogue_golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The golden set of the design cases' default export (golden and tiles sizes, every regime),
    built once per test run: the examples' end-to-end verify and the blind spots read it."""
    return shared_dir(tmp_path_factory, "catalogue-golden", _build_catalogue)


@pytest.fixture(scope="session")
def committed_golden() -> Path:
    """The committed golden set (golden size, every regime, stages): read it, never write to it."""
    return COMMITTED_GOLDEN


def subset_golden(source: Path, dest: Path, ids: list[str]) -> Path:
    """Write at ``dest`` the golden set of the instances ``ids`` of the set at ``source``: what
    ``export_golden(dest, [those instances])`` writes (a manifest entry and the case files depend
    on the instance alone), copied instead of computed."""
    from jaxcalc.oracle.arrays import dumps
    from jaxcalc.oracle.golden import MANIFEST, load_golden, read_manifest

    manifest = read_manifest(source)
    entries = {e["id"]: e for e in manifest["instances"]}
    staging = dest.with_name(dest.name + "-staging")
    (staging / "cases").mkdir(parents=True)
    for i in ids:
        for f in entries[i]["files"].values():
            shutil.copyfile(source / f["path"], staging / f["path"])
    (staging / MANIFEST).write_text(dumps({**manifest, "instances": [entries[i] for i in ids]}, indent=1))
    load_golden(staging)
    os.rename(staging, dest)
    return dest


@pytest.fixture(scope="session")
def catalogue_subset(
    catalogue_golden: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[list[str]], Path]:
    """``subset(ids)``: the golden set of those instances of the catalogue (read it only)."""
    made: dict[tuple[str, ...], Path] = {}

    def subset(ids: list[str]) -> Path:
        key = tuple(ids)
        if key not in made:
            made[key] = subset_golden(catalogue_golden, tmp_path_factory.mktemp("subset") / "golden", ids)
        return made[key]

    return subset

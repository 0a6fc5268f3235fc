"""Shared fixtures: run the CLI in process; a test whose optional extra is missing is skipped."""

from __future__ import annotations

from collections.abc import Callable

import jax
import pytest

from jaxcalc.cli import main

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

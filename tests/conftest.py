"""Shared fixtures: run the CLI in process."""

from __future__ import annotations

from collections.abc import Callable

import jax
import pytest

from jaxcalc.cli import main


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

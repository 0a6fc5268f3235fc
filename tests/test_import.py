"""Importing jaxcalc and every submodule leaves JAX's global configuration alone."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import importlib, pkgutil
import jax
before = bool(jax.config.jax_enable_x64)
import jaxcalc
mods = pkgutil.walk_packages(jaxcalc.__path__, "jaxcalc.")
names = sorted(m.name for m in mods if not m.name.endswith("__main__"))
for name in names:
    importlib.import_module(name)
from jaxcalc.cli import build_parser
build_parser()
import jax.numpy as jnp
print(len(names), before, bool(jax.config.jax_enable_x64), jnp.ones(1).dtype, jnp.asarray(1.0).dtype)
"""


def test_import_does_not_flip_x64():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    count, before, after, ones, scalar = proc.stdout.split()
    assert int(count) >= 10  # the library, the CLI commands and the cases were all imported
    assert (before, after) == ("False", "False")
    assert (ones, scalar) == ("float32", "float32")

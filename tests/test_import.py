"""Importing jaxcalc and every submodule leaves JAX's global configuration alone; a module that
needs an optional extra (torch, autograd, micrograd, scikit-learn, matplotlib) is skipped, with
the reason, when that extra is not installed, so a fresh ``pip install -e .[dev]`` ends green."""

from __future__ import annotations

import subprocess
import sys

# Modules an optional extra provides; importing a jaxcalc module may fail only for these.
OPTIONAL = ("torch", "autograd", "micrograd", "sklearn", "matplotlib")

# Makes the named top-level modules unimportable, as if their extra were not installed.
BLOCK = r"""
import sys
class _Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _Missing())
"""

SCRIPT = r"""
import importlib, pkgutil
import jax
before = bool(jax.config.jax_enable_x64)
import jaxcalc
mods = pkgutil.walk_packages(jaxcalc.__path__, "jaxcalc.", onerror=lambda name: None)
names = sorted(m.name for m in mods if not m.name.endswith("__main__"))
skipped = []
for name in names:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in OPTIONAL:
            raise
        skipped.append(f"{name} (needs {exc.name})")
from jaxcalc.cli import build_parser
build_parser()
import jax.numpy as jnp
x64 = bool(jax.config.jax_enable_x64)
print(len(names) - len(skipped), before, x64, jnp.ones(1).dtype, jnp.asarray(1.0).dtype)
print("skipped:", "; ".join(skipped))
"""


def _run(blocked: tuple[str, ...]) -> tuple[list[str], str]:
    prelude = f"OPTIONAL = {OPTIONAL!r}\nBLOCKED = {blocked!r}\n" + (BLOCK if blocked else "")
    proc = subprocess.run(
        [sys.executable, "-c", prelude + SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()[-2:]
    return first.split(), second


def test_import_does_not_flip_x64() -> None:
    (count, before, after, ones, scalar), skipped = _run(())
    assert int(count) >= 10  # the library, the CLI commands and the cases were all imported
    assert (before, after) == ("False", "False")
    assert (ones, scalar) == ("float32", "float32")
    print(skipped)  # modules whose optional extra is not installed here, with the reason


def test_missing_optional_extras_skip_the_modules_that_need_them() -> None:
    (count, before, after, _, _), skipped = _run(OPTIONAL)
    assert int(count) >= 10 and (before, after) == ("False", "False")
    assert "jaxcalc.bench.torch_side (needs torch)" in skipped


def test_a_test_needing_a_missing_extra_is_skipped_with_the_reason(tmp_path) -> None:
    from pathlib import Path

    test = tmp_path / "test_needs_extra.py"
    test.write_text(
        "def test_engine():\n"
        "    raise ModuleNotFoundError(\"No module named 'micrograd'\", name='micrograd')\n"
        "def test_other_module():\n"
        "    raise ModuleNotFoundError(\"No module named 'nosuchdep'\", name='nosuchdep')\n"
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "-p", "tests.conftest"]
        + ["-rs", "-q", "--rootdir", str(tmp_path), "-c", "/dev/null", str(test)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "1 failed, 1 skipped" in proc.stdout, proc.stdout + proc.stderr  # only the optional extra skips
    assert "needs micrograd, which is not installed (pip install -e '.[engines]')" in proc.stdout

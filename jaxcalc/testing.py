"""For other projects' test suites: ``assert_grads`` on your own JAX code, ``golden_cases`` for
checking any implementation (PyTorch, NumPy, a kernel) against a golden set in your own pytest.

Examples::

    from jaxcalc.testing import assert_grads, golden_cases

    def test_my_mlp_grad():
        assert_grads(loss, (params, batch), my_grad, argnums=0)

    @pytest.mark.parametrize("inst", golden_cases("golden/", dtype="float32", cases=["softmax"]))
    def test_softmax(inst):
        value, vjp = my_softmax_and_vjp(inst.inputs, inst.cotangent)
        inst.assert_matches(value, vjp)   # AssertionError: the verify row, worst element first
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxcalc.checks import Report, check_function

__all__ = ["assert_grads", "assert_report", "golden_cases", "GoldenInstance", "use_compilation_cache"]


def use_compilation_cache(path: str | Path | None = None) -> Path:
    """Opt in to JAX's persistent compilation cache for the witness programs; returns its folder.

    Each check compiles one program unless the function is small enough to run without XLA.
    A new ``jax.grad(f)`` object per test, or a new pytest process, compiles that program again;
    with the cache on, every later compile of the same program is a read from disk (a small
    CNN's check went from 1.2 s to 0.3 s). It sets JAX's ``jax_compilation_cache_dir`` (default
    ``$XDG_CACHE_HOME/jaxcalc/xla``, else ``~/.cache/jaxcalc/xla``) and caches programs however
    quickly they compiled, so it changes JAX's settings for the whole process: call it once, in
    a ``conftest.py``. Nothing is cached unless it is called.
    """
    import os

    if path is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = os.path.join(base, "jaxcalc", "xla")
    folder = Path(path).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return folder


def assert_report(report: Report) -> None:
    """Raise AssertionError if anything failed: the failing rows first, then the whole table."""
    if report.passed:
        return
    head = []
    for r in report.failures:
        over = f" (err {r.error:.2e} > tol {r.tol:.0e})" if r.error != float("inf") else ""
        head.append(f"{r.check} FAIL at {r.where}: {r.a_label} vs {r.b_label}, {r.values()}{over}")
        if r.diagnosis:
            head.append(f"    diagnosis: {r.diagnosis}")
    raise AssertionError("\n".join([*head, "", report.format()]))


def assert_grads(
    f: Callable[..., jax.Array],
    args: Sequence[Any],
    grad_fn: Callable[..., Any] | None = None,
    *,
    argnums: int | Sequence[int] | None = None,
    vjp_fn: Callable[[tuple, jax.Array], Any] | None = None,
    jvp_fn: Callable[[tuple, Any], jax.Array] | None = None,
    checks: str | Sequence[str] | None = None,
    mode: str = "full",
    dtype: Any | None = None,
    name: str | None = None,
    seed: int = 0,
) -> Report:
    """Check ``f(*args)`` and its handwritten derivative (:func:`jaxcalc.check_function`, same
    arguments); raise AssertionError on any failure, else return the Report (kinks pass)."""
    report = check_function(
        f,
        args,
        grad_fn,
        argnums=argnums,
        vjp_fn=vjp_fn,
        jvp_fn=jvp_fn,
        checks=checks,
        mode=mode,
        dtype=dtype,
        name=name,
        seed=seed,
    )
    assert_report(report)
    return report


def _as_numpy(x: Any) -> Any:
    """A caller's array as NumPy, exactly (:func:`jaxcalc.oracle.arrays.as_numpy`); anything that is
    no array is passed on, for the verdict to name."""
    from jaxcalc.oracle.arrays import as_numpy

    try:
        return as_numpy(x)
    except Exception:  # noqa: BLE001 - whatever it is, it is not an array; the verdict says so
        return x


class GoldenInstance:
    """One instance of a golden set in one dtype column, for ``pytest.mark.parametrize``.

    Attributes: ``id`` (``softmax@tiles~large``), ``case``, ``size``, ``regime``, ``dims``,
    ``settings`` (the case's fixed parameters, e.g. ``{"eps": 1e-05}``), ``dtype``, ``inputs``
    (name -> NumPy array in the column's dtype: floats cast, or for
    bfloat16/float16 rounded to it, ``ml_dtypes.bfloat16`` arrays; integers int64, masks bool),
    ``cotangent`` (same dtype), ``differentiable`` (the input names a VJP is due for),
    ``shapes``, and the float64 truths ``expected_value`` and ``expected_vjp``.
    pytest names each test after ``id``, so ``pytest -k "softmax and tiles"`` selects by it.
    """

    def __init__(self, golden_case: Any, dtype: str) -> None:
        from jaxcalc.oracle.verifier import _column_arrays

        self._case = golden_case
        self.dtype = dtype
        e = golden_case.entry
        self.id: str = golden_case.name
        self.__name__ = self.id  # pytest's parametrize id for an object with a __name__
        self.case: str = golden_case.case
        self.size: str = e["size"]
        self.regime: str = e["regime"]
        self.dims: dict[str, int] = dict(e.get("dims", {}))
        self.settings: dict[str, Any] = dict(e.get("settings", {}))  # eps, n_heads, ...: honour them
        self.inputs, self.cotangent = _column_arrays(golden_case, dtype)
        self.differentiable: tuple[str, ...] = golden_case.diff_names
        self.shapes: str = golden_case.shapes()
        col = golden_case.columns[dtype]
        self.expected_value: np.ndarray = col.value if col.value is not None else golden_case.value
        self.expected_vjp: dict[str, np.ndarray] = col.vjp if col.vjp is not None else golden_case.vjp
        self.tolerances: dict[str, float] = {k: t for k, (t, _) in col.outputs.items()}

    def __repr__(self) -> str:
        return f"GoldenInstance({self.id!r}, dtype={self.dtype!r})"

    def _vjp_dict(self, vjp: Any) -> Any:
        if isinstance(vjp, Mapping):
            return {str(k): _as_numpy(v) for k, v in vjp.items()}
        if isinstance(vjp, (list, tuple)):
            if len(vjp) != len(self.differentiable):
                return vjp  # judged below: "reply has no 'vjp' object" names the problem
            return {n: _as_numpy(v) for n, v in zip(self.differentiable, vjp, strict=True)}
        if len(self.differentiable) == 1 and vjp is not None:
            return {self.differentiable[0]: _as_numpy(vjp)}
        return vjp

    def check(self, value: Any, vjp: Any) -> Any:
        """The verdict on ``value`` and ``vjp`` (a :class:`jaxcalc.oracle.CaseResult`), with no raise.

        ``vjp`` maps each differentiable input's name to J^T c (a sequence in ``differentiable``
        order, or a bare array when there is one such input, also works). Arrays may be NumPy,
        JAX or PyTorch; each must be computed in ``dtype`` (dtype honesty, as ``jaxcalc verify``).
        """
        from jaxcalc.oracle.verifier import judge

        return judge(self._case, {"value": _as_numpy(value), "vjp": self._vjp_dict(vjp)}, self.dtype)

    def assert_matches(self, value: Any, vjp: Any) -> None:
        """Raise AssertionError carrying the verify rows (worst element, got, expected, tolerance)
        unless ``value`` and every VJP match the golden set in ``dtype``; see :meth:`check`."""
        from jaxcalc.oracle import verifier as v

        __tracebackhide__ = True  # pytest shows the caller's line, not this frame
        r = self.check(value, vjp)
        if r.verdict == "pass":
            return
        rows = [f"{self.id} in {self.dtype} ({self.shapes}): {r.message}", v.table_header()]
        rows.extend(v.format_result(r))
        raise AssertionError("\n".join(rows))


def golden_cases(
    directory: str | Path,
    *,
    dtype: str = "float64",
    cases: Sequence[str] | None = None,
    sizes: Sequence[str] | None = None,
    regimes: Sequence[str] | None = None,
) -> list[GoldenInstance]:
    """The instances of the golden set at ``directory`` in the ``dtype`` column, for parametrizing.

    Every file of the set is checksummed first (GoldenError, one line, if anything changed).
    ``cases`` (case names or instance ids), ``sizes`` and ``regimes`` select as ``jaxcalc verify``
    does (a case name also selects the composites' stages that are instances of that case, e.g.
    ``layernorm`` brings ``transformer_block.ln1``); instances whose column does not apply
    (float16 overflow, say) are left out. It runs in
    the caller's process and needs nothing but the golden set::

        @pytest.mark.parametrize("inst", golden_cases(GOLDEN, dtype="bfloat16"))
        def test_op(inst):
            inst.assert_matches(*my_op(inst.case, inst.inputs, inst.cotangent))
    """
    from jaxcalc.numerics import FLOAT_DTYPES
    from jaxcalc.oracle.golden import GoldenError, load_golden, read_manifest, select_entries

    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(FLOAT_DTYPES)}, got {dtype!r}")
    manifest = read_manifest(directory)
    if dtype not in manifest["columns"]:
        raise GoldenError(f"the golden set {directory} has no {dtype} column (it has {manifest['columns']})")
    chosen = None
    if cases or sizes or regimes:
        chosen = select_entries(manifest, cases=cases, sizes=sizes, regimes=regimes)
    golden = load_golden(directory, chosen)
    return [GoldenInstance(c, dtype) for c in golden.cases.values() if c.columns[dtype].applicable]

"""The reference oracle: golden vectors out (:func:`export`), implementations checked (:func:`verify`).

Python API (the ``jaxcalc export`` and ``jaxcalc verify`` commands are thin layers over it)::

    from jaxcalc import oracle

    oracle.export("golden/", sizes=["golden"], force=True)        # -> the manifest written
    report = oracle.verify("golden/", impl="examples/numpy_impl.py", dtype="float32")
    print(report.format()); assert report.ok

To check implementations from inside another project's pytest, see
:func:`jaxcalc.testing.golden_cases`. The formats are documented in ``docs/golden-format.md``
and ``docs/protocol.md``, with JSON Schemas in :mod:`jaxcalc.schemas`.

Modules:

* :mod:`~jaxcalc.oracle.arrays`    the JSON array and npz formats, read strictly
* :mod:`~jaxcalc.oracle.golden`    the golden set on disk, read back with every checksum checked
* :mod:`~jaxcalc.oracle.reference` float64 references of an instance and each dtype column's tolerances
* :mod:`~jaxcalc.oracle.exporter`  writing a golden set atomically and deterministically
* :mod:`~jaxcalc.oracle.protocol`  the JSON Lines conversation with an implementation in a subprocess
* :mod:`~jaxcalc.oracle.verifier`  comparing an implementation's values and VJPs with the golden set
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jaxcalc.oracle.golden import GoldenError
from jaxcalc.oracle.protocol import StartError
from jaxcalc.oracle.verifier import CaseResult, Report

if TYPE_CHECKING:
    from jaxcalc.cases import Instance
    from jaxcalc.oracle.golden import GoldenSet
    from jaxcalc.oracle.reference import Reference

__all__ = ["export", "verify", "Report", "CaseResult", "GoldenError", "StartError", "DEFAULT_EXPORT_SIZES"]

DEFAULT_EXPORT_SIZES = ("golden", "tiles")


def export(
    directory: str | Path,
    *,
    cases: Sequence[str] | None = None,
    sizes: Sequence[str] | None = None,
    regimes: Sequence[str] | None = None,
    dims: Mapping[str, Mapping[str, int]] | Sequence[str] | None = None,
    stages: bool = True,
    instances: Sequence[Instance] | None = None,
    force: bool = False,
    progress: Callable[[Reference], None] | None = None,
) -> dict[str, Any]:
    """Compute the selected instances in float64 and write them as a golden set at ``directory``.

    The selectors mean what the CLI's do: ``cases`` (names or instance ids, default all),
    ``sizes`` (default ``golden`` and ``tiles``), ``regimes`` (default every regime a case
    declares), ``dims`` (``{"attention": {"Tq": 113}}`` or ``["attention.Tq=113"]``); with
    ``stages`` each composite is followed by its stages. ``instances`` replaces the selectors
    with instances already chosen (:func:`jaxcalc.cases.select_instances`).

    The write is atomic and deterministic: the same call gives the same bytes, and a failed or
    interrupted export leaves nothing behind. An existing set at ``directory`` is replaced only
    with ``force`` (and only if it is a golden set). ``progress`` is called with each
    instance's :class:`~jaxcalc.oracle.reference.Reference` as it is written.

    Returns the manifest written. Raises :class:`jaxcalc.cases.SpecError` for a bad selection,
    :class:`~jaxcalc.oracle.exporter.ExportError` for an unusable destination and
    :class:`~jaxcalc.oracle.reference.DisagreementError` when a handwritten derivative disagrees
    with autodiff; x64 is switched on for the duration of the call.
    """
    import jax

    from jaxcalc.cases import select_instances
    from jaxcalc.oracle.exporter import export_golden

    if instances is None:
        instances = select_instances(
            cases=cases,
            sizes=sizes,
            regimes=regimes,
            dims=dims,
            default_sizes=DEFAULT_EXPORT_SIZES,
            stages=stages,
        )
    with jax.enable_x64(True):
        return export_golden(directory, list(instances), force=force, progress=progress)


def verify(
    directory: str | Path,
    *,
    impl: str | None = None,
    cmd: str | Sequence[str] | None = None,
    dtype: str = "float64",
    cases: Sequence[str] | None = None,
    sizes: Sequence[str] | None = None,
    regimes: Sequence[str] | None = None,
    timeout: float = 60.0,
    on_start: Callable[[GoldenSet], None] | None = None,
    on_result: Callable[[CaseResult], None] | None = None,
) -> Report:
    """Check an implementation against the golden set at ``directory``; returns a :class:`Report`.

    Give exactly one of ``impl`` (a module name or a path to a .py file with one function per
    case, ``fn(inputs, cotangent) -> (value, {input: vjp})``, run in a worker process) and
    ``cmd`` (a program speaking JSON Lines on stdin/stdout, as an argv list or a string split
    like a shell line but never run by one). ``dtype`` is the precision it computes in (float64,
    float32, bfloat16, float16): it selects the tolerance column and the inputs sent. The
    selectors filter the set's instances as in :func:`jaxcalc.oracle.golden.select_entries`.
    ``timeout`` bounds each reply. ``on_start`` sees the checked golden set once the program is
    up, and ``on_result`` each instance's result as it comes.

    A reply that is wrong in any way fails its instance and the next one still runs. Raises
    GoldenError for a missing, tampered or malformed set or a selection it does not hold,
    StartError when the implementation cannot be started, ValueError for bad arguments.
    """
    from jaxcalc.oracle import verifier as v
    from jaxcalc.oracle.golden import load_golden, read_manifest, select_entries
    from jaxcalc.oracle.protocol import Program

    if dtype not in v.DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(v.DTYPES)}, got {dtype!r}")
    if (impl is None) == (cmd is None):
        raise ValueError("give exactly one of impl= (a Python module) and cmd= (a command)")
    manifest = read_manifest(directory)
    chosen = None
    if cases or sizes or regimes:
        chosen = select_entries(manifest, cases=cases, sizes=sizes, regimes=regimes)
    golden = load_golden(directory, chosen)
    if impl is not None:
        program = v.impl_program(impl, timeout)
        label = f"--impl {impl}"
    else:
        if isinstance(cmd, str):
            try:
                argv = shlex.split(cmd)
            except ValueError as exc:
                raise StartError(f"--cmd: cannot split {cmd!r}: {exc}") from None
            label = f"--cmd {cmd}"
        else:
            argv = [str(a) for a in cmd]
            label = f"--cmd {shlex.join(argv)}"
        if not argv:
            raise StartError("--cmd: empty command")
        program = Program(argv, timeout)
    results = []
    with program:
        program.start()
        if on_start is not None:
            on_start(golden)
        for r in v.verify_cases(golden, program, dtype):
            results.append(r)
            if on_result is not None:
                on_result(r)
    return Report(
        golden=str(golden.root),
        producer=dict(golden.manifest.get("producer", {})),
        implementation=label,
        dtype=dtype,
        results=tuple(results),
        stages=v.stage_lines(golden, results),
    )

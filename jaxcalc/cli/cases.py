"""``jaxcalc cases``: the catalogue, one entry per case with its dims, sizes and regimes (``--json``)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cases",
        help="list the case catalogue",
        description="List the case catalogue: name, inputs with their symbolic dims and kinds, output "
        "shape at the golden size, the dims of each size (golden, tiles, large), the input regimes, "
        "fixed settings and a one-line description.",
    )
    p.add_argument("--json", action="store_true", help="print the catalogue as JSON")
    p.set_defaults(func=run)


def _shape(shape) -> str:
    return "(" + ",".join(str(s) for s in shape) + ")"


def run(args: argparse.Namespace) -> int:
    from jaxcalc.cases import REGISTRY
    from jaxcalc.cli._common import write_json

    rows = []
    for case in REGISTRY.values():
        golden = case.dims("golden")
        rows.append(
            {
                "name": case.name,
                "description": case.description,
                "inputs": [
                    {
                        "name": i.name,
                        "dims": list(i.shape),
                        "shape": list(i.resolve(golden)),
                        "kind": i.kind,
                        "dtype": i.dtype,
                        "differentiable": i.differentiable,
                    }
                    for i in case.inputs
                ],
                "output_shape": list(case.output_shape()),
                "sizes": {s: case.dims(s) for s in case.size_names},
                "regimes": list(case.regime_names),
                "settings": dict(case.settings),
                "handwritten": ["vjp"] + (["jvp"] if case.jvp else []) + (["chain"] if case.chain else []),
                "stages": case.stages is not None,
            }
        )
    if args.json:
        write_json("-", rows)
        return 0
    for r in rows:
        kinds = {"float": "", "int": " int", "mask": " mask"}
        ins = ", ".join(f"{i['name']}{_shape(i['dims'])}{kinds[i['kind']]}" for i in r["inputs"])
        print(f"{r['name']:<24} {ins} -> {_shape(r['output_shape'])} at golden")
        sizes = "; ".join(
            f"{s} " + (",".join(f"{k}={v}" for k, v in d.items()) if d else "fixed") for s, d in r["sizes"].items()
        )
        print(f"{'':<24} sizes: {sizes}")
        extra = f"; settings: {', '.join(f'{k}={v}' for k, v in r['settings'].items())}" if r["settings"] else ""
        print(f"{'':<24} regimes: {', '.join(r['regimes'])}{extra}")
        print(f"{'':<24} {r['description']}")
    n_inst = sum(len(r["regimes"]) * len([s for s in r["sizes"] if s != "large"]) for r in rows)
    print(f"{len(rows)} cases; {n_inst} instances at the golden and tiles sizes (the default export)")
    return 0

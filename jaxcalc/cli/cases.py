"""``jaxcalc cases``: the catalogue, one line per case (``--json`` for machines)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cases",
        help="list the case catalogue",
        description="List the case catalogue: "
        "name, inputs and shapes, output shape and a one-line description.",
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
        rows.append(
            {
                "name": case.name,
                "description": case.description,
                "inputs": [
                    {
                        "name": i.name,
                        "shape": list(i.shape),
                        "dtype": "int64" if i.integer else "float",
                        "differentiable": i.differentiable,
                    }
                    for i in case.inputs
                ],
                "output_shape": list(case.output_shape()),
                "handwritten": ["vjp"] + (["jvp"] if case.jvp else []) + (["chain"] if case.chain else []),
            }
        )
    if args.json:
        write_json("-", rows)
        return 0
    for r in rows:
        ins = ", ".join(
            f"{i['name']}{_shape(i['shape'])}{'' if i['differentiable'] else ' int'}" for i in r["inputs"]
        )
        print(f"{r['name']:<24} {ins} -> {_shape(r['output_shape'])}")
        print(f"{'':<24} {r['description']}")
    print(f"{len(rows)} cases")
    return 0

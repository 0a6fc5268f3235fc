"""JSON Schemas (draft 2020-12) of the golden-set files and of the ``verify --cmd`` messages.

``manifest``, ``case``, ``request`` and ``reply`` each have a schema here; ``array`` holds the
array, name and instance-id definitions the others reference by relative ``$ref``. The formats
are described in ``docs/golden-format.md`` and ``docs/protocol.md``.

:func:`load` needs only the standard library; :func:`validator` needs ``jsonschema`` (a dev extra,
imported on first use)::

    from jaxcalc import schemas
    schemas.validator("manifest").validate(json.load(open("golden/manifest.json")))
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

__all__ = ["NAMES", "load", "validator"]

NAMES = ("array", "manifest", "case", "request", "reply")


def _file(name: str) -> str:
    if name not in NAMES:
        raise ValueError(f"no schema {name!r}; the schemas are {', '.join(NAMES)}")
    return f"{name}.schema.json"


def load(name: str) -> dict[str, Any]:
    """The schema ``name`` (one of NAMES) as a new dict."""
    return json.loads(resources.files(__package__).joinpath(_file(name)).read_text(encoding="utf-8"))


@functools.cache
def _registry() -> Any:
    """A ``referencing`` registry holding every schema under its file name, which $refs use."""
    from referencing import Registry, Resource

    return Registry().with_resources((_file(n), Resource.from_contents(load(n))) for n in NAMES)


@functools.cache
def validator(name: str) -> Any:
    """A jsonschema validator for the schema ``name``, its relative $refs resolved to the siblings
    (checked against the draft 2020-12 metaschema once, then cached).

    Raises ModuleNotFoundError when jsonschema is not installed (``pip install 'jaxcalc[dev]'``).
    """
    import jsonschema

    schema = load(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, registry=_registry())

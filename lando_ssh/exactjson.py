"""JSON that keeps every number as the user wrote it.

cwltool prints a float on a tool's command line from the text it was written as (`1.50` stays `1.50`,
`2.5e3` becomes `2500`, `1.23e-05` becomes `0.0000123`), so a job order or workflow re-rendered by
Python's json (`1.5`, `2500.0`, `1.23e-05`) would change a tool's command line. Here a float keeps its
text from wherever it was read (a YAML document loaded by cwltool, a JSON job order or the job store)
to the documents the VM's cwltool reads:

- `Number` is a float that remembers its text (`token`);
- `loads` reads JSON with every float a `Number`;
- `dumps` writes JSON with each `Number` (and each float ruamel read from YAML) as its text, and
  non-ASCII characters as they are (cwltool's YAML reader would make two broken characters of an
  escaped emoji's surrogate pair).

A text that is not a JSON number (YAML's `.5`, `1_000.5`) is written as the number it means.
"""
from __future__ import annotations

import decimal
import json
import re
from typing import Any

_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?\Z")
_encode_string = json.encoder.encode_basestring  # type: ignore[attr-defined]  # (C) non-ASCII kept as it is


class Number(float):
    """A float and the text it was written as."""

    token: str

    def __new__(cls, token: str | float) -> Number:
        number = super().__new__(cls, token)
        number.token = token if isinstance(token, str) else float.__repr__(number)
        return number

    def __repr__(self) -> str:
        return self.token


def loads(text: str | bytes) -> Any:
    """JSON data with every float a `Number` (its text kept)."""
    return json.loads(text, parse_float=Number)


def plain(value: Any) -> Any:
    """`value` (e.g. what cwltool's YAML loader made) as plain JSON data: dicts, lists, str, int, `Number`
    for every float, and anything else as its str()."""
    return loads(dumps(value))


def dumps(value: Any, *, indent: int | None = None) -> str:
    """`value` as JSON, each float written as its own text (see the module doc); what JSON has no form for
    is written as its str()."""
    parts: list[str] = []
    _write(value, parts, "\n" if indent is not None else None, indent or 0)
    return "".join(parts)


def float_text(value: float) -> str:
    """The JSON text of a float: its own text when it has one (a `Number`, or a float ruamel read from
    YAML), else Python's."""
    token = getattr(value, "token", None)
    if token is None and type(value).__name__ == "ScalarFloat":
        from ruamel.yaml.representer import RoundTripRepresenter

        token = RoundTripRepresenter().represent_scalar_float(value).value  # what cwltool prints it from
    if token is None or token == float.__repr__(value):
        return json.dumps(float(value))
    if _JSON_NUMBER.match(token):
        return token
    try:  # a YAML form JSON lacks (`.5`, `1.`, `1_000.5`): the same number, in JSON's form
        exact = decimal.Decimal(token.replace("_", ""))
    except decimal.InvalidOperation:
        exact = None
    if exact is not None and exact.is_finite() and _JSON_NUMBER.match(str(exact)):
        return str(exact)
    return json.dumps(float(value))


def _write(value: Any, parts: list[str], newline: str | None, step: int) -> None:
    if isinstance(value, str):
        parts.append(_encode_string(value))
    elif value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, int):
        parts.append(int.__repr__(value))
    elif isinstance(value, float):
        parts.append(float_text(value))
    elif isinstance(value, dict):
        if not value:
            parts.append("{}")
            return
        inner = newline + " " * step if newline is not None else None
        parts.append("{")
        first = True
        for key, item in value.items():
            if not first:
                parts.append("," if inner is not None else ", ")
            first = False
            if inner is not None:
                parts.append(inner)
            parts.append(_encode_string(key if isinstance(key, str) else _key(key)))
            parts.append(": ")
            _write(item, parts, inner, step)
        if newline is not None:
            parts.append(newline)
        parts.append("}")
    elif isinstance(value, (list, tuple)):
        if not value:
            parts.append("[]")
            return
        inner = newline + " " * step if newline is not None else None
        parts.append("[")
        for i, item in enumerate(value):
            if i:
                parts.append("," if inner is not None else ", ")
            if inner is not None:
                parts.append(inner)
            _write(item, parts, inner, step)
        if newline is not None:
            parts.append(newline)
        parts.append("]")
    else:
        parts.append(_encode_string(str(value)))


def _key(key: Any) -> str:
    """A non-string key as json writes it (`1` -> "1", `True` -> "true", None -> "null")."""
    if isinstance(key, (bool, int, float)) or key is None:
        return json.dumps(key)
    return str(key)

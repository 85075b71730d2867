"""Domain strings: ``"[0, 1]"``, ``"(0, oo)"``, ``"{-1, 1}"``, ``"index"`` -> :class:`Domain`.

The grammar is small on purpose::

    domain   := interval | set | "index"
    interval := ("[" | "(") endpoint "," endpoint ("]" | ")")
    set      := "{" number ("," number)* "}"
    endpoint := number | "oo" | "+oo" | "-oo"
    number   := an optional sign, then an integer, a decimal (``0.25``, ``1e-3``) or a
                fraction (``1/2``)

Numbers become exact SymPy rationals read from their text (``0.1`` is exactly 1/10), and an
infinite end must be open. Every rejection is a ``ValueError`` whose message says what was
wrong and shows a well-formed example.
"""

from __future__ import annotations

import re

import sympy

from ._types import Domain

__all__ = ["parse_domain"]

_EXAMPLES = (
    'write an interval like "[0, 1]", "(0, oo)" or "(-oo, oo)", a set like "{0, 1}", or "index"'
)

_NUMBER = re.compile(
    r"""
    [+-]?
    (?:
        \d+ / \d+                              # fraction 1/2
      | (?: \d+ (?:\.\d*)? | \.\d+ ) (?: [eE][+-]?\d+ )?   # integer or decimal
    )
    """,
    re.VERBOSE,
)
_INFINITY = {"oo": sympy.oo, "+oo": sympy.oo, "-oo": -sympy.oo}
#: decimal exponents beyond this are refused: 1e999999999 would be a huge exact integer
_MAX_EXPONENT = 1000


def parse_domain(text: str) -> Domain:
    """Parse a domain string into a :class:`Domain`; raise ``ValueError`` if it is malformed."""
    if not isinstance(text, str):
        raise ValueError(f"a domain must be a string, not {type(text).__name__}; {_EXAMPLES}")
    body = text.strip()
    if not body:
        raise ValueError(f"the domain is empty; {_EXAMPLES}")
    if body == "index":
        return Domain(text=text, kind="index")
    if body[0] == "{":
        return _parse_set(text, body)
    if body[0] in "[(":
        return _parse_interval(text, body)
    hint = ""
    if body.lower() in {"integer", "int", "class", "classes", "label"}:
        hint = ' (for an integer class label, write "index")'
    raise ValueError(f"cannot read domain {text!r}{hint}; {_EXAMPLES}")


def _parse_interval(text: str, body: str) -> Domain:
    opening, closing = body[0], body[-1]
    if closing not in "])":
        raise ValueError(
            f"interval {text!r} does not end with ']' (closed) or ')' (open); "
            'for example "[0, 1]"'
        )
    parts = body[1:-1].split(",")
    if len(parts) != 2:
        raise ValueError(
            f"interval {text!r} must have exactly two endpoints separated by a comma, "
            f'found {len(parts)}; for example "[0, 1]"'
        )
    lo = _endpoint(parts[0], text)
    hi = _endpoint(parts[1], text)
    lo_closed, hi_closed = opening == "[", closing == "]"
    if lo == sympy.oo:
        raise ValueError(
            f"interval {text!r} starts at +oo; the lower end must be below the upper end"
        )
    if hi == -sympy.oo:
        raise ValueError(
            f"interval {text!r} ends at -oo; the upper end must be above the lower end"
        )
    if lo.is_infinite and lo_closed:
        raise ValueError(
            f'interval {text!r} includes -oo, which is not a number; use an open end: "(-oo, ..."'
        )
    if hi.is_infinite and hi_closed:
        raise ValueError(
            f'interval {text!r} includes oo, which is not a number; use an open end: "..., oo)"'
        )
    if lo > hi:
        raise ValueError(
            f"interval {text!r} is empty: its lower end {lo} is above its upper end {hi}; "
            "swap the endpoints"
        )
    if lo == hi:
        raise ValueError(
            f'interval {text!r} has equal ends ({lo}); for a single value write a set "{{{lo}}}"'
        )
    return Domain(
        text=text, kind="interval", lo=lo, hi=hi, lo_closed=lo_closed, hi_closed=hi_closed
    )


def _parse_set(text: str, body: str) -> Domain:
    if body[0] != "{" or body[-1] != "}":
        raise ValueError(
            f"set {text!r} must start with '{{' and end with '}}'; for example \"{{0, 1}}\""
        )
    inner = body[1:-1].strip()
    if not inner:
        raise ValueError(f'set {text!r} is empty; list the allowed values, for example "{{0, 1}}"')
    elements: list[sympy.Expr] = []
    for part in inner.split(","):
        value = _number(part, text, what="set element")
        if value in elements:
            raise ValueError(f"set {text!r} lists {value} twice; list each value once")
        elements.append(value)
    return Domain(text=text, kind="set", elements=tuple(sorted(elements)))


def _endpoint(part: str, text: str) -> sympy.Expr:
    token = part.strip()
    if token in _INFINITY:
        return _INFINITY[token]
    if token.lower() in {"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity", "∞", "-∞"}:
        sign = "-" if token.startswith("-") else ""
        raise ValueError(
            f"cannot read endpoint {token!r} in {text!r}; write infinity as '{sign}oo'"
        )
    return _number(part, text, what="endpoint")


def _number(part: str, text: str, *, what: str) -> sympy.Expr:
    token = part.strip()
    if not token:
        raise ValueError(f"{text!r} has an empty {what}; {_EXAMPLES}")
    if token in _INFINITY:
        raise ValueError(f"{what} {token!r} in {text!r} is infinite; a set lists finite numbers")
    if not _NUMBER.fullmatch(token):
        raise ValueError(
            f"cannot read {what} {token!r} in {text!r}: expected a number such as 0, -1, 0.25, "
            "1e-3 or 1/2 (or oo / -oo for an open interval end)"
        )
    exponent = re.search(r"[eE]([+-]?\d+)$", token)
    if exponent and abs(int(exponent.group(1))) > _MAX_EXPONENT:
        raise ValueError(f"{what} {token!r} in {text!r} has an exponent beyond ±{_MAX_EXPONENT}")
    if "/" in token and int(token.split("/")[1]) == 0:
        raise ValueError(f"{what} {token!r} in {text!r} divides by zero")
    return sympy.Rational(token)

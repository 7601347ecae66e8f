"""Exact numbers from simple literals, and the one tolerance rule of the grader.

Parses integers, decimals (``.4``, ``1000.0``), thousands groupings (``7,425,000``, ``1 000``),
fractions (``10/9``, ``\\frac{10}{9}``, ``-\\frac{1}{2}``), mixed numbers (``918\\frac{1}{2}``,
``3128 1/2``) into :class:`fractions.Fraction` without sympy.

Tolerance: values compare exactly, except that a decimal literal with at least
``MIN_ROUNDED_PLACES`` places also matches a value that rounds to it (``2.6667`` vs ``8/3``,
``0.0833333333333333`` vs ``1/12``); ``5.001`` vs ``5`` stays unequal. What this module does not do:
expressions (``\\sqrt2``, ``\\pi``) - those go to ``symbolic``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

MIN_ROUNDED_PLACES = 4
_MAX_DIGITS = 400

_INT = r"\d+"
_DEC_RE = re.compile(r"^([+-]?)(\d*)\.?(\d*)$")
_THOUSANDS_RE = re.compile(r"^([+-]?)([1-9]\d{0,2}(?:[, ]\d{3})+)(\.\d+)?$")
_FRAC_RE = re.compile(r"^([+-]?)\\frac\{\s*([+-]?\d+)\s*\}\{\s*([+-]?\d+)\s*\}$")
_SLASH_RE = re.compile(r"^([+-]?)(\d+)\s*/\s*(\d+)$")
_MIXED_RE = re.compile(r"^([+-]?)(\d+)\s*(?:\\frac\{(\d+)\}\{(\d+)\}|\s(\d+)/(\d+))$")


@dataclass(frozen=True)
class Number:
    """An exact value, and the decimal places it was written with (None: written exactly)."""

    value: Fraction
    places: int | None = None


def parse_number(s: str) -> Number | None:
    """The exact value of a simple numeric literal, or None when ``s`` is anything else."""
    s = re.sub(r"^([+-])\s+", r"\1", s.strip())
    if not s or len(s) > _MAX_DIGITS:
        return None
    try:
        return _parse(s)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def _parse(s: str) -> Number | None:
    m = _THOUSANDS_RE.match(s)
    if m:
        s = m.group(1) + m.group(2).replace(",", "").replace(" ", "") + (m.group(3) or "")
    m = _DEC_RE.match(s)
    if m and (m.group(2) or m.group(3)):
        sign = -1 if m.group(1) == "-" else 1
        places = len(m.group(3)) if "." in s else None
        return Number(sign * Fraction(s.lstrip("+-") or "0"), places)
    m = _FRAC_RE.match(s) or _SLASH_RE.match(s)
    if m:
        sign = -1 if m.group(1) == "-" else 1
        return Number(sign * Fraction(int(m.group(2)), int(m.group(3))))
    m = _MIXED_RE.match(s)
    if m:
        sign = -1 if m.group(1) == "-" else 1
        num, den = (m.group(3), m.group(4)) if m.group(3) else (m.group(5), m.group(6))
        frac = Fraction(int(num), int(den))
        if frac >= 1:
            return None
        return Number(sign * (int(m.group(2)) + frac))
    return None


def numbers_equal(a: Number, b: Number) -> bool:
    """Exact equality, or the rounding rule for long decimal literals (module docstring)."""
    if a.value == b.value:
        return True
    places = [p for p in (a.places, b.places) if p is not None and p >= MIN_ROUNDED_PLACES]
    if not places:
        return False
    k = min(places)
    return abs(a.value - b.value) <= Fraction(1, 2 * 10**k) + Fraction(1, 10 ** (k + 6))

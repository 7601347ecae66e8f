"""Answer specs for non-math generation tasks, and the ``answer=`` setting that picks one.

:class:`NumberAnswerSpec` (GSM8K-style): the answer is the LAST number of the solution - integers,
decimals, a minus sign, thousands separators (``1,234``), a leading ``$``, fractions ``3/4`` and
LaTeX ``\\frac{3}{4}`` (also ``\\dfrac``/``\\tfrac``). Numbers are compared by value: exactly when
both are integers or fractions, with a relative tolerance (default ``1e-9``) when either is written
as a decimal; canonical keys are exact (``"1,000"``, ``"1000"`` and ``"1000.0"`` all key to
``"1000"``; ``"3/4"`` and ``"0.75"`` both to ``"0.75"``; ``"1/3"`` to ``"1/3"``). A step is final
when it states the answer as ``#### <number>`` or ``... answer is <number>``.

:class:`RegexAnswerSpec`: the answer is the first capture group of the LAST match of a
user-given pattern, compared as an exact string after stripping; a step is final when the pattern
matches inside it.

:func:`answer_spec` maps the setting ``math`` / ``number`` / ``regex:<pattern>`` onto a spec, with
one-line ``ValueError`` s for anything else; :func:`check_answer_setting` only validates.

What this module does not do: scientific notation (``1e5``), percentages or units, spaces as
thousands separators (``1 000``), word numbers (``five``), or symbolic math (``MathAnswerSpec``).
It imports nothing outside ``tts_eval.types`` and ``tts_eval.grader``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from fractions import Fraction

from tts_eval.grader.spec import MathAnswerSpec
from tts_eval.types import AnswerSpec

ACCEPTED = "math, number, regex:<pattern with one group>"
MAX_NUMBER_CHARS = 400  # longer "numbers" are compared as plain strings (no huge Fractions)

_MINUS = "-\u2212"  # ASCII hyphen-minus and the Unicode minus sign
# One number. A minus counts only when it is not glued to a preceding operand ("10-20" is a
# range, not -20); a number never starts inside a word or right after a decimal point.
_NUMBER = (
    rf"(?:(?<![A-Za-z0-9_)\]}}])(?P<sign>[{_MINUS}])\$?|\$(?P<sign_after>[{_MINUS}])?)?"
    r"(?:"
    rf"\\[dt]?frac\{{\s*(?P<frac_num>[{_MINUS}]?\d+)\s*\}}\{{\s*(?P<frac_den>\d+)\s*\}}"
    r"|(?<![A-Za-z0-9_.])(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?P<dec>\.\d+)?(?:/(?P<den>\d+))?"
    r"|(?<![A-Za-z0-9_.])(?P<bare_dec>\.\d+)"
    r")"
)
_NUMBER_RE = re.compile(_NUMBER)
_FINAL_RE = re.compile(r"(?:####|\banswer\s+is\b)[\s:=*$]*(?:\\boxed\{\s*)?" + _NUMBER, re.I)


def invalid_setting(setting: str, reason: str) -> ValueError:
    """The one-line error for a bad ``answer=`` setting."""
    text = f"model_args answer={setting} is invalid; accepted: {ACCEPTED} ({reason})"
    return ValueError(text.replace("\r", "\\r").replace("\n", "\\n"))


# --------------------------------------------------------------------------------------------
# Numbers: small pure functions
# --------------------------------------------------------------------------------------------


def _normalise(match: re.Match[str]) -> str:
    """The text of one number match: commas and ``$`` dropped, one ASCII sign, ``a/b`` fractions."""
    negative = bool(match.group("sign") or match.group("sign_after"))
    if match.group("frac_num") is not None:
        numerator = match.group("frac_num")
        if numerator[0] in _MINUS:
            negative, numerator = not negative, numerator[1:]
        body = f"{numerator}/{match.group('frac_den')}"
    elif match.group("bare_dec") is not None:
        body = "0" + match.group("bare_dec")
    else:
        body = match.group("int").replace(",", "") + (match.group("dec") or "")
        if match.group("den") is not None:
            body += "/" + match.group("den")
    return ("-" if negative else "") + body


def find_numbers(text: str) -> list[str]:
    """Every number in ``text``, in order, normalised (``"$1,234.50"`` -> ``"1234.50"``)."""
    if not isinstance(text, str):
        return []
    return [_normalise(m) for m in _NUMBER_RE.finditer(text)]


def last_number(text: str) -> str | None:
    """The last number in ``text`` (normalised), or ``None`` when there is none."""
    last = None
    if isinstance(text, str):
        for last in _NUMBER_RE.finditer(text):  # noqa: B007 - only the last match is wanted
            pass
    return None if last is None else _normalise(last)


def parse_number(text: str) -> tuple[Fraction, bool] | None:
    """``(exact value, written as a decimal)`` when ``text`` is exactly one number, else ``None``.

    Accepts what :func:`find_numbers` finds (``"1,000"``, ``"-$5"``, ``"3/4"``, ``"\\frac{3}{4}"``)
    with surrounding whitespace; a zero denominator is not a number.
    """
    if not isinstance(text, str):
        return None
    text = text.strip()
    if not text or len(text) > MAX_NUMBER_CHARS:
        return None
    match = _NUMBER_RE.fullmatch(text)
    if match is None:
        return None
    normalised = _normalise(match)
    try:
        value = Fraction(normalised)
    except (ValueError, ZeroDivisionError):
        return None
    return value, "." in normalised


def number_key(value: Fraction) -> str:
    """Canonical text of an exact value: ``"1234"``, ``"2.5"``, ``"0.75"``, ``"-1/3"``, ``"0"``.

    Values with a finite decimal expansion are written as decimals (no trailing zeros), all others
    as ``p/q`` in lowest terms, so equal values always give equal keys.
    """
    if value.denominator == 1:
        return str(value.numerator)
    den, places = value.denominator, 0
    while den % 10 == 0:
        den, places = den // 10, places + 1
    while den % 2 == 0:
        den, places = den // 2, places + 1
    while den % 5 == 0:
        den, places = den // 5, places + 1
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    scaled = abs(value.numerator) * 10**places // value.denominator
    digits = str(scaled).rjust(places + 1, "0")
    whole, frac = digits[:-places], digits[-places:].rstrip("0")
    return ("-" if value < 0 else "") + whole + "." + frac


def numbers_close(a: Fraction, b: Fraction, rel_tol: float) -> bool:
    """``|a - b| <= rel_tol * max(|a|, |b|)``, computed exactly."""
    return abs(a - b) <= Fraction(rel_tol) * max(abs(a), abs(b))


# --------------------------------------------------------------------------------------------
# The specs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NumberAnswerSpec:
    """The last number of the solution is the answer (GSM8K style); see the module docstring.

    ``rel_tol``: relative tolerance used when either answer is written as a decimal.
    """

    rel_tol: float = 1e-9

    def __post_init__(self) -> None:
        tol = self.rel_tol
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol):
            raise ValueError(f"rel_tol must be a finite number >= 0, got {tol!r}")
        if tol < 0:
            raise ValueError(f"rel_tol must be a finite number >= 0, got {tol!r}")

    def is_final_step(self, step_text: str) -> bool:
        """Whether the step states the answer: ``#### 42`` or ``The answer is 42``."""
        return isinstance(step_text, str) and _FINAL_RE.search(step_text) is not None

    def extract(self, solution_text: str) -> str | None:
        return last_number(solution_text)

    def canonical(self, answer: str) -> str:
        parsed = parse_number(answer)
        return answer.strip() if parsed is None else number_key(parsed[0])

    def equivalent(self, a: str, b: str) -> bool:
        pa, pb = parse_number(a), parse_number(b)
        if pa is None or pb is None:
            return pa is None and pb is None and a.strip() == b.strip()
        (va, decimal_a), (vb, decimal_b) = pa, pb
        if va == vb:
            return True
        return (decimal_a or decimal_b) and numbers_close(va, vb, self.rel_tol)


@dataclass(frozen=True)
class RegexAnswerSpec:
    """The answer is group 1 of the LAST match of ``pattern``; exact comparison after stripping."""

    pattern: str
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        setting = f"regex:{self.pattern}"
        if not isinstance(self.pattern, str):
            raise invalid_setting(setting, "the pattern must be a string")
        if not self.pattern:
            raise invalid_setting(setting, "empty pattern")
        try:
            regex = re.compile(self.pattern)
        except re.error as err:
            raise invalid_setting(setting, f"does not compile: {err}") from None
        if regex.groups < 1:
            raise invalid_setting(setting, "the pattern has no capture group")
        object.__setattr__(self, "_regex", regex)

    def is_final_step(self, step_text: str) -> bool:
        return isinstance(step_text, str) and self._regex.search(step_text) is not None

    def extract(self, solution_text: str) -> str | None:
        if not isinstance(solution_text, str):
            return None
        last = None
        for last in self._regex.finditer(solution_text):  # noqa: B007 - only the last is wanted
            pass
        if last is None or last.group(1) is None:
            return None
        return last.group(1).strip() or None

    def canonical(self, answer: str) -> str:
        return answer.strip()

    def equivalent(self, a: str, b: str) -> bool:
        return a.strip() == b.strip()


# --------------------------------------------------------------------------------------------
# The answer= setting
# --------------------------------------------------------------------------------------------


def answer_spec(setting: str) -> AnswerSpec:
    """``"math"`` -> MathAnswerSpec, ``"number"`` -> NumberAnswerSpec, ``"regex:<p>"`` -> Regex."""
    if not isinstance(setting, str):
        raise invalid_setting(repr(setting), "expected a string")
    if setting.startswith("regex:"):
        return RegexAnswerSpec(setting[len("regex:") :])
    name = setting.strip()
    if name == "math":
        return MathAnswerSpec()
    if name == "number":
        return NumberAnswerSpec()
    reason = "empty setting" if not name else "unknown answer format"
    raise invalid_setting(setting, reason)


def check_answer_setting(setting: str) -> None:
    """Raise the one-line ``ValueError`` of :func:`answer_spec` for a bad setting (specs are cheap)."""
    answer_spec(setting)

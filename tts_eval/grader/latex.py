"""Pure string helpers over LaTeX answers: balanced groups, ``\\boxed{}`` spans, normalisation.

What this module does: find balanced ``{...}`` groups, locate ``\\boxed{}`` / ``\\fbox{}`` spans
(including the ``\\boxed 5`` form and an unclosed trailing box), clean control characters
(``clean_control``: a LaTeX command whose backslash became a control character through a missed
escape - ``\\frac`` typed into a non-raw Python or JSON string is form feed + ``rac`` - is
repaired; every other control character except tab, newline and carriage return is dropped), and
rewrite an answer string into a normal form with the LaTeX noise removed (``\\left``/``\\right``,
``\\dfrac``, spacing commands, ``\\text{}``-style wrappers, degrees, money, math delimiters,
thousands separators, unit words) and parenthesised exponents braced (``2^(3)`` -> ``2^{(3)}``).
An answer longer than ``MAX_ANSWER_CHARS`` is never shortened: its normal form is the text with
spacing collapsed only, and ``equiv`` compares it as a plain string.

What it does not do: parse mathematics (see ``structure`` and ``symbolic``) or pick the answer out
of a whole model output (see ``extract``). Every function here is linear-time in its input and never
raises on any string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ANSWER_CHARS = 2000  # longer "answers" are compared as plain strings only

# A missed escape turns the backslash of a LaTeX command into a control character ("\boxed" in a
# Python or JSON string is backspace + "oxed"). Each such character, with the commands it can
# start (newline "\n" is left alone: real newlines are everywhere).
_MANGLED_COMMANDS = {
    "\x07": "alpha|approx|angle|ast|arcsin|arccos|arctan",
    "\x08": "boxed|beta|bar|binom|begin|bigl|bigr|big|bf|bot|bullet|because",
    "\x0b": "vec|varnothing|varphi|varepsilon|vee|vert|vdots",
    "\x0c": "frac|fbox|forall",
    "\r": "right|rho|rangle|rfloor|rceil|rm",
    "\t": "text|textbf|textit|textrm|times|theta|tan|tanh|tfrac|tbinom|tau|tilde|triangle",
}
_MANGLED_RE = re.compile(
    "|".join(
        f"{re.escape(c)}(?=(?:{'|'.join(w[1:] for w in words.split('|'))})(?![A-Za-z]))"
        for c, words in _MANGLED_COMMANDS.items()
    )
)
_MANGLED_LETTER = {c: words[0] for c, words in _MANGLED_COMMANDS.items()}
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")

# LaTeX commands that are sometimes written with a doubled backslash (JSON double-escaping).
_KNOWN_COMMANDS = (
    "frac|dfrac|tfrac|cfrac|sqrt|left|right|boxed|fbox|text|textbf|textit|textnormal|mathrm|"
    "mathbf|mathit|mathcal|mbox|le|leq|ge|geq|lt|gt|neq|ne|pi|cdot|times|div|infty|pm|mp|in|cup|"
    "cap|sin|cos|tan|sec|csc|cot|log|ln|exp|quad|qquad|begin|end|circ|degree|approx|dots|ldots|"
    "cdots|displaystyle|operatorname|binom|dbinom|tbinom|alpha|beta|gamma|theta|lambda|mu|sigma|"
    "phi|omega|angle|emptyset|varnothing|sum|prod|int|lim|leqslant|geqslant"
)
_DOUBLE_BACKSLASH_CMD_RE = re.compile(r"(?<!\\)\\\\(?=(?:" + _KNOWN_COMMANDS + r")(?![A-Za-z]))")

_TEXT_CMDS = (
    "text",
    "textbf",
    "textit",
    "textnormal",
    "textrm",
    "textsf",
    "texttt",
    "mathrm",
    "mathbf",
    "mathit",
    "mathcal",
    "mathsf",
    "mathbb",
    "mathtt",
    "mbox",
    "hbox",
    "operatorname",
    "boldsymbol",
    "bm",
    "emph",
)
_TEXT_CMD_RE = re.compile(r"\\(?:" + "|".join(_TEXT_CMDS) + r")(?![A-Za-z])\s*\{")

_UNIT_WORDS = (
    "units?|square|sq|cubic|cm|mm|km|m|meters?|metres?|centimeters?|millimeters?|kilometers?|"
    "inches|inch|in|feet|foot|ft|yards?|yd|miles?|mi|mph|kg|g|grams?|kilograms?|pounds?|lbs?|lb|"
    "ounces?|oz|liters?|litres?|l|ml|seconds?|secs?|s|minutes?|mins?|hours?|hrs?|h|days?|weeks?|"
    "months?|years?|degrees?|deg|radians?|rad|dollars?|cents?|yuan|euros?|people|persons?|"
    "students?|cookies|marbles|apples|items?|ways|times|points?|handshakes|numbers?|"
    "integers?|pieces?|boxes|sides?|coins?|cups?|pages?|books?|trees|balls|tiles|squares?|"
    "triangles?|diagonals?|games|rounds|teams|edges|vertices|faces|digits?"
)
_TRAILING_UNIT_RE = re.compile(
    r"(?<=[\s}])\s*(?:(?:" + _UNIT_WORDS + r")(?:\s*\^\s*\{?[23]\}?)?\s*)+$", re.IGNORECASE
)
_PERCENT_RE = re.compile(r"\s*(?:\\%|%|\\text\{\s*%\s*\}|percentage|percent|pct)\s*$", re.I)


def matching_brace(s: str, open_idx: int) -> int:
    """Index of the ``}`` closing the ``{`` at ``open_idx`` (``\\{``, ``\\}`` skipped), or -1."""
    depth = 0
    i = open_idx
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


@dataclass(frozen=True)
class BoxSpan:
    """One ``\\boxed`` occurrence: ``start``/``end`` of the whole command, and its content."""

    start: int
    end: int
    content: str
    closed: bool = True  # False for an unclosed trailing "\\boxed{"


def find_boxes(text: str) -> list[BoxSpan]:
    """All top-level ``\\boxed{...}`` / ``\\fbox{...}`` spans, in order of appearance.

    ``\\boxed 5`` (no braces) takes the next whitespace/``$``-delimited token. An unclosed trailing
    ``\\boxed{`` takes the rest of the text. Boxes nested inside a box are part of its content.
    """
    spans: list[BoxSpan] = []
    pos = 0
    while True:
        m = _BOX_RE.search(text, pos)
        if m is None:
            return spans
        j = m.end()
        while j < len(text) and text[j] in " \t":
            j += 1
        if j < len(text) and text[j] == "{":
            close = matching_brace(text, j)
            if close < 0:
                spans.append(BoxSpan(m.start(), len(text), text[j + 1 :], closed=False))
                return spans
            spans.append(BoxSpan(m.start(), close + 1, text[j + 1 : close]))
            pos = close + 1
        else:
            tok = re.match(r"[^\s$]+", text[j:])
            if tok is None or j == m.end():
                pos = m.end()
                continue
            token = tok.group(0).rstrip(".,;")
            spans.append(BoxSpan(m.start(), j + len(token), token))
            pos = j + len(token)


def _replace_group_command(s: str, pattern: re.Pattern[str], keep: bool) -> str:
    """Replace ``\\cmd{X}`` by `` X `` (keep=True) or by nothing, brace-balanced, left to right."""
    out: list[str] = []
    pos = 0
    for _ in range(len(s)):
        m = pattern.search(s, pos)
        if m is None:
            break
        open_idx = m.end() - 1
        close = matching_brace(s, open_idx)
        out.append(s[pos : m.start()])
        if close < 0:
            out.append(" " + s[open_idx + 1 :] if keep else "")
            pos = len(s)
            break
        if keep:
            out.append(" " + s[open_idx + 1 : close] + " ")
        pos = close + 1
    out.append(s[pos:])
    return "".join(out)


_CONNECTOR_TEXT_RE = re.compile(
    r"\\(?:text|textnormal|mbox|mathrm)\s*\{\s*(and|or|,)\s*\}", re.IGNORECASE
)
_SIMPLE_SUBS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"\{,\}", ""),  # 14{,}916
        (r",\\!\s*", ""),  # 56,\!01,\!78
        (r"(?<=\d)\\,(?=\d{3}(?!\d))", ""),  # 1\,000
        (r"\\left\s*\\?[.]", ""),
        (r"\\right\s*\\?[.]", ""),
        (r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|big|Big|bigg|Bigg)(?![A-Za-z])", ""),
        (r"\\(?:displaystyle|textstyle|scriptstyle|limits|nolimits)(?![A-Za-z])", ""),
        (r"\\[dtc]frac(?![A-Za-z])", r"\\frac"),
        (r"\\[dt]binom(?![A-Za-z])", r"\\binom"),
        (r"\\q?quad(?![A-Za-z]{2})", " "),  # also the glued form "\quadx_2"
        (r"(?<!\\)\\[,;:!> ]|~", " "),
        (r"\\(?:hspace|vspace)\*?\{[^{}]*\}", " "),
        (r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree|°", ""),
        (r"\\(le|ge)([a-pr-z])(?![A-Za-z])", r"\\\1q \2"),  # glued "\lex"
        (r"\\(?:leqslant|leq|le)(?![A-Za-z])", r"\\leq "),
        (r"\\(?:geqslant|geq|ge)(?![A-Za-z])", r"\\geq "),
        (r"\\(?:neq|ne)(?![A-Za-z])", r"\\neq "),
        (r"<=|≤", r"\\leq "),
        (r">=|≥", r"\\geq "),
        (r"!=|≠", r"\\neq "),
        (r"\\lt(?![A-Za-z])", "<"),
        (r"\\gt(?![A-Za-z])", ">"),
        (r"\\dots|\\ldots|\\cdots", r"..."),
        (r"\\infty|∞", r"\\infty "),
        (r"\+\s*\\infty", r"\\infty"),
        (r"\\(?:varnothing|emptyset)", r"\\emptyset"),
        (r"\\(?:dollar|euro|pounds)(?![A-Za-z])|€|£|¥", ""),
        (r"\\\$|\$", ""),
        (r"\\(?:\[|\]|\(|\))", " "),
        (r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}"),
        (r"\\frac\s*(\d)\s*\{", r"\\frac{\1}{"),
        (r"\\frac\s*(\{[^{}]*\})\s*(\d)", r"\\frac\1{\2}"),
        (r"\\sqrt\s*(\d+|[A-Za-z])(?![A-Za-z])", r"\\sqrt{\1}"),
        (r"\\sqrt\s+\{", r"\\sqrt{"),
        (r"\\mathrm\s*\{\s*e\s*\}|\\text\s*\{\s*e\s*\}", "e"),
    )
)


def unbox(s: str) -> str:
    """If ``s`` holds boxes, their contents joined by ", " (several boxes make a list)."""
    boxes = find_boxes(s)
    if not boxes:
        return s
    return ", ".join(b.content for b in boxes)


def split_percent(s: str) -> tuple[str, bool]:
    """Remove a trailing percent marker (``\\%``, ``%``, "percent", "pct"); say if there was one."""
    m = _PERCENT_RE.search(s)
    if m is None or m.start() == 0:
        return s, False
    return s[: m.start()].rstrip(), True


def clean_control(text: str) -> str:
    """Repair LaTeX commands mangled by a missed escape, then drop other control characters."""
    if not _CONTROL_RE.search(text) and "\t" not in text and "\r" not in text:
        return text
    text = _MANGLED_RE.sub(lambda m: "\\" + _MANGLED_LETTER[m.group(0)], text)
    return _CONTROL_RE.sub("", text)


def brace_paren_exponents(s: str) -> str:
    """``2^(3)`` -> ``2^{(3)}``, ``x^(x^x)`` -> ``x^{(x^x)}``: a parenthesised exponent becomes a
    braced group (LaTeX reads ``^(`` as the exponent ``(`` alone). Unbalanced input is returned
    unchanged. One pass with a stack, linear time."""
    if "^" not in s or "(" not in s:
        return s
    out: list[str] = []
    stack: list[bool] = []  # per open "(": whether it opens an exponent
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == "^":
            j = i + 1
            while j < n and s[j] == " ":
                j += 1
            if j < n and s[j] == "(":
                out.append("^{(")
                stack.append(True)
                i = j + 1
                continue
        elif c == "(":
            stack.append(False)
        elif c == ")" and stack and stack.pop():
            out.append(")}")
            i += 1
            continue
        out.append(c)
        i += 1
    return s if any(stack) else "".join(out)


def normalize(answer: str) -> str:
    """The normal form of one answer string (not a whole output): noise removed, spacing collapsed.

    Keeps single spaces (they separate thousands groups, mixed numbers); ``canonical`` drops them.
    An answer longer than ``MAX_ANSWER_CHARS`` only has its control characters cleaned and its
    spacing collapsed (it is compared as a plain string; nothing is cut off).
    """
    s = clean_control(answer)
    if len(s) > MAX_ANSWER_CHARS:
        return re.sub(r"\s+", " ", s).strip()
    s = _DOUBLE_BACKSLASH_CMD_RE.sub(r"\\", s)
    s = unbox(s)
    s = _CONNECTOR_TEXT_RE.sub(lambda m: f" {m.group(1).lower()} ", s)
    for pat, rep in _SIMPLE_SUBS:
        s = pat.sub(rep, s)
    s = _replace_group_command(s, _TEXT_CMD_RE, keep=True)
    s = s.replace("{,}", "")
    s = brace_paren_exponents(s)
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"^(?:the\s+)?(?:final\s+)?answer\s*(?:is|:)\s*", "", s, flags=re.I)
    s = s.rstrip(" .;").rstrip()
    s = re.sub(r"(?<![\\])\\$", "", s).rstrip()  # "185\" (a stray trailing backslash)
    s = _TRAILING_UNIT_RE.sub("", s).rstrip()
    s = re.sub(r"^\(\s*([A-Za-z])\s*\)$", r"\1", s)  # multiple choice "(C)"
    return s

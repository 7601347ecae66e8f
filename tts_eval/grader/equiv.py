"""Answer equivalence as a ladder of small predicates, cheapest first.

``is_equiv(pred, gold)``:

1. candidates: each side is normalised (``latex.normalize``); a side with a trailing percent also
   stands for its value / 100 (``28%`` matches ``28`` and ``0.28``); ``1,22`` (a comma that is no
   thousands separator) stands for both the list ``1, 22`` and the decimal ``1.22``; a side that
   reads like prose ("Soucis : 2,74 $") also stands for the answer ``extract_answer`` finds in it.
   Any candidate pair that matches makes the answers equivalent. An answer longer than
   ``latex.MAX_ANSWER_CHARS`` has one reading, its text, and only equals the same text.
2. string rung: equal normal forms (spaces ignored).
3. structure rung (``structure.parse``): lists/sets unordered, tuples ordered (a bare list against a
   tuple: ordered), intervals by brackets and endpoints, unions, matrices, assignments by value.
4. numeric rung (``numeric``): exact values of plain literals, no sympy.
5. symbolic rung (``symbolic`` through ``bounded.run``): expressions, equations, relations.

Determinism: no decision here depends on wall-clock time. Each symbolic comparison gets
``STEP_CPU_S`` seconds of its helper's CPU time; one that runs out is retried once in a fresh
helper with ``RETRY_CPU_S``; all comparisons of one call share ``CALL_CPU_S``. A comparison that
still cannot finish is *unknown*, and unknowns propagate with three-valued (Kleene) logic: a match
found elsewhere still makes the answers equivalent, a mismatch found elsewhere still makes them
different, otherwise the verdict is ``Verdict(False, "timeout")`` - never a silent "different".
So under load a verdict is either the idle one or an explicit timeout.

``equiv_verdict`` / ``grade_verdict`` return that :class:`Verdict`; ``is_equiv`` / ``grade`` return
only its ``equivalent`` (False on timeout). Never raises: any internal error is logged at debug
level and answers False. ``canonical`` gives a key whose equality implies equivalence.
What this module does not do: find the answer in a whole output (``extract``).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction

from tts_eval.grader import bounded
from tts_eval.grader.extract import extract_answer
from tts_eval.grader.latex import MAX_ANSWER_CHARS, normalize, split_percent
from tts_eval.grader.numeric import Number, numbers_equal, parse_number
from tts_eval.grader.structure import Node, parse

logger = logging.getLogger(__name__)

STEP_CPU_S = 1.0  # helper CPU seconds of one symbolic comparison (largest seen on data: ~0.4)
RETRY_CPU_S = 2.0  # ... of its one retry, in a fresh helper, after it ran out
CALL_CPU_S = 4.0  # ... of all symbolic comparisons of one equiv_verdict call, retries included
MIN_STEP_CPU_S = 0.05  # a comparison is not started with less budget left than this

OK = "ok"
TIMEOUT = "timeout"

_MATH_WORDS = {
    "sin", "cos", "tan", "sec", "csc", "cot", "log", "exp", "sqrt", "frac", "infty", "and",
    "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "det", "gcd", "lcm", "mod", "pmod",
    "max", "min", "lim", "sum", "prod", "int", "dfrac", "cdot", "times", "pmatrix", "bmatrix",
    "matrix", "begin", "end", "array", "cup", "cap", "leq", "geq", "neq", "approx", "right",
    "left", "emptyset", "circ", "quad", "pm", "mp", "div", "ldots", "dots", "binom", "angle",
}  # fmt: skip
_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")
_DECIMAL_COMMA_RE = re.compile(r"^-?\d+,\d+$")
_THOUSANDS_RE = re.compile(r"^-?[1-9]\d{0,2}(?:,\d{3})+$")
_BASE_RE = re.compile(r"^(\w+)_\{?(\d{1,2})\}?$")


@dataclass(frozen=True)
class Verdict:
    """The outcome of one comparison: ``status`` is ``"ok"`` (``equivalent`` is the answer) or
    ``"timeout"`` (some symbolic comparison could not finish within its CPU budget and nothing
    else decided the question; ``equivalent`` is then False). ``cpu_s``: helper CPU seconds used
    (informative: not part of equality)."""

    equivalent: bool
    status: str = OK
    cpu_s: float = field(default=0.0, compare=False)


class _Budget:
    """Helper CPU seconds one call may still spend (mutable, owned by one call)."""

    def __init__(self, cpu_s: float) -> None:
        self.left = cpu_s
        self.used = 0.0

    def spend(self, cpu_s: float) -> None:
        self.left -= cpu_s
        self.used += cpu_s


Tri = bool | None  # None: unknown (a comparison ran out of budget)


def _any3(thunks: Iterable[Callable[[], Tri]]) -> Tri:
    """Kleene OR, left to right, stopping at the first True."""
    unknown = False
    for t in thunks:
        v = t()
        if v:
            return True
        unknown = unknown or v is None
    return None if unknown else False


def _all3(thunks: Iterable[Callable[[], Tri]]) -> Tri:
    """Kleene AND, left to right, stopping at the first False."""
    unknown = False
    for t in thunks:
        v = t()
        if v is False:
            return False
        unknown = unknown or v is None
    return None if unknown else True


def _key(s: str) -> str:
    return re.sub(r"\s+", "", s)


def _is_prose(s: str) -> bool:
    words = [w for w in _WORD_RE.findall(s) if w.lower() not in _MATH_WORDS]
    return bool(words) and (bool(re.search(r"\d", s)) or len(words) >= 3)


def _percent_of(s: str) -> str:
    n = parse_number(s)
    if n is None:
        return f"\\frac{{{s}}}{{100}}"
    v = n.value / 100
    return str(v.numerator) if v.denominator == 1 else f"\\frac{{{v.numerator}}}{{{v.denominator}}}"


@functools.lru_cache(maxsize=16384)
def candidates(answer: str) -> tuple[str, ...]:
    """The normalised readings of one answer string (see the module docstring), best first."""
    base = normalize(answer)
    if len(base) > MAX_ANSWER_CHARS:
        return (base,)  # too long to be an answer: compared as a plain string only
    out: list[str] = []
    stripped, pct = split_percent(base)
    out.append(stripped if pct else base)
    if pct and stripped:
        out.append(_percent_of(stripped))
    if _DECIMAL_COMMA_RE.match(base) and not _THOUSANDS_RE.match(base):
        out.append(base.replace(",", "."))
    if _is_prose(base):
        found = extract_answer(answer)
        if found and found.strip() != answer.strip():
            for c in candidates(found):
                if c not in out:
                    out.append(c)
    return tuple(dict.fromkeys(c for c in out if c))


@functools.lru_cache(maxsize=16384)
def _parse(s: str) -> Node:
    return parse(s)


@functools.lru_cache(maxsize=16384)
def _number(s: str) -> Number | None:
    return parse_number(s)


def _bases(a: str, b: str) -> tuple[str, str]:
    """``1011_2`` vs ``11``: digits only when one side has a base, values when both have one."""
    ma, mb = _BASE_RE.match(a), _BASE_RE.match(b)
    if not ma and not mb:
        return a, b
    if ma and mb:
        try:
            return str(int(ma.group(1), int(ma.group(2)))), str(int(mb.group(1), int(mb.group(2))))
        except ValueError:
            return a, b
    return (ma.group(1) if ma else a), (mb.group(1) if mb else b)


class _LRU:
    """A small thread-safe LRU of finished symbolic verdicts (timeouts are never stored)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.data: OrderedDict[tuple[str, str, str], bool] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[str, str, str]) -> bool | None:
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        return None

    def put(self, key: tuple[str, str, str], value: bool) -> None:
        with self.lock:
            self.data[key] = value
            if len(self.data) > self.maxsize:
                self.data.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.data.clear()


_SYMBOLIC_CACHE = _LRU(65536)


def _attempt(op: str, a: str, b: str, budget: _Budget, cpu_s: float, fresh: bool) -> Tri:
    try:
        answer = bounded.run(op, a, b, cpu_s, fresh=fresh)
    except bounded.GraderTimeout as e:
        budget.spend(max(e.cpu_s, 0.0))
        logger.debug("symbolic %s on %r vs %r: %s", op, a, b, e)
        return None
    budget.spend(answer.cpu_s)
    return bool(answer.value)


def _symbolic(op: str, a: str, b: str, budget: _Budget) -> Tri:
    """One symbolic comparison: cached, else run once, and once more in a fresh helper with a
    larger budget if the first run ran out of CPU; None when it still cannot finish."""
    a, b = sorted((a, b))
    key = (op, a, b)
    hit = _SYMBOLIC_CACHE.get(key)
    if hit is not None:
        return hit
    verdict = None
    for cpu_s, fresh in ((STEP_CPU_S, False), (RETRY_CPU_S, True)):
        if budget.left < MIN_STEP_CPU_S:
            break
        verdict = _attempt(op, a, b, budget, min(cpu_s, budget.left), fresh)
        if verdict is not None:
            _SYMBOLIC_CACHE.put(key, verdict)
            break
    return verdict


def _leaf_equal(a: str, b: str, budget: _Budget) -> Tri:
    if _key(a) == _key(b):
        return True
    if a.count("'") != b.count("'") or ":" in a or ":" in b:
        return False  # primes and ratios/times ("12:00") are compared as written
    a, b = _bases(a, b)
    na, nb = _number(a), _number(b)
    if na is not None and nb is not None:
        return numbers_equal(na, nb)
    if not a or not b:
        return False
    return _symbolic("expr", a, b, budget)


def _match_unordered(xs: tuple[Node, ...], ys: tuple[Node, ...], budget: _Budget) -> Tri:
    """Every item of each side equals some item of the other (sets; duplicates collapse)."""
    if not xs or not ys:
        return not xs and not ys

    def covered(zs: tuple[Node, ...], ws: tuple[Node, ...]) -> Tri:
        return _all3(
            (lambda z=z: _any3((lambda w=w: _node_equal(z, w, budget)) for w in ws)) for z in zs
        )

    return _all3((lambda: covered(xs, ys), lambda: covered(ys, xs)))


def _match_ordered(xs: tuple[Node, ...], ys: tuple[Node, ...], budget: _Budget) -> Tri:
    if len(xs) != len(ys):
        return False
    return _all3((lambda x=x, y=y: _node_equal(x, y, budget)) for x, y in zip(xs, ys, strict=True))


def _values(n: Node) -> Node:
    """An assignment map as the plain list of its values."""
    return Node("list", n.src, tuple(i.items[0] for i in n.items))


def _vector(n: Node) -> tuple[Node, ...] | None:
    rows = n.items
    if len(rows) == 1:
        return rows[0].items
    if all(len(r.items) == 1 for r in rows):
        return tuple(r.items[0] for r in rows)
    return None


_SETLIKE = {"tuple", "union", "rel"}


def _node_equal(x: Node, y: Node, budget: _Budget) -> Tri:  # noqa: C901 - one table of cases
    if _key(x.src) == _key(y.src) and x.kind == y.kind:
        return True
    kx, ky = x.kind, y.kind
    if kx == "assign" and ky == "assign":
        return _node_equal(x.items[0], y.items[0], budget)
    if "eq" in (kx, ky) and {kx, ky} <= {"eq", "assign"}:
        return _symbolic("eq", x.src, y.src, budget)
    if kx == "assign":
        return _node_equal(x.items[0], y, budget)
    if ky == "assign":
        return _node_equal(x, y.items[0], budget)
    if kx == "amap" and ky == "amap":
        nx = {i.name: i.items[0] for i in x.items}
        ny = {i.name: i.items[0] for i in y.items}
        if set(nx) == set(ny):
            return _all3((lambda k=k: _node_equal(nx[k], ny[k], budget)) for k in nx)
        return _node_equal(_values(x), _values(y), budget)
    if kx == "amap":
        return _node_equal(_values(x), y, budget)
    if ky == "amap":
        return _node_equal(x, _values(y), budget)
    if kx == ky == "expr":
        return _leaf_equal(x.src, y.src, budget)
    if kx == ky == "text":
        return _key(x.src).lower() == _key(y.src).lower()
    if "text" in (kx, ky):
        return False
    if kx in ("list", "set") and ky in ("list", "set"):
        return _match_unordered(x.items, y.items, budget)
    if {kx, ky} == {"list", "tuple"}:
        return _match_ordered(x.items, y.items, budget)
    if kx in ("set", "list") and ky == "expr":  # duplicates collapse: {a, a} = {a}
        return _all3((lambda i=i: _node_equal(i, y, budget)) for i in x.items)
    if ky in ("set", "list") and kx == "expr":
        return _all3((lambda i=i: _node_equal(x, i, budget)) for i in y.items)
    if kx == ky == "tuple":
        if len(x.items) == 2 and x.brackets != y.brackets:
            return False
        return _match_ordered(x.items, y.items, budget)
    if kx in ("union", "list") and ky in ("union", "list"):
        return _match_unordered(x.items, y.items, budget)
    if kx == ky == "matrix":
        if len(x.items) != len(y.items):
            return False
        rows = zip(x.items, y.items, strict=True)
        return _all3((lambda r=r, s=s: _match_ordered(r.items, s.items, budget)) for r, s in rows)
    if {kx, ky} == {"matrix", "tuple"}:
        m, t = (x, y) if kx == "matrix" else (y, x)
        vec = _vector(m)
        if vec is None or len(t.items) <= 2:
            return False
        return _match_ordered(vec, t.items, budget)
    if kx in _SETLIKE and ky in _SETLIKE and "rel" in (kx, ky):
        return _symbolic("set", x.src, y.src, budget)
    if "expr" in (kx, ky) and ("\\begin" in x.src or "\\begin" in y.src):
        return _symbolic("expr", x.src, y.src, budget)
    return False


def _candidate_equal(a: str, b: str, budget: _Budget) -> Tri:
    if _key(a) == _key(b):
        return True
    if len(a) > MAX_ANSWER_CHARS or len(b) > MAX_ANSWER_CHARS:
        return False
    return _node_equal(_parse(a), _parse(b), budget)


def equiv_verdict(pred: str, gold: str) -> Verdict:
    """Whether the answers ``pred`` and ``gold`` (LaTeX or plain strings) are mathematically
    equal, with a status: ``"timeout"`` when it could not be decided within the CPU budgets.

    Never raises. Spends at most ``CALL_CPU_S`` of helper CPU time (plus a one-time start of the
    helper processes); how long that takes in wall time depends on the machine's load, the verdict
    does not.
    """
    if not isinstance(pred, str) or not isinstance(gold, str):
        return Verdict(False)
    if pred.strip() and pred.strip() == gold.strip():
        return Verdict(True)  # identical answers, whatever they are
    budget = _Budget(CALL_CPU_S)
    try:
        pc, gc = candidates(pred), candidates(gold)
        pairs = ((a, b) for a in pc for b in gc)
        found = _any3((lambda a=a, b=b: _candidate_equal(a, b, budget)) for a, b in pairs)
    except Exception:  # noqa: BLE001 - the grader never raises on model garbage
        logger.debug("is_equiv failed on %r vs %r", pred, gold, exc_info=True)
        return Verdict(False, OK, budget.used)
    if found is None:
        logger.info("grading timed out: %.80r vs %.80r", pred, gold)
        return Verdict(False, TIMEOUT, budget.used)
    return Verdict(found, OK, budget.used)


def is_equiv(pred: str, gold: str) -> bool:
    """``equiv_verdict(pred, gold).equivalent``: False also when the comparison timed out."""
    return equiv_verdict(pred, gold).equivalent


def grade_verdict(output_text: str, gold: str) -> Verdict:
    """Extract the final answer of ``output_text`` and compare it with ``gold`` (with status)."""
    pred = extract_answer(output_text) if isinstance(output_text, str) else None
    if pred is None:
        return Verdict(False)
    return equiv_verdict(pred, gold)


def grade(output_text: str, gold: str) -> bool:
    """``grade_verdict(output_text, gold).equivalent``."""
    return grade_verdict(output_text, gold).equivalent


def canonical(answer: str) -> str:
    """A cheap key: answers with equal keys are equivalent (the converse need not hold)."""
    if not isinstance(answer, str):
        return ""
    try:
        cands = candidates(answer)
    except Exception:  # noqa: BLE001
        return "raw:" + answer
    if not cands:
        return "raw:" + answer
    first = cands[0]
    num = _number(first)
    if num is not None and num.places is None or num is not None and _exact(num.value, num.places):
        return f"num:{num.value}"
    return "str:" + _key(first)


def _exact(value: Fraction, places: int | None) -> bool:
    """A short decimal (fewer places than the rounding rule applies to) is an exact value."""
    return places is not None and places < 4

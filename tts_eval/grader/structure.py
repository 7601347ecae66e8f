"""Read the structure of a normalised answer: lists, sets, tuples/intervals, unions, matrices,
assignments, equations, relations, ``\\pm`` - down to scalar leaves (LaTeX expression strings).

Pure string work, no sympy: the leaves are compared later by ``numeric`` and ``symbolic``.
Semantics encoded here (and relied on by ``equiv``):

- ``a, b`` / ``a; b`` / ``a and b`` / ``a or b``: a bare list (unordered against lists and sets,
  ordered against a tuple, since ``(1,3)`` and ``1,3`` are both how a pair gets written).
- ``\\{a, b\\}``: a set. Plain ``{a, b}`` braces only group (LaTeX renders them invisibly).
- ``(a, b)``, ``[a, b)``, ...: a tuple remembering its brackets; with two items it is also an
  interval (the brackets then decide open/closed).
- ``A \\cup B``: a union; ``x \\in S``: S; ``x < 3``, ``-2 \\le x \\le 7``: intervals when one side
  is a bare variable; other relations stay relations.
- ``x = 5``: an assignment when the left side is a name (``x``, ``f(x)``, ``|AB|``, ``(p,q)``,
  ``A:B``), compared by its value; ``2x + 4y = 3`` stays an equation. ``a = b = c``: the last part.
- ``a \\pm b``: the list ``a + b, a - b``. ``a \\approx b``: ``a`` (``b`` when ``a`` is a name).

Bounds: nesting deeper than ``MAX_DEPTH`` stays one ``expr`` leaf; a list, set, tuple, union or
matrix of more than ``MAX_ITEMS`` items (or rows) is not cut short but kept whole as a ``text``
node, which only equals the same text (a 100-item list of ones is not the answer ``1``).

What it does not do: evaluate anything, or normalise LaTeX (``latex.normalize`` runs first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_DEPTH = 12
MAX_ITEMS = 64


@dataclass(frozen=True)
class Node:
    """One parsed answer (sub)structure. ``src`` is the LaTeX it came from."""

    kind: str  # expr text list set tuple union matrix assign amap eq rel
    src: str
    items: tuple[Node, ...] = ()
    brackets: str = ""  # tuple: opening + closing bracket, e.g. "[)"
    name: str = ""  # assign: the normalised left-hand side


_OPEN = "([{"
_CLOSE = ")]}"
_WORD_SEP_RE = re.compile(
    r"\s+(?:and|or)\s+|(?<=[0-9)\]}])\s*(?:and|or)\s*(?=[A-Za-z0-9(\[{\\-])", re.I
)
_THOUSANDS_RE = re.compile(r"^-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")
_REL_RE = re.compile(r"\\leq|\\geq|\\neq|<|>")
_IN_RE = re.compile(r"\\in(?![A-Za-z])")
_CUP_RE = re.compile(r"\\cup(?![A-Za-z])")
_APPROX_RE = re.compile(r"\\approx(?![A-Za-z])|≈")
_PM_RE = re.compile(r"\\pm(?![A-Za-z])|\\mp(?![A-Za-z])|±")
_MATRIX_RE = re.compile(
    r"^\\begin\{([pbvBV]?matrix|array)\}(?:\{[^{}]*\})?((?:(?!\\begin|\\end).)*)\\end\{\1\}$",
    re.DOTALL,
)
_TEXT_RE = re.compile(r"^[A-Za-z][A-Za-z '\-]*[A-Za-z]$")
_SIMPLE_VAR_RE = re.compile(r"^[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?(?:\([A-Za-z]\))?$")
_NAME_CHARS_RE = re.compile(r"^[A-Za-z\\{}():|,' \[\]]+$")


def _depth_scan(s: str):
    """Yield (index, depth_before) for every character, counting ( [ { against ) ] }."""
    depth = 0
    for i, c in enumerate(s):
        yield i, depth
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth = max(0, depth - 1)


def split_top(s: str, pattern: re.Pattern[str]) -> list[str]:
    """Split ``s`` on matches of ``pattern`` that lie outside all brackets."""
    depths = [0] * (len(s) + 1)
    for i, d in _depth_scan(s):
        depths[i] = d
    parts, last = [], 0
    for m in pattern.finditer(s):
        if depths[m.start()] == 0 and (m.start() == 0 or s[m.start() - 1] != "\\"):
            parts.append(s[last : m.start()])
            last = m.end()
    parts.append(s[last:])
    return parts


def _split_relations(s: str) -> tuple[list[str], list[str]]:
    depths = [0] * (len(s) + 1)
    for i, d in _depth_scan(s):
        depths[i] = d
    parts, ops, last = [], [], 0
    for m in _REL_RE.finditer(s):
        if depths[m.start()] == 0:
            parts.append(s[last : m.start()].strip())
            ops.append(m.group(0))
            last = m.end()
    parts.append(s[last:].strip())
    return parts, ops


def _outer_close(s: str) -> int:
    """Index of the bracket closing the one at s[0] (any of ( [ { pairs with any closer), or -1."""
    depth = 0
    for i, c in enumerate(s):
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            if depth == 0:
                return i
    return -1


def name_key(s: str) -> str:
    """A comparable form of a left-hand-side name: ``x_{1}`` and ``x_1`` give the same key."""
    s = re.sub(r"_\{([A-Za-z0-9])\}", r"_\1", s)
    return re.sub(r"\s+", "", s)


def is_name(s: str) -> bool:
    """Whether ``s`` names the unknown rather than computes (``x``, ``f(x)``, ``|AB|``)."""
    s = re.sub(r"_\{[^{}]*\}|_[A-Za-z0-9]", "", s.strip())
    if not s or len(s) > 40 or not re.search(r"[A-Za-z]", s):
        return False
    s = re.sub(r"\\(?:frac|angle|overline|vec|hat|bar|mathbf|operatorname)(?![A-Za-z])", "", s)
    return _NAME_CHARS_RE.match(s) is not None


def _is_simple_var(s: str) -> bool:
    return _SIMPLE_VAR_RE.match(s.strip()) is not None


def parse(s: str, depth: int = 0) -> Node:
    """The structure of the normalised answer ``s`` (see the module docstring)."""
    s = s.strip()
    if depth > MAX_DEPTH:
        return Node("expr", s)
    groups = []
    for chunk in split_top(s, re.compile(";")):
        groups.extend(g.strip() for g in split_top(chunk, _WORD_SEP_RE) if g.strip(" ,"))
    if len(groups) > 1:
        if len(groups) > MAX_ITEMS:
            return Node("text", s)
        return _make_list(s, [_parse_group(g, depth + 1) for g in groups])
    return _parse_group(s, depth)


def _make_list(src: str, nodes: list[Node]) -> Node:
    flat: list[Node] = []
    for n in nodes:
        if n.kind == "list":
            flat.extend(n.items)
        else:
            flat.append(n)
    return flat[0] if len(flat) == 1 else Node("list", src, tuple(flat))


def _parse_group(s: str, depth: int) -> Node:
    s = s.strip(" ,")
    if _THOUSANDS_RE.match(s):
        return Node("expr", s)
    parts = [p.strip() for p in split_top(s, re.compile(",")) if p.strip()]
    if len(parts) <= 1:
        return _parse_item(parts[0] if parts else s, depth)
    if len(parts) > MAX_ITEMS:
        return Node("text", s)
    nodes = [_parse_item(p, depth + 1) for p in parts]
    names = [n.name for n in nodes if n.kind == "assign"]
    if len(names) == len(nodes) and len(set(names)) == len(names):
        return Node("amap", s, tuple(nodes))
    return _make_list(s, [n.items[0] if n.kind == "assign" else n for n in nodes])


def _interval(src: str, lo: str, hi: str, lclosed: bool, rclosed: bool, depth: int) -> Node:
    items = (_parse_item(lo, depth + 1), _parse_item(hi, depth + 1))
    return Node("tuple", src, items, ("[" if lclosed else "(") + ("]" if rclosed else ")"))


def _relation(s: str, depth: int) -> Node | None:
    parts, ops = _split_relations(s)
    if not ops or any(not p for p in parts):
        return None
    if len(ops) == 1 and ops[0] != "\\neq":
        lhs, rhs = parts
        op = ops[0]
        if not _is_simple_var(lhs) and _is_simple_var(rhs):
            lhs, rhs = rhs, lhs
            op = {"<": ">", ">": "<", "\\leq": "\\geq", "\\geq": "\\leq"}[op]
        if _is_simple_var(lhs) and lhs not in rhs:
            closed = op in ("\\leq", "\\geq")
            if op in ("<", "\\leq"):
                return _interval(s, "-\\infty", rhs, False, closed, depth)
            return _interval(s, rhs, "\\infty", closed, False, depth)
    if len(ops) == 2 and _is_simple_var(parts[1]) and parts[1] not in parts[0] + parts[2]:
        if all(o in ("<", "\\leq") for o in ops):
            return _interval(s, parts[0], parts[2], ops[0] == "\\leq", ops[1] == "\\leq", depth)
        if all(o in (">", "\\geq") for o in ops):
            return _interval(s, parts[2], parts[0], ops[1] == "\\geq", ops[0] == "\\geq", depth)
    return Node("rel", s)


def _parse_item(s: str, depth: int) -> Node:
    s = s.strip()
    if depth > MAX_DEPTH or not s:
        return Node("expr", s)
    approx = [p.strip() for p in split_top(s, _APPROX_RE)]
    if len(approx) > 1:
        keep = next((p for p in approx if p and not is_name(p)), approx[-1])
        return _parse_item(keep, depth + 1)
    for sep in (re.compile(r"\\implies|\\Rightarrow|\\Longrightarrow|\\to(?![A-Za-z])"),):
        parts = [p for p in split_top(s, sep) if p.strip()]
        if len(parts) > 1:
            return _parse_item(parts[-1], depth + 1)
    eq = [p.strip() for p in split_top(s, re.compile(r"(?<![<>!\\])=(?!=)"))]
    if len(eq) >= 3 and eq[-1]:
        return _parse_item(eq[-1], depth + 1)
    if len(eq) == 2 and eq[0] and eq[1]:
        if is_name(eq[0]):
            value = parse(eq[1], depth + 1)
            return Node("assign", s, (value,), name=name_key(eq[0]))
        if not re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", s)):
            return _parse_item(
                eq[1], depth + 1
            )  # "\frac{1}{2} = 0.5": a computation, keep the result
        return Node("eq", s)
    ins = [p.strip() for p in split_top(s, _IN_RE)]
    if len(ins) == 2 and ins[1] and (not ins[0] or is_name(ins[0])):
        return parse(ins[1], depth + 1)
    rel = _relation(s, depth)
    if rel is not None:
        return rel
    cups = [p.strip() for p in split_top(s, _CUP_RE)]
    if len(cups) > MAX_ITEMS:
        return Node("text", s)
    if len(cups) > 1 and all(cups):
        return Node("union", s, tuple(_parse_item(p, depth + 1) for p in cups))
    m = _MATRIX_RE.match(s)
    if m:
        return _matrix(s, m.group(2), depth)
    if s[0] in _OPEN or s.startswith("\\{"):
        node = _bracketed(s, depth)
        if node is not None:
            return node
    if _PM_RE.search(s):
        plus = _PM_RE.sub("+", s, count=1)
        minus = _PM_RE.sub("-", s, count=1)
        if s.lstrip().startswith(("\\mp", "∓")):
            plus, minus = minus, plus
        return _make_list(s, [_parse_item(plus, depth + 1), _parse_item(minus, depth + 1)])
    if _TEXT_RE.match(s) and len(re.sub(r"[^A-Za-z]", "", s)) >= 3:
        return Node("text", s)
    return Node("expr", s)


def _bracketed(s: str, depth: int) -> Node | None:
    if s.startswith("\\{"):
        close = _outer_close(s[1:])
        if close == len(s) - 2 and s[close] == "\\":
            inner = s[2:close].strip()
            if not inner:
                return Node("set", s)
            body = parse(inner, depth + 1)
            return Node("set", s, body.items if body.kind == "list" else (body,))
        return None
    close = _outer_close(s)
    if close != len(s) - 1:
        return None
    inner = s[1:-1].strip()
    if s[0] == "{" or s[-1] == "}":
        return parse(inner, depth + 1) if s[0] == "{" and s[-1] == "}" else None
    parts = [p.strip() for p in split_top(inner, re.compile(","))]
    if len(parts) == 1:
        parts = [p.strip() for p in split_top(inner, re.compile(";"))]
    if len(parts) == 1:
        return parse(inner, depth + 1) if inner else None
    if any(not p for p in parts):
        return None
    if len(parts) > MAX_ITEMS:
        return Node("text", s)
    items = tuple(_parse_item(p, depth + 1) for p in parts)
    return Node("tuple", s, items, s[0] + s[-1])


def _matrix(src: str, body: str, depth: int) -> Node:
    rows = [r.strip() for r in re.split(r"\\\\", body)]
    rows = [r for r in rows if r and not r.startswith("\\hline")]
    if len(rows) > MAX_ITEMS or any(r.count("&") >= MAX_ITEMS for r in rows):
        return Node("text", src)
    cells = tuple(
        Node("list", r, tuple(_parse_item(c, depth + 1) for c in r.split("&"))) for r in rows
    )
    return Node("matrix", src, cells)

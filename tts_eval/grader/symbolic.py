"""The symbolic rung: LaTeX -> sympy (latex2sympy2_extended) and equality tests on the results.

Functions here take LaTeX strings and return ``True``/``False`` (``None``: could not parse).
They can run for unbounded time on hostile input, so callers never call them directly:
``bounded.call`` runs them in a helper process with a timeout. Sympy is imported lazily.

Equality of two expressions: structural, then exact numeric evaluation when there are no free
symbols (with the long-decimal rounding rule of ``numeric``), then probing at fixed points,
then ``simplify(a - b) == 0``. Equations are equal when ``(l1 - r1) / (l2 - r2)`` is a nonzero
constant; relations and intervals are compared as subsets of the reals in their one variable.
What it does not do: string normalisation or structure (``latex``, ``structure``).
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

logger = logging.getLogger(__name__)

_PROBES = ((0.5772, 1.3247, 2.6854), (1.6180, 0.4142, 3.1416), (2.2361, 0.7071, 1.4142))
_TOL = 1e-9
MAX_LATEX_CHARS = 600


def _sympy():
    try:
        import sympy
    except ImportError as e:  # pragma: no cover - sympy is a core dependency
        raise ImportError("the grader needs sympy: pip install sympy") from e
    return sympy


@functools.lru_cache(maxsize=4096)
def parse_latex(s: str) -> Any:
    """The sympy object of the LaTeX ``s`` (imaginary ``i`` becomes ``I``), or None."""
    if not s or len(s) > MAX_LATEX_CHARS:
        return None
    sympy = _sympy()
    try:
        from latex2sympy2_extended import latex2sympy
    except ImportError as e:  # pragma: no cover
        raise ImportError("the grader needs latex2sympy2_extended: pip install tts-eval") from e
    try:
        expr = latex2sympy(s)
    except Exception:  # noqa: BLE001 - any parser failure means "not parseable"
        return None
    if expr is None:
        return None
    try:
        if isinstance(expr, sympy.MatrixExpr):
            expr = expr.doit()  # "A + B", "A B" of explicit matrices
    except Exception:  # noqa: BLE001
        return None
    try:
        i_sym = [x for x in getattr(expr, "free_symbols", ()) if str(x) == "i"]
        if i_sym:
            expr = expr.subs(i_sym[0], sympy.I)
    except Exception:  # noqa: BLE001
        pass
    return expr


def _decimal_places(s: str) -> int | None:
    m = re.fullmatch(r"\s*-?\d*\.(\d+)\s*", s)
    return len(m.group(1)) if m else None


def _close(x: complex, y: complex, places: int | None) -> bool:
    if places is not None and places >= 4:
        return abs(x - y) <= 0.5 * 10**-places + 1e-12
    return abs(x - y) <= _TOL * max(1.0, abs(x), abs(y))


def _num(expr: Any) -> complex | None:
    try:
        v = complex(expr.evalf(30))
    except Exception:  # noqa: BLE001
        return None
    if v != v or abs(v) == float("inf"):
        return None
    return v


def _probe(expr: Any, symbols: list, point: tuple[float, ...]) -> complex | None:
    vals = {s: point[i % len(point)] + 0.1 * (i // len(point)) for i, s in enumerate(symbols)}
    try:
        return _num(expr.subs(vals))
    except Exception:  # noqa: BLE001
        return None


def _scalar_equal(a: Any, b: Any, places: int | None) -> bool | None:
    sympy = _sympy()
    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)):
        return None
    try:
        diff = a - b
    except Exception:  # noqa: BLE001
        return None
    if diff == 0:
        return True
    free = sorted(diff.free_symbols, key=str)
    if not free:
        va, vb = _num(a), _num(b)
        if va is not None and vb is not None:
            return _close(va, vb, places)
    else:
        results = []
        for point in _PROBES:
            va, vb = _probe(a, free, point), _probe(b, free, point)
            if va is None or vb is None:
                results = []
                break
            results.append(_close(va, vb, None))
        if results:
            return all(results)
    try:
        return bool(sympy.simplify(diff) == 0)
    except Exception:  # noqa: BLE001
        return False


def _matrix_equal(a: Any, b: Any) -> bool:
    if a.shape != b.shape:
        return False
    return all(_scalar_equal(x, y, None) for x, y in zip(a, b, strict=True))


def expr_equal(a: str, b: str) -> bool | None:
    """Whether the LaTeX expressions ``a`` and ``b`` are equal; None when either does not parse."""
    sympy = _sympy()
    ea, eb = parse_latex(a), parse_latex(b)
    if ea is None or eb is None:
        return None
    try:
        if ea == eb:
            return True
    except Exception:  # noqa: BLE001
        return False
    if isinstance(ea, sympy.MatrixBase) or isinstance(eb, sympy.MatrixBase):
        if isinstance(ea, sympy.MatrixBase) and isinstance(eb, sympy.MatrixBase):
            return _matrix_equal(ea, eb)
        return False
    if isinstance(ea, sympy.Equality) and isinstance(eb, sympy.Equality):
        return eq_equal(a, b)
    places = _decimal_places(a) or _decimal_places(b)
    res = _scalar_equal(ea, eb, places)
    return bool(res) if res is not None else False


def _eq_parts(s: str) -> Any:
    sympy = _sympy()
    e = parse_latex(s)
    if isinstance(e, sympy.Equality):
        return e.lhs - e.rhs
    return None


def eq_equal(a: str, b: str) -> bool | None:
    """Equations ``l1 = r1`` and ``l2 = r2`` with ``(l1 - r1) / (l2 - r2)`` a nonzero constant."""
    sympy = _sympy()
    da, db = _eq_parts(a), _eq_parts(b)
    if da is None or db is None:
        return None
    if da == db or da == -db:
        return True
    free = sorted(da.free_symbols | db.free_symbols, key=str)
    ratios = []
    for point in _PROBES:
        va, vb = _probe(da, free, point), _probe(db, free, point)
        if va is None or vb is None or abs(vb) < 1e-12:
            ratios = []
            break
        ratios.append(va / vb)
    if ratios:
        r0 = ratios[0]
        return abs(r0) > 1e-12 and all(abs(r - r0) <= 1e-9 * max(1, abs(r0)) for r in ratios)
    try:
        q = sympy.simplify(da / db)
        return bool(not q.free_symbols and q != 0)
    except Exception:  # noqa: BLE001
        return False


def _as_real_set(e: Any) -> Any:
    """A relation (or and/or of relations) in one variable as a subset of the reals, or None."""
    sympy = _sympy()
    if isinstance(e, sympy.Set):
        return e
    if not isinstance(e, (sympy.Rel, sympy.And, sympy.Or)):
        return None
    free = list(e.free_symbols)
    if len(free) != 1:
        return None
    real_x = sympy.Symbol(str(free[0]), real=True)
    return _rel_set(e.subs(free[0], real_x), real_x)


def _rel_set(e: Any, x: Any) -> Any:
    sympy = _sympy()
    if isinstance(e, sympy.And):
        parts = [_rel_set(a, x) for a in e.args]
        return None if any(p is None for p in parts) else sympy.Intersection(*parts)
    if isinstance(e, sympy.Or):
        parts = [_rel_set(a, x) for a in e.args]
        return None if any(p is None for p in parts) else sympy.Union(*parts)
    try:
        return sympy.solveset(e, x, domain=sympy.S.Reals)
    except Exception:  # noqa: BLE001
        return None


def set_equal(a: str, b: str) -> bool | None:
    """Relations/intervals/unions ``a`` and ``b`` as subsets of the reals (one variable each)."""
    sympy = _sympy()
    ea, eb = parse_latex(a), parse_latex(b)
    if ea is None or eb is None:
        return None
    sa, sb = _as_real_set(ea), _as_real_set(eb)
    if sa is None or sb is None:
        if isinstance(ea, sympy.Rel) and isinstance(eb, sympy.Rel):
            return _relations_equal(ea, eb)
        return False
    try:
        if sa == sb:
            return True
        return bool(sympy.Complement(sa, sb) == sympy.S.EmptySet) and bool(
            sympy.Complement(sb, sa) == sympy.S.EmptySet
        )
    except Exception:  # noqa: BLE001
        return False


def _relations_equal(a: Any, b: Any) -> bool:
    """Multivariate relations: same kind and ``lhs - rhs`` a positive multiple of each other."""
    sympy = _sympy()

    def norm(r):
        if isinstance(r, (sympy.StrictLessThan, sympy.LessThan)):
            return r.rhs - r.lhs, isinstance(r, sympy.StrictLessThan), "ord"
        if isinstance(r, (sympy.StrictGreaterThan, sympy.GreaterThan)):
            return r.lhs - r.rhs, isinstance(r, sympy.StrictGreaterThan), "ord"
        return r.lhs - r.rhs, False, type(r).__name__

    da, sa, ka = norm(a)
    db, sb, kb = norm(b)
    if (sa, ka) != (sb, kb):
        return False
    try:
        q = sympy.simplify(da / db)
    except Exception:  # noqa: BLE001
        return False
    if q.free_symbols or q == 0:
        return False
    return bool(q > 0) if ka == "ord" else True


WARM_UP = (
    r"\frac{1}{2}+\sqrt{3}x^2",
    r"\sin(x)+\cos(y)",
    r"\sum_{k=0}^{n-1} F_k F_{n-k-1}",
    r"\int_0^1 x^2 dx",
    r"\begin{pmatrix}1&2\\3&4\end{pmatrix}",
    r"[1,2)\cup(3,\infty)",
    r"x \leq 5",
    r"y=2x+1",
)


def warm_up() -> None:
    """Parse a few typical inputs once (the LaTeX parser is slow on its first use of a rule)."""
    for s in WARM_UP:
        parse_latex(s)
    set_equal("-x > -1", "x < 1")  # imports the solvers (slow the first time)
    expr_equal(r"\frac{x}{f(x)}", r"\frac{x+0}{f(x)}")  # and simplify


OPS = {"expr": expr_equal, "eq": eq_equal, "set": set_equal}


def run_op(op: str, a: str, b: str) -> bool | None:
    """Dispatch one named comparison (the unit of work a bounded call runs)."""
    return OPS[op](a, b)

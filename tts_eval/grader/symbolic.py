"""The symbolic rung: LaTeX -> sympy (latex2sympy2_extended) and equality tests on the results.

Functions here take LaTeX strings and return ``True``/``False`` (``None``: could not parse).
They can run for unbounded time on hostile input, so callers never call them directly:
``bounded.run`` runs them in a helper process on a CPU budget. Sympy is imported lazily.

Equality of two expressions: structural, then numeric evaluation when there are no free symbols,
then probing at fixed points, then ``simplify(a - b) == 0``. Constants are evaluated with mpmath
node by node (linear in the size of the expression; sympy's own ``evalf`` is exponential on nested
radicals) and compared by these rules: a decimal literal with 4+ places matches a value that rounds
to it (``numeric``'s rule); an expression holding a decimal (a sympy ``Float``) matches within a
relative ``1e-9``; exact expressions are compared exactly when rational, else must agree to
about 100 significant digits (evaluated at 30 and at 120 digits, they must converge), so
``2^{2^{-40}}`` is not ``1`` and ``\\frac{10^{10}+1}{10^{10}}`` is not ``1`` (an expression with a
node the mpmath rules do not know, such as a sum, falls back to ``evalf`` and ``1e-9``).
Equations are equal when ``(l1 - r1) / (l2 - r2)`` is a nonzero constant; relations and intervals
are compared as subsets of the reals in their one variable.

Refused (``parse_latex`` gives None, so the comparison is "not equal" at once): inputs longer than
``MAX_LATEX_CHARS``, undefined values (``\\frac{1}{0}``), and constants whose exact value would
need more than ``MAX_DIGITS`` digits (``10^{10^{10^{10}}}``: sympy would try to build the integer).
What it does not do: string normalisation or structure (``latex``, ``structure``).
"""

from __future__ import annotations

import functools
import logging
import math
import re
from fractions import Fraction
from typing import Any

logger = logging.getLogger(__name__)

_PROBES = ((0.5772, 1.3247, 2.6854), (1.6180, 0.4142, 3.1416), (2.2361, 0.7071, 1.4142))
_TOL = 1e-9
_LOW_DPS, _HIGH_DPS = 30, 120
MAX_LATEX_CHARS = 600
MAX_DIGITS = 10_000
_LOG10_2 = 0.30103


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
        raise ImportError(
            "the grader needs latex2sympy2_extended: pip install tts-scaling-eval"
        ) from e
    try:
        expr = latex2sympy(s)
    except Exception:  # noqa: BLE001 - any parser failure means "not parseable"
        return None
    if expr is None or _digits(expr) > MAX_DIGITS:
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
    try:
        if expr.has(sympy.S.ComplexInfinity, sympy.S.NaN):
            return None  # undefined (division by zero): equal to nothing
    except Exception:  # noqa: BLE001
        return None
    return expr


def _abs_bound(e: Any) -> float:
    """An upper bound of ``|e|`` for a symbol-free unevaluated tree (``inf`` when huge)."""
    if getattr(e, "is_Rational", False):
        try:
            return abs(int(e.p)) / int(e.q)
        except OverflowError:
            return math.inf
    if getattr(e, "is_Float", False):
        return abs(float(e))
    args = getattr(e, "args", ())
    if not args:
        return 4.0  # pi, E, I, ...
    bounds = [_abs_bound(a) for a in args]
    if getattr(e, "is_Add", False):
        return sum(bounds)
    if getattr(e, "is_Mul", False):
        return math.prod(bounds)
    if getattr(e, "is_Pow", False):
        if e.args[1].is_Rational and e.args[1] < 0 and bounds[0] >= 1 and e.args[0].is_Rational:
            return 1.0  # 2^{-40}
        base, ex = max(bounds[0], 2.0), bounds[1]
        return math.inf if ex * math.log10(base) > 300 else base**ex
    if type(e).__name__ in _GROWTH_FUNCS:
        n = max(bounds)
        return math.inf if n > 170 else float(math.factorial(int(n) + 1))
    return max(bounds)


_GROWTH_FUNCS = {"factorial", "gamma", "binomial", "factorial2", "subfactorial", "RisingFactorial"}


def _digits(e: Any) -> float:
    """An upper bound of the decimal digits of the exact value sympy would build for ``e`` (its
    symbol-free parts); ``inf`` when astronomically large. Reads the unevaluated tree only."""
    if getattr(e, "is_Rational", False):
        return (abs(e.p).bit_length() + abs(e.q).bit_length()) * _LOG10_2 + 1
    args = getattr(e, "args", ())
    if not args:
        return 1.0
    symbol_free = not getattr(e, "free_symbols", True)
    if getattr(e, "is_Pow", False) and symbol_free:
        exponent, base = _abs_bound(e.args[1]), e.args[0]
        if exponent > 1e15:
            return math.inf
        if base.is_Rational:
            per = math.log10(max(abs(int(base.p)), 1)) + math.log10(int(base.q))
        else:
            per = _digits(base)
        return math.ceil(exponent) * per + 1
    if type(e).__name__ in _GROWTH_FUNCS and symbol_free:
        n = max(_abs_bound(a) for a in args)
        return n * math.log10(max(n, 2.0)) + 1
    return sum(_digits(a) for a in args)


def _mp_value(e: Any, mp: Any) -> Any:
    """The mpmath value of a symbol-free sympy tree at ``mp``'s current precision (linear time).

    Raises ``ValueError`` on a node it does not know (callers fall back to sympy's ``evalf``)."""
    sympy = _sympy()
    if e.is_Integer:
        return mp.mpf(int(e))
    if e.is_Rational:
        return mp.mpf(int(e.p)) / int(e.q)
    if e.is_Float:
        return mp.mpf(e._mpf_)
    consts = {sympy.S.Pi: mp.pi, sympy.S.Exp1: mp.e, sympy.S.ImaginaryUnit: mp.mpc(0, 1)}
    if e in consts:
        return consts[e]
    args = [_mp_value(a, mp) for a in e.args]
    if e.is_Add:
        return mp.fsum(args)
    if e.is_Mul:
        return mp.fprod(args)
    if e.is_Pow:
        return mp.power(args[0], args[1])
    name = type(e).__name__
    if name == "log":
        return mp.log(args[0]) if len(args) == 1 else mp.log(args[0]) / mp.log(args[1])
    fn = _MP_FUNCS.get(name)
    if fn is None:
        raise ValueError(f"no mpmath rule for {name}")
    return getattr(mp, fn)(*args) if fn != "abs" else abs(args[0])


_MP_FUNCS = {
    **{f: f for f in ("sin", "cos", "tan", "cot", "sec", "csc", "asin", "acos", "atan", "acot")},
    **{f: f for f in ("sinh", "cosh", "tanh", "exp", "sqrt", "floor", "factorial", "gamma")},
    "ceiling": "ceil",
    "binomial": "binomial",
    "Abs": "abs",
    "UnevaluatedExpr": "mpmathify",
    "re": "re",
    "im": "im",
    "conjugate": "conj",
}


def _value(expr: Any, dps: int, fallback: bool = True) -> Any:
    """The mpmath value of a symbol-free expression at ``dps`` digits, or None. A node the mpmath
    rules do not know falls back to sympy's ``evalf`` (as a complex double) unless not ``fallback``.
    """
    import mpmath

    with mpmath.workdps(dps):
        try:
            v = mpmath.mpmathify(_mp_value(expr, mpmath.mp))
        except (ValueError, TypeError, ZeroDivisionError, OverflowError, RecursionError):
            if not fallback:
                return None
            try:
                v = mpmath.mpmathify(complex(expr.evalf(dps)))
            except Exception:  # noqa: BLE001
                return None
        except Exception:  # noqa: BLE001
            return None
        if not mpmath.isfinite(v):
            return None
        return +v


def _decimal_places(s: str) -> int | None:
    m = re.fullmatch(r"\s*-?\d*\.(\d+)\s*", s)
    return len(m.group(1)) if m else None


def _close(x: complex, y: complex, places: int | None) -> bool:
    if places is not None and places >= 4:
        return abs(x - y) <= 0.5 * 10**-places + 1e-12
    return abs(x - y) <= _TOL * max(1.0, abs(x), abs(y))


def _num(expr: Any) -> complex | None:
    v = _value(expr, _LOW_DPS)
    if v is None:
        return None
    try:
        c = complex(v)
    except (OverflowError, TypeError, ValueError):
        return None
    if c != c or abs(c) == float("inf"):
        return None
    return c


def _exact_rational(e: Any) -> Fraction | None:
    """The exact value of a tree of rationals under + * and integer powers (factorials,
    binomials), or None. Sizes are bounded beforehand by ``MAX_DIGITS`` (``parse_latex``)."""
    if e.is_Rational:
        return Fraction(int(e.p), int(e.q))
    name = type(e).__name__
    parts = [_exact_rational(a) for a in e.args]
    if not parts or any(p is None for p in parts):
        return None
    if e.is_Add:
        return sum(parts, Fraction(0))
    if e.is_Mul:
        return math.prod(parts, start=Fraction(1))
    if e.is_Pow:
        base, ex = parts
        if ex.denominator != 1 or (base == 0 and ex < 0):
            return None
        return base ** int(ex)
    if name in ("factorial", "binomial") and all(p.denominator == 1 and p >= 0 for p in parts):
        n = [int(p) for p in parts]
        return Fraction(math.factorial(n[0]) if name == "factorial" else math.comb(*n))
    if name == "UnevaluatedExpr":
        return parts[0]
    return None


def _exact_constants_equal(a: Any, b: Any) -> bool | None:
    """Two exact (Float-free) constants: rationals exactly; others to about 100 significant
    digits (at 120 digits their difference must be negligible, or far below what it was at 30
    digits: it converges to zero). None when either holds a node the mpmath rules do not know
    (the caller then compares doubles within ``_TOL``)."""
    try:
        fa, fb = _exact_rational(a), _exact_rational(b)
    except (ValueError, ZeroDivisionError, OverflowError):
        fa = fb = None
    if fa is not None and fb is not None:
        return fa == fb
    lo_a, lo_b = _value(a, _LOW_DPS, fallback=False), _value(b, _LOW_DPS, fallback=False)
    if lo_a is None or lo_b is None:
        return None
    d_lo = abs(lo_a - lo_b)
    if d_lo > _TOL * max(1, abs(lo_a), abs(lo_b)):
        return False
    hi_a, hi_b = _value(a, _HIGH_DPS, fallback=False), _value(b, _HIGH_DPS, fallback=False)
    if hi_a is None or hi_b is None:
        return None
    d_hi = abs(hi_a - hi_b)
    agree = d_hi <= max(abs(hi_a), abs(hi_b)) * 10.0 ** -(_HIGH_DPS - 20)
    return bool(agree or d_hi <= d_lo * 1e-40)


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
        rounded = places is not None and places >= 4
        if not rounded and not (a.has(sympy.Float) or b.has(sympy.Float)):
            res = _exact_constants_equal(a, b)
            if res is not None:
                return res
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

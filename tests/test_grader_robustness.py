"""The grader never raises and stays bounded: properties, threads, processes, timeouts.

Time bounds are stated in the helpers' CPU time (what the grader budgets), with wall-clock limits
that allow for a loaded machine: a call's wall time is its own bookkeeping plus the helper CPU
seconds it reports (``Verdict.cpu_s``) stretched by load."""

from __future__ import annotations

import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tts_eval.grader import (
    MathAnswerSpec,
    bounded,
    canonical,
    equiv,
    equiv_verdict,
    extract_answer,
    grade,
    grade_verdict,
    is_equiv,
)


@pytest.fixture(scope="module", autouse=True)
def _warm_grader_helpers():
    """Start the grader's helper processes (their template imports sympy and warms the parser,
    about 1 s) before the first timed call, as the tts model does at start-up."""
    from tts_eval.grader import bounded

    assert bounded.prestart(), "grader helper processes did not start"


LIMIT_S = 2.0  # wall seconds of a call that does not run out of CPU budget, plus its helper CPU
LOAD_FACTOR = 3.0  # wall seconds per helper CPU second allowed (other tests share the machine)
CPU_SLACK_S = 0.3  # a helper notices an expired budget within its timer's 50 ms, plus accounting
ABUSE_WALL_S = 10.0  # wall seconds for an abusive answer that is decided in the main process


def _wall_limit(cpu_s: float) -> float:
    return LIMIT_S + LOAD_FACTOR * cpu_s


# Slow for sympy: the product has no closed form and is evaluated term by term (verified to run
# for > 15 s of CPU; the product of 1 + 1/k^2 used before is now decided in about 2 s).
PATHOLOGICAL = r"\prod_{k=1}^{10^{6}} (1+\frac{\sin(k)}{k^2})"

FRAGMENTS = [
    r"\frac{", "}", "{", r"\boxed{", r"\sqrt", "^", "_", "x", "1", "0", "-", "+", "=", ",", "(",
    ")", "[", "]", r"\{", r"\}", r"\left(", r"\right)", r"\pm", r"\infty", r"\cup", r"\leq",
    "<", "$", r"\text{", "and", r"\begin{pmatrix}", r"\end{pmatrix}", "&", r"\\", "%", r"\%",
    "^\\circ", ".", "9", "1,000", r"\pi", "i", "e", ":", ";", " ", r"\dfrac", "_2", "'",
]  # fmt: skip
latex_soup = st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join)
any_text = st.text(max_size=60)


def _timed(fn, *args) -> tuple[object, float]:
    t0 = time.monotonic()
    out = fn(*args)
    return out, time.monotonic() - t0


@pytest.fixture(scope="module", autouse=True)
def _helper_started() -> None:
    """Start the helper processes once (their one-time start-up is not a per-call cost)."""
    assert bounded.prestart()
    assert is_equiv("x+1", "1+x")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pred=st.one_of(latex_soup, any_text), gold=st.one_of(latex_soup, any_text))
def test_never_raises_and_returns_bool_in_time(pred: str, gold: str) -> None:
    verdict, took = _timed(equiv_verdict, pred, gold)
    assert isinstance(verdict.equivalent, bool) and verdict.status in ("ok", "timeout")
    assert verdict.cpu_s <= equiv.CALL_CPU_S + CPU_SLACK_S
    assert took < _wall_limit(verdict.cpu_s)
    assert isinstance(is_equiv(pred, gold), bool)
    assert isinstance(grade(pred, gold), bool)
    assert isinstance(canonical(pred), str)
    ext = extract_answer(pred)
    assert ext is None or isinstance(ext, str)


@settings(max_examples=100, deadline=None)
@given(a=st.one_of(latex_soup, any_text))
def test_equivalence_is_reflexive_and_canonical_consistent(a: str) -> None:
    assert is_equiv(a, a) or not a.strip()
    spec = MathAnswerSpec(cache_size=16)
    assert isinstance(spec.is_final_step(a), bool)
    assert isinstance(spec.extract(a), (str, type(None)))


@pytest.mark.parametrize("bad", [None, 5, b"5", ["5"]])
def test_non_string_inputs_answer_false(bad: object) -> None:
    assert is_equiv(bad, "5") is False  # type: ignore[arg-type]
    assert grade(bad, "5") is False  # type: ignore[arg-type]
    assert extract_answer(bad) is None  # type: ignore[arg-type]


def test_huge_inputs_are_bounded() -> None:
    big = "1" * 100_000
    for pred, gold in [(big, big + "2"), ("(" * 5000, ")" * 5000), (r"\boxed{" * 3000, "1")]:
        out, took = _timed(is_equiv, pred, gold)
        assert out in (True, False) and took < LIMIT_S
    assert _timed(extract_answer, "$" * 50_000 + "x" * 50_000)[1] < LIMIT_S


@pytest.mark.parametrize(
    "output",
    [
        r"\boxed{10^{10^{10^{10}}}}",  # sympy would build a 10^10-digit integer: refused
        r"\boxed{(10^{10})!}",
        "\\sqrt{" * 2000 + "2" + "}" * 2000,  # 16 KB bare answer: compared as a plain string
        r"\boxed{1}" * 100_000,  # 100,000 chained boxes: one 300 KB answer, a plain string
        r"\boxed{" + ", ".join(["1"] * 100) + "}",  # more than MAX_ITEMS items: as text
    ],
    ids=["power-tower", "huge-factorial", "sqrt-2000-deep", "100k-boxes", "100-items"],
)
def test_abuse_is_decided_quickly_not_timed_out(output: str) -> None:
    verdict, took = _timed(grade_verdict, output, "1")
    # "ok", not "timeout": decided by the grader's rules, not cut off by its CPU budget
    assert (verdict.equivalent, verdict.status) == (False, "ok")
    assert verdict.cpu_s <= equiv.CALL_CPU_S + CPU_SLACK_S
    # 100k boxes take ~0.8 s of linear scanning here; the bound catches a quadratic scan or a hang,
    # not a loaded machine (a run beside a benchmark took 2.05 s)
    assert took < ABUSE_WALL_S


def test_pathological_symbolic_input_times_out_then_grader_recovers() -> None:
    assert bounded.prestart()
    with pytest.raises(bounded.GraderTimeout) as info:
        bounded.call("expr", PATHOLOGICAL, "3", timeout=0.5)
    assert info.value.cpu_s <= 0.5 + CPU_SLACK_S
    verdict, took = _timed(equiv_verdict, PATHOLOGICAL, "3")
    assert verdict.status == "timeout" and verdict.equivalent is False  # reported, not "wrong"
    assert verdict.cpu_s <= equiv.STEP_CPU_S + equiv.RETRY_CPU_S + CPU_SLACK_S
    assert took < _wall_limit(verdict.cpu_s)
    assert is_equiv(PATHOLOGICAL, "3") is False  # the bool API: not shown equal
    # timed-out helpers were discarded and new ones forked: ordinary calls still work at once
    verdict, took = _timed(equiv_verdict, r"\sqrt{8}", r"2\sqrt{2}")
    assert (verdict.equivalent, verdict.status) == (True, "ok") and took < _wall_limit(
        verdict.cpu_s
    )


def test_timeout_works_off_the_main_thread() -> None:
    results: list[tuple[object, float]] = []

    def work() -> None:
        results.append(_timed(equiv_verdict, PATHOLOGICAL, "2"))
        results.append(_timed(equiv_verdict, r"\frac{x+2}{7}", r"\frac{x}{7}+\frac{2}{7}"))

    assert bounded.prestart()
    t = threading.Thread(target=work)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive()
    (slow, slow_t), (ok, ok_t) = results
    assert slow.status == "timeout" and slow.equivalent is False
    assert slow_t < _wall_limit(slow.cpu_s)
    assert ok.status == "ok" and ok.equivalent is True and ok_t < _wall_limit(ok.cpu_s)


def test_many_threads_agree_with_sequential_answers() -> None:
    pairs = [
        (r"\frac{1}{2}", "0.5", True),
        ("(x+1)^2", "x^2+2x+1", True),
        ("[1,2)", "[1,2]", False),
        (r"\sqrt{2}", "1.41", False),
        (r"2\sin x \cos x", r"\sin(2x)", True),
        ("x^3", "x^2", False),
    ] * 4
    with ThreadPoolExecutor(max_workers=8) as ex:  # 8 threads share the helper pool
        futs = [ex.submit(_timed, is_equiv, p, g) for p, g, _ in pairs]
        outs = [f.result(timeout=60) for f in futs]
    assert [o for o, _ in outs] == [e for _, _, e in pairs]
    assert max(t for _, t in outs) < LIMIT_S * 2  # waits for a free helper are short too


def _in_daemon(q) -> None:
    bounded.prestart()
    t0 = time.monotonic()
    ok = is_equiv(r"\frac{x}{7}+\frac{2}{7}", r"\frac{x+2}{7}")
    warm = time.monotonic()
    slow = equiv_verdict(PATHOLOGICAL, "3")
    q.put((ok, (slow.equivalent, slow.status, slow.cpu_s), warm - t0, time.monotonic() - warm))


@pytest.mark.slow
def test_works_inside_a_daemonic_worker_process() -> None:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_in_daemon, args=(q,), daemon=True)
    p.start()
    ok, (slow, status, cpu_s), _first_call_s, slow_s = q.get(timeout=120)
    p.join(timeout=30)
    assert ok is True and slow is False and status == "timeout"
    assert slow_s < _wall_limit(cpu_s)

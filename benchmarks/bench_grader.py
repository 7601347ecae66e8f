"""Grader latency and determinism: idle and under load, one thread and many, first call.

Run: ``python benchmarks/bench_grader.py [--repeat N] [--busy-per-core 4] [--threads 8]``.
Each timed pass grades the peer answer-equivalence corpus (``is_equiv`` on answers, ``grade`` on
whole outputs) and the MATH-500 gold self-checks (gold vs gold, boxed vs gold both ways, ``grade``
of the solution) with the grader's LRU caches cleared, so every call does its real work. Settings:

* ``idle``: helpers warmed by one untimed pass (what a long evaluation sees);
* ``idle, cold helpers``: helper processes restarted before the pass (start-up not timed, first
  use of each parser rule is);
* ``loaded``: as ``idle`` with ``--busy-per-core`` busy-loop processes per core running (each in
  its own session, like other users' jobs);
* ``N threads``: the idle pass split over ``--threads`` threads sharing the helper pool.

Prints per setting p50, p90, p99 and max latency per call, the peer corpus score (core rows), the
MATH-500 self-check score, the number of timeouts and whether every verdict equals the idle one;
then the wall time of the first symbolic call of a fresh process (helper start-up included).
Goals: idle p99 < 50 ms, idle max < 2 s; identical verdicts under load. A script, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tts_eval.grader import (  # noqa: E402
    bounded,
    equiv,
    equiv_verdict,
    extract_answer,
    grade_verdict,
)

DATA = ROOT.parent / "shared" / "data"
CORPUS = DATA / "answer_equivalence" / "peer_cases.jsonl"
MATH500 = DATA / "math500" / "test.jsonl"


@dataclass(frozen=True)
class Case:
    """One timed grader call: its name, the call, and how it counts in the scores."""

    name: str
    run: Callable[[], equiv.Verdict]
    expected: bool | None  # peer rows: the label; self-checks: True
    group: str  # "core", "other" (peer rows) or "math500"


def _peer_cases() -> list[Case]:
    cases = []
    for line in CORPUS.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        gold = (extract_answer(r["gold"]) if r["gold_is_full_output"] else r["gold"]) or ""
        core = not (
            r.get("requires_non_default_opts")
            or r.get("policy_not_math")
            or r.get("label_disputed")
        )
        if r["pred_is_full_output"]:
            run = lambda p=r["pred"], g=gold: grade_verdict(p, g)  # noqa: E731
        else:
            run = lambda p=r["pred"], g=gold: equiv_verdict(p, g)  # noqa: E731
        cases.append(Case(f"peer{r['id']}", run, r["equivalent"], "core" if core else "other"))
    return cases


def _math500_cases() -> list[Case]:
    cases = []
    for line in MATH500.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        gold, sol, uid = r["answer"], r["solution"], r["unique_id"]
        boxed = extract_answer(sol) or ""
        for name, run in (
            ("self", lambda g=gold: equiv_verdict(g, g)),
            ("boxed-gold", lambda b=boxed, g=gold: equiv_verdict(b, g)),
            ("gold-boxed", lambda b=boxed, g=gold: equiv_verdict(g, b)),
            ("grade", lambda s=sol, g=gold: grade_verdict(s, g)),
        ):
            cases.append(Case(f"{uid}:{name}", run, True, "math500"))
    return cases


def _clear_caches() -> None:
    equiv.candidates.cache_clear()
    equiv._parse.cache_clear()
    equiv._number.cache_clear()
    equiv._SYMBOLIC_CACHE.clear()


def _timed(case: Case) -> tuple[str, float, equiv.Verdict]:
    t0 = time.perf_counter()
    v = case.run()
    return case.name, time.perf_counter() - t0, v


def _pass(cases: list[Case], threads: int = 1) -> list[tuple[str, float, equiv.Verdict]]:
    _clear_caches()
    if threads <= 1:
        return [_timed(c) for c in cases]
    with ThreadPoolExecutor(max_workers=threads) as ex:
        return list(ex.map(_timed, cases))


def _percentile(ms: list[float], q: float) -> float:
    return ms[min(len(ms) - 1, int(q * len(ms)))]


def _report(name: str, cases: list[Case], runs: list[list], reference: dict | None) -> dict:
    by_name = {c.name: c for c in cases}
    ms = sorted(t * 1000 for run in runs for _, t, _ in run)
    last = runs[-1]
    verdicts = {n: (v.equivalent, v.status) for n, _, v in last}
    timeouts = sum(v.status == "timeout" for run in runs for _, _, v in run)
    score: dict[str, list[int]] = {}
    for n, _, v in last:
        c = by_name[n]
        tally = score.setdefault(c.group, [0, 0])
        tally[0] += v.equivalent == c.expected
        tally[1] += 1
    same = "" if reference is None else f"  same verdicts as idle: {verdicts == reference}"
    print(
        f"-- {name}: n={len(ms)}  p50={statistics.median(ms):.2f} ms  p90="
        f"{_percentile(ms, 0.90):.2f} ms  p99={_percentile(ms, 0.99):.2f} ms  max={ms[-1]:.2f} ms"
    )
    parts = [f"{g} {h}/{t}" for g, (h, t) in sorted(score.items())]
    print(f"   scores: {', '.join(parts)}  timeouts: {timeouts}{same}")
    slowest = sorted(((t, n) for run in runs for n, t, _ in run), reverse=True)[:3]
    print("   slowest: " + ", ".join(f"{n} {t * 1000:.0f} ms" for t, n in slowest))
    return verdicts


@contextmanager
def busy_processes(n: int) -> Iterator[None]:
    """``n`` busy loops in their own sessions, stopped by their own handles on exit."""
    cmd = [sys.executable, "-c", "while True: pass"]
    procs = [subprocess.Popen(cmd, start_new_session=True) for _ in range(n)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(timeout=10)


FIRST_CALL = r"""
import sys, time
sys.path.insert(0, ROOT)
t0 = time.monotonic()
from tts_eval.grader import is_equiv
t1 = time.monotonic()
assert is_equiv("x^2+2x+1", "(x+1)^2")
t2 = time.monotonic()
assert is_equiv(r"\sqrt{12}", r"2\sqrt{3}")
print(t1 - t0, t2 - t1, time.monotonic() - t2)
"""


def _first_call(times: int) -> None:
    """Wall time of a fresh process's import, first symbolic call and second one."""
    rows = []
    for _ in range(times):
        out = subprocess.run(
            [sys.executable, "-c", FIRST_CALL.replace("ROOT", repr(str(ROOT)))],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        rows.append([float(x) for x in out])
    first = sorted(r[1] for r in rows)
    print(
        f"-- first symbolic call of a fresh process (helper start-up included), {times} runs: "
        f"min={first[0]:.2f} s  median={statistics.median(first):.2f} s  max={first[-1]:.2f} s"
        f"  (import {statistics.median(r[0] for r in rows):.2f} s, second call "
        f"{statistics.median(r[2] for r in rows) * 1000:.0f} ms)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="timed passes per setting")
    ap.add_argument("--busy-per-core", type=int, default=4, help="busy loops per core (loaded)")
    ap.add_argument("--threads", type=int, default=8, help="threads of the threaded setting")
    ap.add_argument("--first-call-runs", type=int, default=3, help="fresh processes to time")
    args = ap.parse_args()
    if not CORPUS.exists() or not MATH500.exists():
        print(f"data not found under {DATA}")
        return 1
    cases = _peer_cases() + _math500_cases()
    cores = os.cpu_count() or 1
    print(
        f"{len(cases)} calls per pass (peer corpus + MATH-500 self-checks), {args.repeat} timed "
        f"pass(es) per setting; {cores} cores; helper budgets: {equiv.STEP_CPU_S} s CPU, retry "
        f"{equiv.RETRY_CPU_S} s, per call {equiv.CALL_CPU_S} s; {bounded.MAX_HELPERS} helpers"
    )
    bounded.shutdown()
    bounded.prestart()
    _pass(cases)  # untimed: the helpers meet every rule once
    idle = _report("idle", cases, [_pass(cases) for _ in range(args.repeat)], None)
    runs = []
    for _ in range(args.repeat):
        bounded.shutdown()
        bounded.prestart()  # start-up outside the timed region
        runs.append(_pass(cases))
    _report("idle, cold helpers", cases, runs, idle)
    n_busy = args.busy_per_core * cores
    with busy_processes(n_busy):
        loaded = [_pass(cases) for _ in range(args.repeat)]
    _report(f"loaded ({n_busy} busy processes)", cases, loaded, idle)
    threaded = [_pass(cases, args.threads) for _ in range(args.repeat)]
    _report(f"{args.threads} threads, idle", cases, threaded, idle)
    with busy_processes(n_busy):
        threaded = [_pass(cases, args.threads) for _ in range(args.repeat)]
    _report(f"{args.threads} threads, loaded", cases, threaded, idle)
    _first_call(args.first_call_runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

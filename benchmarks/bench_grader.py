"""Time per ``is_equiv`` / ``grade`` call over the peer answer-equivalence corpus.

Run: ``python benchmarks/bench_grader.py [--repeat N]``. Two settings, each pass with the grader's
LRU caches cleared, so every call does its real work:

* ``warm helpers``: the helper processes have served one untimed pass before (what a long
  evaluation sees after its first few problems);
* ``cold helpers``: the helper processes are restarted before the pass (their start-up is not
  timed, but their first use of each parser rule and sympy routine is).

Prints median, p90, p99 and max per call. Target: p99 < 50 ms. A script, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tts_eval.grader import bounded, equiv, extract_answer, grade, is_equiv  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "answer_equivalence" / "peer_cases.jsonl"


def _clear_caches() -> None:
    equiv.candidates.cache_clear()
    equiv._parse.cache_clear()
    equiv._number.cache_clear()
    equiv._SYMBOLIC_CACHE.clear()


def _restart_helpers() -> None:
    bounded.shutdown()
    bounded.prestart()  # start the helpers outside the timed region


def _summary(name: str, times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    p = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return (
        f"{name:9s} n={len(ms):4d}  median={statistics.median(ms):7.2f} ms  p90={p(0.90):7.2f} ms"
        f"  p99={p(0.99):7.2f} ms  max={ms[-1]:7.2f} ms"
    )


def _time_pass(rows: list[dict], eq_times: list[float], grade_times: list[float]) -> None:
    for r in rows:
        gold = extract_answer(r["gold"]) if r["gold_is_full_output"] else r["gold"]
        gold = gold or ""
        t0 = time.perf_counter()
        if r["pred_is_full_output"]:
            grade(r["pred"], gold)
            grade_times.append(time.perf_counter() - t0)
        else:
            is_equiv(r["pred"], gold)
            eq_times.append(time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="timed passes per setting")
    args = ap.parse_args()
    if not CORPUS.exists():
        print(f"corpus not found at {CORPUS}")
        return 1
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    print(f"peer corpus: {len(rows)} rows x {args.repeat} pass(es) per setting")
    for setting in ("warm helpers", "cold helpers"):
        eq_times: list[float] = []
        grade_times: list[float] = []
        if setting == "warm helpers":
            _restart_helpers()
            _time_pass(rows, [], [])  # untimed: the helpers meet every rule once
        for _ in range(args.repeat):
            if setting == "cold helpers":
                _restart_helpers()
            _clear_caches()
            _time_pass(rows, eq_times, grade_times)
        print(f"-- {setting}")
        print(_summary("is_equiv", eq_times))
        print(_summary("grade", grade_times))
        print(_summary("all", eq_times + grade_times))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

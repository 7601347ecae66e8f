"""PRM time and total wall of best_of_n / beam_search / dvts with prm_backend=hf, vllm and openai.

Policy: SmolLM2-135M-Instruct (``scripts/real_model.py``'s cached folder) on in-process vLLM
(float32, ``VLLM_ENABLE_V1_MULTIPROCESSING=0``); PRM: the same checkpoint read as an RLHFlow-format
PRM (its LM head's "+"/"-" rows), loaded three ways: transformers with the scorer's own prefix cache
(``hf``), its own in-process ``vllm.LLM`` (``vllm``), and a vLLM server started here
(``tests/vllm_server.py``, same engine settings; ``openai``). Without the SmolLM2 folder (or with
``--tiny``) tiny random models stand in. Settings as in the efficiency issue: 8 MATH-500 problems,
n=8, beam_width=4, num_iterations=6 (all flags).

Runs are interleaved in one process: for each repeat, each strategy, each backend in turn (so the
shared machine's load hits all alike), every run starting from empty caches (the policy's and the
PRM's prefix caches reset, the label-read memo and the hf scorer's cache cleared). The policy's
requests are seeded, so every backend sees the same candidates up to PRM ties. Per run it prints
wall time, PRM time (whole ``score`` calls), PRM tokens processed (the cost the traces report),
and the prefix-cache share of PRM prompt tokens: for vllm/openai vLLM's own cached prompt tokens
over the prompt tokens of the label reads sent; for hf 1 - tokens run / tokens of the distinct
sequences scored. Medians over repeats, then whether the backends selected the same answers.

    nice python benchmarks/bench_prm_backends.py [--problems 8] [--n 8] [--beam-width 4]
        [--iterations 6] [--strategies best_of_n,beam_search,dvts] [--backends hf,vllm,openai]
        [--repeats 1] [--tiny] [--prm PATH --prm-type TYPE]

``--prm`` swaps in another PRM (any format the backends run: e.g. the token-classification PRM
``benchmarks/bench_learn.py`` trains, on hf and vllm).

What this script does not do: assert anything (figures are printed; this machine is shared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

from bench_efficiency import model_paths  # noqa: E402
from bench_strategies import math500_problems  # noqa: E402

from tts_eval.grader import MathAnswerSpec  # noqa: E402
from tts_eval.runtime.prm import load_prm  # noqa: E402
from tts_eval.search import SearchConfig, get_spec, run_search  # noqa: E402
from tts_eval.settings import EngineConfig, PRMConfig  # noqa: E402
from tts_eval.types import PRMOutput, PRMRequest  # noqa: E402

BACKENDS = ("hf", "vllm", "openai")


class TimedPRM:
    """Proxy timing ``score`` calls and keeping what the hf share needs."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.sequence_tokens = 0  # tokens of the distinct formatted sequences scored

    def score(self, requests: Sequence[PRMRequest]) -> list[PRMOutput]:
        t0 = time.perf_counter()
        try:
            return self.inner.score(requests)
        finally:
            self.seconds += time.perf_counter() - t0
            distinct = {self.inner.render(r).token_ids for r in requests}
            self.sequence_tokens += sum(len(ids) for ids in distinct)

    def close(self) -> None:
        self.inner.close()


def reset(prm, backend: str, server) -> None:
    """Empty every cache the next run could profit from (see the module docstring)."""
    scorer = prm.scorer
    scorer.clear_cache()
    if backend == "vllm":
        scorer.reader.llm.reset_prefix_cache()
        scorer.counters.reset()
    elif backend == "openai":
        import urllib.request

        root = server.base_url.rsplit("/v1", 1)[0]
        urllib.request.urlopen(urllib.request.Request(root + "/reset_prefix_cache", method="POST"))
        scorer.counters.reset()
    else:
        scorer.stats.reset()


def cache_share(prm: TimedPRM, backend: str) -> float:
    scorer = prm.inner.scorer
    if backend == "hf":
        tokens = prm.sequence_tokens
        return 1 - scorer.stats.real_tokens / tokens if tokens else 0.0
    return scorer.counters.cached_share


def load(args, tmp: Path):
    policy_path, prm_path, label = model_paths(args.tiny, tmp)
    max_len = 8192 if label.startswith("SmolLM2") else 4096  # the models' context lengths
    prm_type = "rlhflow"
    if args.prm is not None:
        prm_path, prm_type = args.prm, args.prm_type
        max_len = args.prm_max_model_len or max_len
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(args.kv_gib))
    from tts_eval.engines.vllm import VLLMEngine

    engine = VLLMEngine(EngineConfig(str(policy_path), "vllm", dtype="float32", seed=0))
    prms, server = {}, None
    for backend in args.backends:
        if backend == "hf":
            config = PRMConfig(str(prm_path), prm_type, device="cpu", dtype="float32")
        elif backend == "vllm":
            config = PRMConfig(
                str(prm_path), prm_type, dtype="float32", backend="vllm", max_model_len=max_len
            )
        else:
            from vllm_server import VLLMServer

            server = VLLMServer(prm_path, tmp / "prm-server.log", max_model_len=max_len)
            try:
                server.start()
            except RuntimeError:
                print(f"the PRM server did not start; its log ends:\n{server.log_tail()}")
                raise
            config = PRMConfig(str(prm_path), prm_type, backend="openai", base_url=server.base_url)
        prms[backend] = TimedPRM(load_prm(config))
    return engine, prms, server, label, prm_type


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--beam-width", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--strategies", default="best_of_n,beam_search,dvts")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--kv-gib", type=int, default=2, help="VLLM_CPU_KVCACHE_SPACE per engine")
    parser.add_argument("--tiny", action="store_true", help="tiny random models")
    parser.add_argument(
        "--prm",
        type=Path,
        help="another PRM folder (e.g. bench_learn's trained PRM); with --prm-type",
    )
    parser.add_argument("--prm-type", default="rlhflow", help="its format (prm_type)")
    parser.add_argument(
        "--prm-max-model-len", type=int, help="its context length (default: as the policy's PRM)"
    )
    args = parser.parse_args()
    args.backends = [b for b in args.backends.split(",") if b]
    unknown = set(args.backends) - set(BACKENDS)
    if unknown:
        parser.error(f"--backends: unknown {sorted(unknown)}; accepted: {', '.join(BACKENDS)}")
    from tts_eval.settings import check_prm_backend

    for backend in args.backends:
        check_prm_backend(args.prm_type, backend)
    strategies = [s for s in args.strategies.split(",") if s]
    with tempfile.TemporaryDirectory() as tmp:
        engine, prms, server, label, prm_type = load(args, Path(tmp))
        try:
            answers = MathAnswerSpec()
            problems = math500_problems(engine, args.problems, "bench")
            print(
                f"{label}: policy vllm float32, PRM {prm_type} float32 on {', '.join(args.backends)}; "
                f"{len(problems)} problems, n={args.n}, beam_width={args.beam_width}, "
                f"num_iterations={args.iterations}, {args.repeats} repeat(s), interleaved"
            )
            rows: dict[tuple[str, str], list[tuple[float, float, int, float]]] = {}
            selected: dict[tuple[str, str], list] = {}
            for _ in range(args.repeats):
                for strategy in strategies:
                    options = (
                        {"beam_width": args.beam_width}
                        if "beam_width" in get_spec(strategy).option_names
                        else {}
                    )
                    config = SearchConfig(
                        strategy=strategy,
                        n=args.n,
                        num_iterations=args.iterations,
                        seed=0,
                        **options,
                    )
                    for backend in args.backends:
                        prm = prms[backend]
                        reset(prm.inner, backend, server)
                        engine.llm.reset_prefix_cache()
                        prm.seconds, prm.sequence_tokens = 0.0, 0
                        t0 = time.perf_counter()
                        results = run_search(config, problems, engine, prm, answers)
                        wall = time.perf_counter() - t0
                        tokens = sum(r.cost.prm_tokens for r in results)
                        share = cache_share(prm, backend)
                        rows.setdefault((strategy, backend), []).append(
                            (wall, prm.seconds, tokens, share)
                        )
                        selected[(strategy, backend)] = [
                            None if r.selected is None else r.candidates[r.selected].answer
                            for r in results
                        ]
                        print(
                            f"  {strategy:<12} {backend:<7} wall {wall:7.1f}s  PRM "
                            f"{prm.seconds:7.1f}s  PRM tokens {tokens:8d}  cache share "
                            f"{share:6.1%}",
                            flush=True,
                        )
            print("medians:")
            for strategy in strategies:
                for backend in args.backends:
                    runs = rows[(strategy, backend)]
                    wall, prm_s, tokens, share = (
                        statistics.median(r[i] for r in runs) for i in range(4)
                    )
                    print(
                        f"  {strategy:<12} {backend:<7} wall {wall:7.1f}s  PRM {prm_s:7.1f}s "
                        f"({prm_s / wall:5.1%} of wall)  PRM tokens {tokens:8.0f}  cache share "
                        f"{share:6.1%}"
                    )
                first = selected[(strategy, args.backends[0])]
                same = {b: selected[(strategy, b)] == first for b in args.backends[1:]}
                print(f"  {strategy}: same selected answers as {args.backends[0]}: {same}")
        except Exception:
            if server is not None:  # its log lives in the temporary folder: show it before it goes
                print(f"the PRM server's log ends:\n{server.log_tail()}", flush=True)
            raise
        finally:
            for prm in prms.values():
                prm.close()
            engine.close()
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()

"""Policy tokens per second of ``backend=openai`` (a vLLM server) against in-process ``backend=vllm``.

Same model, same engine settings, same requests: a tiny Llama (``tests/tiny_models.py``; the
scripted one, ``--policy scripted``, writes short steps that end at "\\n\\n" like a search round,
the random one, ``--policy random``, runs every completion to ``--max-tokens``) is loaded by the
in-process vLLM engine (float32, eager, no chunked prefill on CPU, prefix caching) and served by
vLLM's OpenAI-compatible server with the same settings and scheduler limit
(``tests/vllm_server.py``), which ``backend=openai`` sends the same requests to (one HTTP request
per search request, at most ``--max-concurrency`` in flight). A measurement is ``--rounds`` calls
of ``--requests`` seeded requests of ``n`` completions each, after one warm-up call; a round
continues every request's prompt with the tokens its first completion produced in the previous
round (what a beam search does), so prefix caching works as in a search. ``--policy smollm2``
measures the real SmolLM2-135M-Instruct (``scripts/real_model.py``'s cached folder) the same way,
with steps ending at "\\n\\n". The two backends are measured alternately ``--repeats`` times (a
shared machine's load then hits both alike). Prints the median tokens/s of each backend, the median ratio (and each ratio), and whether both produced the
same tokens. A figure to report, not a timed assertion (target: >= 0.8x on one machine; on a small
CPU box the server's API process competes with the engine for cores, and each HTTP request costs
the server milliseconds, which dominate when a tiny model writes 2-token steps).

    python benchmarks/bench_openai.py [--policy scripted|random|smollm2|both|all] [--requests 32]
        [--n 4] [--max-tokens 64] [--rounds 3] [--max-concurrency 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

from real_model import build_smollm2  # noqa: E402
from tiny_models import SAMPLE_PROBLEMS, build_llama, build_scripted_llama  # noqa: E402
from vllm_server import VLLMServer  # noqa: E402

from tts_eval.engines import load_engine  # noqa: E402
from tts_eval.types import GenerationRequest, SamplingParams  # noqa: E402

MAX_LEN = 4096


def prompts(engine, count: int) -> list[tuple[int, ...]]:
    texts = [f"{SAMPLE_PROBLEMS[i % len(SAMPLE_PROBLEMS)]} (variant {i})" for i in range(count)]
    return [tuple(engine.render_prompt([{"role": "user", "content": t}])) for t in texts]


def measure(engine, args, stop: tuple[str, ...]) -> tuple[float, int, list]:
    """(seconds, generated tokens, all outputs) of ``args.rounds`` search-like rounds."""
    base = prompts(engine, args.requests)

    def params(i: int, r: int) -> SamplingParams:
        return SamplingParams(
            n=args.n,
            temperature=0.8,
            max_tokens=args.max_tokens,
            stop=stop,
            seed=1000 * (r + 1) + i,
        )

    engine.generate([GenerationRequest(p, params(i, -1)) for i, p in enumerate(base)])  # warm-up
    current = list(base)
    seconds, tokens, outputs = 0.0, 0, []
    for r in range(args.rounds):
        requests = [GenerationRequest(p, params(i, r)) for i, p in enumerate(current)]
        t0 = time.perf_counter()
        out = engine.generate(requests)
        seconds += time.perf_counter() - t0
        tokens += sum(len(c.token_ids) for o in out for c in o.completions)
        outputs.append(out)
        current = [
            (p + o.completions[0].token_ids)[: MAX_LEN - args.max_tokens - 1]
            for p, o in zip(current, out, strict=True)
        ]
    return seconds, tokens, outputs


def completions(rounds: list) -> list:
    return [[o.completions for o in out] for out in rounds]


def bench(policy: str, model: Path, args, folder: Path) -> dict:
    """Both engines loaded at once, measured alternately (``--repeats`` times each), so that a
    change of load on a shared machine hits both alike; medians are reported."""
    stop = () if policy == "random" else ("\n\n",)
    inproc = load_engine("vllm", str(model), dtype="float32", seed=0, max_model_len=MAX_LEN)
    inproc.progress = False
    # the in-process engine's scheduler limit (vLLM's CPU default for a server is 128 sequences)
    seqs = inproc.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs
    server = VLLMServer(
        model,
        folder / f"server-{policy}.log",
        max_model_len=MAX_LEN,
        extra_args=("--max-num-seqs", str(seqs)),
    )
    rates: dict[str, list[float]] = {"vllm": [], "openai": []}
    tokens: dict[str, int] = {}
    outputs: dict[str, list] = {}
    try:
        t0 = time.perf_counter()
        server.start()
        start_s = time.perf_counter() - t0
        remote = load_engine(
            "openai", str(model), base_url=server.base_url, max_concurrency=args.max_concurrency
        )
        remote.progress = False
        for _ in range(args.repeats):
            for name, engine in (("vllm", inproc), ("openai", remote)):
                seconds, count, out = measure(engine, args, stop)
                rates[name].append(count / seconds)
                tokens[name] = count
                outputs[name] = completions(out)
        remote.close()
    finally:
        server.stop()
        inproc.close()
    ratios = [o / v for o, v in zip(rates["openai"], rates["vllm"], strict=True)]
    return {
        "policy": policy,
        "vllm": statistics.median(rates["vllm"]),
        "openai": statistics.median(rates["openai"]),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "tokens": (tokens["vllm"], tokens["openai"]),
        "same": outputs["vllm"] == outputs["openai"],
        "server_start_s": start_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--policy", choices=("scripted", "random", "smollm2", "both", "all"), default="both"
    )
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    policies = {"both": ("scripted", "random"), "all": ("scripted", "random", "smollm2")}.get(
        args.policy, (args.policy,)
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for policy in policies:
            if policy == "smollm2":
                model = build_smollm2()
            else:
                build = build_scripted_llama if policy == "scripted" else build_llama
                model = build(folder / policy)
            rows.append(bench(policy, model, args, folder))
    print(
        f"\n{args.rounds} rounds x {args.requests} requests x n={args.n}, max_tokens="
        f"{args.max_tokens}, max_concurrency={args.max_concurrency}, {os.cpu_count()} CPUs; "
        f"medians of {args.repeats} alternating measurements"
    )
    print(f"{'policy':<10}{'vllm tok/s':>12}{'openai tok/s':>14}{'ratio':>8}{'tokens':>16}  same")
    for row in rows:
        tokens = "/".join(str(t) for t in row["tokens"])
        print(
            f"{row['policy']:<10}{row['vllm']:>12.1f}{row['openai']:>14.1f}"
            f"{row['ratio']:>8.2f}{tokens:>16}  {row['same']}  "
            f"(ratios {', '.join(f'{r:.2f}' for r in row['ratios'])})"
        )
    print(", ".join(f"{r['policy']} server start {r['server_start_s']:.0f} s" for r in rows))


if __name__ == "__main__":
    main()

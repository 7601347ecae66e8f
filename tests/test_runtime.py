"""The runtime (``tts_eval.runtime``): one ``Searcher`` protocol, in-process and on Ray.

Fast tests cover the pure helpers (chunk plan, resources, capacity, throughput), the checks that
run before Ray starts, and that K=1 never imports Ray. The slow ones join one local Ray cluster
for the session (2 CPUs) and run ``RaySearcher`` with K=2 actors on tiny local models: one set of
loaded actors serves searches with different settings, results equal the in-process K=1 searcher
for the same seed, also when one actor's process dies mid-chunk (fault injection lives here: a
``SearchWorker`` subclass handed in with ``worker_cls=``), and the ``lm_eval`` CLI runs with
``data_parallel_size=2``.

"Equal" is exact for everything discrete (steps, token ids, finish reasons, answers, selection,
token counts); PRM step scores are compared to 1e-6: the transformers PRM packs the sequences of a
call into padded batches, and a different batch shape changes float32 results in the last bits
(measured: about 3e-8), whatever worker runs the problem.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import FakeAnswerSpec, FakePRM, RandomEngine
from lm_eval_cli import run_lm_eval
from tiny_models import SAMPLE_PROBLEMS

from tts_eval.model_args import parse_model_args
from tts_eval.runtime import Searcher, open_searcher
from tts_eval.runtime.local import LocalSearcher, models_loaded
from tts_eval.runtime.throughput import WORKER_KEY, worker_throughput
from tts_eval.search import SearchConfig
from tts_eval.settings import RayOptions
from tts_eval.types import Cost, Problem, SearchResult

PROBLEMS = SAMPLE_PROBLEMS

# ---------------------------------------------------------------------------------------------
# The protocol and the in-process searcher
# ---------------------------------------------------------------------------------------------


def test_local_and_ray_searchers_satisfy_the_protocol():
    from tts_eval.runtime.ray import RaySearcher

    local = LocalSearcher(RandomEngine(), FakePRM(), FakeAnswerSpec())
    assert isinstance(local, Searcher)
    for name in ("render_prompt", "search", "close"):
        assert callable(getattr(RaySearcher, name))


def test_one_local_searcher_serves_searches_with_different_settings():
    searcher = LocalSearcher(RandomEngine(), FakePRM(), FakeAnswerSpec())
    problems = [Problem(f"p{i}", f"problem {i}", (1, 2, i)) for i in range(3)]
    a = searcher.search(problems, SearchConfig(strategy="best_of_n", n=2, max_tokens=50))
    b = searcher.search(problems, SearchConfig(strategy="dvts", n=4, beam_width=2, max_tokens=50))
    assert [r.strategy for r in a] == ["best_of_n"] * 3
    assert [r.strategy for r in b] == ["dvts"] * 3
    assert {len(r.candidates) for r in a} == {2}
    searcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        searcher.search(problems, SearchConfig(n=2))


def test_closing_frees_the_engine_and_the_prm():
    closed = []

    class Closing(RandomEngine):
        def close(self):
            closed.append("engine")

    class ClosingPRM(FakePRM):
        def close(self):
            closed.append("prm")

    searcher = LocalSearcher(Closing(), ClosingPRM(), FakeAnswerSpec())
    with searcher:
        pass
    assert closed == ["engine", "prm"]
    assert searcher.engine is None and searcher.prm is None


@pytest.mark.slow
def test_local_searcher_loads_once_and_frees_memory_on_close(tiny_llama, tiny_prm):
    import gc
    import weakref

    config = parse_model_args(
        f"pretrained={tiny_llama},backend=hf,device=cpu,prm={tiny_prm},prm_type=rlhflow,"
        "max_tokens=8,seed=3"
    )
    before = models_loaded()
    searcher = open_searcher(config)
    assert isinstance(searcher, LocalSearcher) and models_loaded() == before + 1
    model = weakref.ref(searcher.engine.model)
    backbone = weakref.ref(searcher.prm.scorer.backbone)
    problems = _problems(searcher)[:2]
    for strategy in ("best_of_n", "beam_search"):
        tree = {"beam_width": 2} if strategy == "beam_search" else {}  # best_of_n has no beams
        config_s = SearchConfig(strategy=strategy, n=2, num_iterations=2, max_tokens=8, **tree)
        assert [r.strategy for r in searcher.search(problems, config_s)] == [strategy] * 2
    assert models_loaded() == before + 1
    searcher.close()
    gc.collect()
    assert model() is None and backbone() is None, "close() must release the weights"


# ---------------------------------------------------------------------------------------------
# Pure helpers of the Ray searcher
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "workers", "max_chunk", "first", "count"),
    [
        (500, 2, 32, 32, None),  # many left: capped chunks
        (100, 2, 32, 13, None),  # ceil(100 / 8)
        (9, 2, 32, 2, None),
        (8, 2, 32, 1, 8),  # as many chunks as problems
        (1, 8, 32, 1, 1),
        (0, 2, 32, None, 0),
    ],
)
def test_chunk_plan_covers_every_problem_in_shrinking_chunks(
    total, workers, max_chunk, first, count
):
    from tts_eval.runtime.ray import chunk_plan

    plan = chunk_plan(total, workers, RayOptions(max_chunk=max_chunk, chunks_per_worker=4))
    assert [i for chunk in plan for i in chunk] == list(range(total))
    sizes = [len(c) for c in plan]
    assert sizes == sorted(sizes, reverse=True)
    if first is not None:
        assert sizes[0] == first and sizes[-1] == 1
    if count is not None:
        assert len(plan) == count


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cpus_per_worker": 0}, "^RayOptions cpus_per_worker=0 is invalid; accepted: > 0$"),
        ({"max_chunk": 0}, "^RayOptions max_chunk=0 is invalid; accepted: an integer >= 1$"),
        ({"chunks_per_worker": 1.5}, "^RayOptions chunks_per_worker=1.5 is invalid"),
        ({"max_restarts": -1}, "^RayOptions max_restarts=-1 is invalid; accepted: an integer >= 0"),
        ({"max_task_retries": True}, "^RayOptions max_task_retries=True is invalid"),
        ({"ready_timeout_s": 0}, "^RayOptions ready_timeout_s=0 is invalid; accepted: seconds > 0"),
    ],
)
def test_ray_options_reject_bad_values_in_one_line(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        RayOptions(**kwargs)
    assert "\n" not in str(info.value)


def _config(extra: str = "", prm: bool = False):
    base = "pretrained=org/model" + (",prm=org/prm" if prm else "")
    return parse_model_args(base + extra)


@pytest.mark.parametrize(
    ("extra", "gpus", "expected"),
    [
        (",backend=hf,device=cpu", 8, {"num_cpus": 1.0, "num_gpus": 0.0}),
        (",backend=hf,device=auto", 0, {"num_cpus": 1.0, "num_gpus": 0.0}),
        (",backend=hf,device=auto", 8, {"num_cpus": 1.0, "num_gpus": 1.0}),
        (",backend=hf,device=cuda", 8, {"num_cpus": 1.0, "num_gpus": 1.0}),
        (",backend=vllm,tensor_parallel_size=2", 8, {"num_cpus": 1.0, "num_gpus": 2.0}),
        (",backend=vllm,tensor_parallel_size=2", 0, {"num_cpus": 1.0, "num_gpus": 0.0}),
        (",backend=openai,base_url=http://h/v1", 8, {"num_cpus": 1.0, "num_gpus": 0.0}),
        (",backend=openai,base_url=http://h/v1,prm=org/prm", 8, {"num_cpus": 1.0, "num_gpus": 1.0}),
        (",backend=openai,base_url=http://h/v1,prm=org/prm", 0, {"num_cpus": 1.0, "num_gpus": 0.0}),
        (
            ",backend=openai,base_url=http://h/v1,prm=org/prm,prm_device=cpu",
            8,
            {"num_cpus": 1.0, "num_gpus": 0.0},
        ),
        # a PRM on a server asks Ray for no GPU; one on its own vLLM engine for its TP size
        (
            ",backend=openai,base_url=http://h/v1,prm=org/prm,prm_backend=openai,"
            "prm_base_url=http://p/v1",
            8,
            {"num_cpus": 1.0, "num_gpus": 0.0},
        ),
        (
            ",backend=openai,base_url=http://h/v1,prm=org/prm,prm_backend=vllm,"
            "prm_tensor_parallel_size=2",
            8,
            {"num_cpus": 1.0, "num_gpus": 2.0},
        ),
        (",backend=vllm,prm=org/prm,prm_backend=vllm", 0, {"num_cpus": 1.0, "num_gpus": 0.0}),
        (
            ",backend=vllm,prm=org/prm,prm_backend=vllm,prm_tensor_parallel_size=2",
            8,
            {"num_cpus": 1.0, "num_gpus": 2.0},
        ),
        (
            ",backend=hf,device=cpu,prm=org/prm,prm_backend=openai,prm_base_url=http://p/v1",
            8,
            {"num_cpus": 1.0, "num_gpus": 0.0},
        ),
    ],
)
def test_worker_resources_follow_device_and_tensor_parallel_size(extra, gpus, expected):
    from tts_eval.runtime.ray import worker_resources

    assert worker_resources(_config(extra), gpus) == expected


@pytest.mark.parametrize(
    ("extra", "gpus", "match"),
    [
        (
            ",device=cuda:1",
            8,
            "^model_args device=cuda:1 is invalid; accepted: device=cuda or auto",
        ),
        (",prm_device=cuda:1", 8, "^model_args prm_device=cuda:1 is invalid; accepted: prm_device"),
        (",device=cuda", 0, "^model_args device=cuda is invalid; accepted: cpu or auto: the Ray"),
    ],
)
def test_worker_resources_refuse_what_ray_cannot_place(extra, gpus, match):
    from tts_eval.runtime.ray import worker_resources

    with pytest.raises(ValueError, match=match):
        worker_resources(_config(extra, prm=True), gpus)


@pytest.mark.parametrize(
    ("cluster", "per_worker", "workers", "joined", "error"),
    [
        ({"CPU": 2.0}, {"num_cpus": 1.0, "num_gpus": 0.0}, 2, False, None),
        ({"CPU": 16.0, "GPU": 8.0}, {"num_cpus": 1.0, "num_gpus": 2.0}, 4, False, None),
        ({"CPU": 16.0, "GPU": 4.0}, {"num_cpus": 1.0, "num_gpus": 1.0}, 6, False, "needs 6 GPUs"),
        ({"CPU": 16.0, "GPU": 4.0}, {"num_cpus": 1.0, "num_gpus": 1.0}, 6, True, None),  # may grow
    ],
)
def test_capacity_check_fails_fast_only_on_a_cluster_it_started(
    cluster, per_worker, workers, joined, error, caplog
):
    from tts_eval.runtime.ray import check_capacity

    if error:
        pattern = f"^model_args data_parallel_size=6 is invalid; accepted: at most 4 here .*{error}"
        with pytest.raises(ValueError, match=pattern):
            check_capacity(cluster, per_worker, workers, joined=joined)
    else:
        check_capacity(cluster, per_worker, workers, joined=joined)
        assert ("wait until the cluster grows" in caplog.text) == joined


def _result(uid: str, rank: int | None, chunk: int, busy: float, tokens: int) -> SearchResult:
    settings: dict[str, object] = {"n": 4}
    if rank is not None:
        settings[WORKER_KEY] = {"rank": rank, "node": "n1", "chunk": chunk, "chunk_busy_s": busy}
    return SearchResult(
        uid, "best_of_n", (), None, Cost(policy_tokens=tokens, prm_tokens=1), settings
    )


def test_worker_throughput_counts_chunks_once_and_reads_trace_records():
    from tts_eval.traces import result_record

    results = [
        _result("a", 0, 1, 2.0, 10),
        _result("b", 0, 1, 2.0, 20),  # same chunk: its busy time counts once
        _result("c", 1, 2, 1.0, 5),
        _result("d", 0, 3, 2.0, 1),
        _result("e", None, 0, 0.0, 99),  # not from a distributed run
    ]
    expected = [
        {"worker": 0, "node": "n1", "problems": 3, "policy_tokens": 31, "prm_tokens": 3}
        | {"busy_s": 4.0, "problems_per_s": 0.75},
        {"worker": 1, "node": "n1", "problems": 1, "policy_tokens": 5, "prm_tokens": 1}
        | {"busy_s": 1.0, "problems_per_s": 1.0},
    ]
    assert worker_throughput(results) == expected
    assert worker_throughput([result_record(r) for r in results]) == expected
    assert worker_throughput(results[-1:]) == []


def test_one_worker_imports_no_ray():
    code = (
        "import sys, tts_eval.runtime, tts_eval.runtime.local, tts_eval.lm_model, "
        "tts_eval.settings, tts_eval.model_args, tts_eval.workflow.sweep;"
        "print('ray' in sys.modules, 'tts_eval.runtime.ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_missing_ray_is_an_install_hint(monkeypatch, tiny_llama):
    from tts_eval.runtime.ray import RAY_INSTALL_HINT

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    config = parse_model_args(f"pretrained={tiny_llama},data_parallel_size=2")
    with pytest.raises(ImportError, match=r"pip install 'tts-scaling-eval\[ray\]'") as info:
        open_searcher(config)
    assert str(info.value).startswith(RAY_INSTALL_HINT)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (",prm=/nonexistent/prm,strategy=best_of_n", "model_args prm=/nonexistent/prm is invalid"),
        (",device=cuda:1", "model_args device=cuda:1 is invalid"),
        (
            ",prm={prm},prm_type=rlhflow,prm_device=cuda:1",
            "model_args prm_device=cuda:1 is invalid",
        ),
        (",answer=regex:[", "model_args answer=regex:\\[ is invalid"),
    ],
)
def test_bad_models_fail_before_ray_starts(monkeypatch, tiny_llama, tiny_prm, extra, match):
    pytest.importorskip("ray")
    from tts_eval.runtime.ray import RaySearcher

    def no_connect(*args, **kwargs):
        raise AssertionError("Ray was started before the cheap checks")

    monkeypatch.setattr("tts_eval.runtime.ray._connect", no_connect)
    args = f"pretrained={tiny_llama},data_parallel_size=2" + extra.format(prm=tiny_prm)
    with pytest.raises(ValueError, match=match):
        RaySearcher.from_config(parse_model_args(args))


# ---------------------------------------------------------------------------------------------
# Real Ray, tiny models
# ---------------------------------------------------------------------------------------------


def _args(policy: Path, prm: Path, strategy: str = "best_of_n") -> str:
    tree = ",beam_width=2" if strategy == "beam_search" else ""  # best_of_n has no beams
    return (
        f"pretrained={policy},backend=hf,device=cpu,prm={prm},prm_type=rlhflow,"
        f"strategy={strategy},n=4,num_iterations=3,max_tokens=24,seed=7{tree}"
    )


def _problems(searcher: Searcher) -> list[Problem]:
    return [
        Problem(
            uid=f"p{i}",
            text=text,
            prompt_ids=tuple(searcher.render_prompt([{"role": "user", "content": text}])),
        )
        for i, text in enumerate(PROBLEMS)
    ]


def assert_same_results(got: list[SearchResult], want: list[SearchResult]) -> None:
    """Equal up to the worker entry, wall time, and float32 noise in PRM scores (see top)."""
    assert [r.uid for r in got] == [r.uid for r in want]
    for a, b in zip(got, want, strict=True):
        assert {k: v for k, v in a.settings.items() if k != WORKER_KEY} == b.settings
        assert (a.strategy, a.selected) == (b.strategy, b.selected)
        assert dataclasses.replace(a.cost, wall_time_s=0) == dataclasses.replace(
            b.cost, wall_time_s=0
        )
        assert len(a.candidates) == len(b.candidates)
        for ca, cb in zip(a.candidates, b.candidates, strict=True):
            assert dataclasses.replace(ca, step_scores=()) == dataclasses.replace(
                cb, step_scores=()
            )
            assert ca.step_scores == pytest.approx(cb.step_scores, abs=1e-6)


STRATEGIES = ("best_of_n", "beam_search")


@pytest.fixture(scope="module")
def k1_results(tiny_llama, tiny_prm):
    """In-process K=1 results per strategy, from ONE local searcher (the reference)."""
    config = parse_model_args(_args(tiny_llama, tiny_prm))
    with LocalSearcher.from_config(config) as searcher:
        problems = _problems(searcher)
        return {
            s: searcher.search(problems, parse_model_args(_args(tiny_llama, tiny_prm, s)).search)
            for s in STRATEGIES
        }


@pytest.mark.slow
def test_two_ray_workers_reproduce_one_worker_for_every_setting(
    ray_cluster, tiny_llama, tiny_prm, k1_results
):
    from tts_eval.runtime.ray import RaySearcher

    config = parse_model_args(_args(tiny_llama, tiny_prm) + ",data_parallel_size=2")
    with open_searcher(config) as searcher:
        assert isinstance(searcher, RaySearcher) and searcher.workers == 2
        problems = _problems(searcher)
        for strategy in STRATEGIES:  # the same actors, the settings of each call
            search = parse_model_args(_args(tiny_llama, tiny_prm, strategy)).search
            got = searcher.search(problems, search)
            run = searcher.last_run
            assert k1_results[strategy][0].candidates, "the reference run produced no candidates"
            assert_same_results(got, k1_results[strategy])
            assert {r.settings[WORKER_KEY]["rank"] for r in got} == {0, 1}
            assert sum(row["problems"] for row in run["workers"]) == len(PROBLEMS)
            assert all(row["busy_s"] > 0 and row["problems_per_s"] > 0 for row in run["workers"])
            pids = {(r.settings[WORKER_KEY]["rank"], r.settings[WORKER_KEY]["pid"]) for r in got}
            assert pids == {(info["rank"], info["pid"]) for info in searcher.infos}
        assert [info["loads"] for info in searcher.infos] == [1, 1]
        assert searcher.max_model_len == 4096  # the tiny Llama's max_position_embeddings
        assert searcher.tokenizer is not None
    assert ray_cluster.is_initialized(), "a searcher that joined a session must not shut it down"


def _killing_worker(log: Path):
    """A SearchWorker whose rank 0 dies (like a killed process) in the middle of its first chunk,
    once: not again after Ray restarts it. Every chunk it starts is logged to ``log``."""
    import os

    from tts_eval.runtime.ray import SearchWorker

    class KilledOnce(SearchWorker):
        def search(self, chunk_id, problems, config):
            with open(log, "a") as f:
                f.write(json.dumps([self.rank, os.getpid(), chunk_id]) + "\n")
            if self.rank == 0 and not self.restarted:
                os._exit(1)
            return super().search(chunk_id, problems, config)

    return KilledOnce


@pytest.mark.slow
def test_a_worker_killed_mid_chunk_costs_only_that_chunk(
    ray_cluster, tiny_llama, tiny_prm, k1_results, tmp_path
):
    from tts_eval.runtime.ray import RaySearcher, chunk_plan

    log = tmp_path / "chunks.jsonl"
    config = parse_model_args(_args(tiny_llama, tiny_prm) + ",data_parallel_size=2")
    options = RayOptions(max_chunk=2)
    with RaySearcher.from_config(config, options, worker_cls=_killing_worker(log)) as searcher:
        got = searcher.search(_problems(searcher), config.search)
    assert_same_results(got, k1_results["best_of_n"])
    starts = [json.loads(line) for line in log.read_text().splitlines()]
    chunks = [chunk for _, _, chunk in starts]
    planned = len(chunk_plan(len(PROBLEMS), 2, options))
    # One chunk was started twice (lost with rank 0's first process, run again on the restarted
    # actor); every other chunk exactly once: finished chunks are never recomputed.
    assert len(chunks) == planned + 1 and len(set(chunks)) == planned
    (lost,) = [c for c in set(chunks) if chunks.count(c) == 2]
    rank0_pids = [pid for rank, pid, _ in starts if rank == 0]
    assert len(set(rank0_pids)) == 2, "rank 0 must have been restarted in a new process"
    retried = [r for r in got if r.settings[WORKER_KEY]["chunk"] == lost]
    assert retried and all(r.settings[WORKER_KEY]["restarted"] for r in retried)
    assert all(not r.settings[WORKER_KEY]["restarted"] for r in got if r not in retried)


@pytest.mark.slow
def test_lm_eval_cli_with_two_ray_workers_matches_one(
    ray_cluster, tiny_llama, tiny_prm, math500_path, tmp_path
):
    # The K=2 run joins this session's cluster through RAY_ADDRESS and must leave it running.
    address = ray_cluster.get_runtime_context().gcs_address
    records = {}
    for k in (1, 2):
        traces = tmp_path / f"traces{k}.jsonl"
        proc = run_lm_eval(
            [
                "--model", "tts",
                "--model_args",
                _args(tiny_llama, tiny_prm) + f",data_parallel_size={k},trace_path={traces}",
                "--tasks", "math500", "--limit", "4",
                "--output_path", str(tmp_path / f"out{k}"),
            ],
            {"TTS_EVAL_MATH500": str(math500_path), "RAY_ADDRESS": address},
            tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert "exact_match" in proc.stdout
        records[k] = [json.loads(line) for line in traces.read_text().splitlines()]
    assert ray_cluster.is_initialized() and ray_cluster.cluster_resources().get("CPU") == 2
    assert len(records[2]) == 4
    assert {r["settings"][WORKER_KEY]["rank"] for r in records[2]} <= {0, 1}
    assert all(WORKER_KEY not in r["settings"] for r in records[1])
    for one, two in zip(records[1], records[2], strict=True):
        assert (two["uid"], two["selected"]) == (one["uid"], one["selected"])
        assert [c["token_ids"] for c in two["candidates"]] == [
            c["token_ids"] for c in one["candidates"]
        ]
        assert two["cost"]["policy_tokens"] == one["cost"]["policy_tokens"]


@pytest.mark.slow
def test_a_model_that_fails_to_load_in_a_worker_raises_its_own_error(
    ray_cluster, tiny_llama, tiny_prm
):
    # The driver's cheap checks pass (the type is given); loading the head fails in the workers.
    args = _args(tiny_llama, tiny_prm).replace("prm_type=rlhflow", "prm_type=skywork")
    with pytest.raises(ValueError, match="Skywork value head weights") as info:
        open_searcher(parse_model_args(args + ",data_parallel_size=2"))
    assert "\n" not in str(info.value)
    assert ray_cluster.is_initialized()

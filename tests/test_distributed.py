"""Scale-out on Ray (``tts_eval.distributed``): chunking, resources, throughput, and real runs.

The fast tests cover the pure helpers and the K=1 path (no Ray import). The slow ones start one
local Ray cluster for the session (2 CPUs) and run ``RayRunner`` with K=2 actors on tiny local
models: results equal the in-process K=1 run for the same seed, also when one actor's process
dies after its first chunk, and the ``lm_eval`` CLI runs with ``data_parallel_size=2``.

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
from lm_eval_cli import run_lm_eval
from tts_eval.distributed import (
    EXIT_AFTER_ENV,
    EXIT_RANK_ENV,
    RAY_INSTALL_HINT,
    WORKER_KEY,
    RayOptions,
    chunk_size,
    worker_resources,
    worker_throughput,
)

from tts_eval.engines import EngineConfig
from tts_eval.types import Cost, Problem, SearchResult

ROOT = Path(__file__).resolve().parents[1]

PROBLEMS = [
    "What is $1+1$?",
    "Compute $\\frac{1}{2} + \\frac{1}{3}$.",
    "Solve for $x$: $x^2 - 4 = 0$.",
    "What is the sum of the first ten positive integers?",
    "Find the area of a circle of radius $3$.",
    "How many positive divisors does $36$ have?",
]

# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remaining", "workers", "max_chunk", "expected"),
    [
        (500, 2, 32, 32),  # many left: capped chunks
        (100, 2, 32, 13),  # ceil(100 / 8)
        (9, 2, 32, 2),
        (8, 2, 32, 1),
        (1, 8, 32, 1),
        (500, 8, 4, 4),
    ],
)
def test_chunk_size_shrinks_as_the_queue_drains(remaining, workers, max_chunk, expected):
    assert chunk_size(remaining, workers, max_chunk=max_chunk, chunks_per_worker=4) == expected


def test_chunk_sizes_cover_a_queue_with_large_then_single_chunks():
    sizes, left = [], 200
    while left:
        size = min(chunk_size(left, 4, max_chunk=16), left)
        sizes.append(size)
        left -= size
    assert sum(sizes) == 200
    assert sizes[0] == 13 and sizes == sorted(sizes, reverse=True) and sizes[-1] == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cpus_per_worker": 0}, "cpus_per_worker=0"),
        ({"max_chunk": 0}, "max_chunk=0"),
        ({"chunks_per_worker": 1.5}, "chunks_per_worker=1.5"),
        ({"max_restarts": -1}, "max_restarts=-1"),
        ({"max_attempts": True}, "max_attempts=True"),
        ({"ready_timeout_s": 0}, "ready_timeout_s=0"),
    ],
)
def test_ray_options_reject_bad_values_in_one_line(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        RayOptions(**kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("engine", "gpus", "expected"),
    [
        ({"backend": "hf", "device": "cpu"}, 8, {"num_cpus": 1.0, "num_gpus": 0.0}),
        ({"backend": "hf", "device": "auto"}, 0, {"num_cpus": 1.0, "num_gpus": 0.0}),
        ({"backend": "hf", "device": "auto"}, 8, {"num_cpus": 1.0, "num_gpus": 1.0}),
        ({"backend": "hf", "device": "cuda"}, 8, {"num_cpus": 1.0, "num_gpus": 1.0}),
        ({"backend": "vllm", "tensor_parallel_size": 2}, 8, {"num_cpus": 1.0, "num_gpus": 2.0}),
        ({"backend": "vllm", "tensor_parallel_size": 2}, 0, {"num_cpus": 1.0, "num_gpus": 0.0}),
    ],
)
def test_worker_resources_follow_device_and_tensor_parallel_size(engine, gpus, expected):
    config = EngineConfig(pretrained="org/model", **engine)
    assert worker_resources(config, gpus) == expected


@pytest.mark.parametrize(
    ("device", "gpus", "match"),
    [("cuda:1", 8, "device=cuda:1 cannot be used"), ("cuda", 0, "has no GPU")],
)
def test_worker_resources_refuse_what_ray_cannot_place(device, gpus, match):
    with pytest.raises(ValueError, match=match):
        worker_resources(EngineConfig(pretrained="org/model", device=device), gpus)


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
        "import sys, tts_eval.runner, tts_eval.lm_model, tts_eval.config;"
        "print('ray' in sys.modules, 'tts_eval.distributed' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_missing_ray_is_an_install_hint(monkeypatch, tiny_llama):
    from tts_eval.config import parse_model_args
    from tts_eval.runner import Runner

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    config = parse_model_args(f"pretrained={tiny_llama},data_parallel_size=2")
    with pytest.raises(ImportError, match=r"pip install 'tts-eval\[ray\]'") as info:
        Runner.from_config(config)
    assert str(info.value).startswith(RAY_INSTALL_HINT)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (",prm=/nonexistent/prm,strategy=best_of_n", "PRM path '/nonexistent/prm' does not exist"),
        (",device=cuda:1", "device=cuda:1 cannot be used with data_parallel_size>1"),
        (",prm={prm},prm_type=rlhflow,prm_device=cuda:1", "prm_device=cuda:1 cannot be used"),
    ],
)
def test_bad_models_fail_before_ray_starts(monkeypatch, tiny_llama, ray_prm, extra, match):
    from tts_eval.config import parse_model_args
    from tts_eval.distributed import RayRunner

    def no_connect(*args, **kwargs):
        raise AssertionError("Ray was started before the cheap checks")

    monkeypatch.setattr("tts_eval.distributed._connect", no_connect)
    config = parse_model_args(
        f"pretrained={tiny_llama},data_parallel_size=2" + extra.format(prm=ray_prm)
    )
    with pytest.raises(ValueError, match=match):
        RayRunner.from_config(config)


# ---------------------------------------------------------------------------------------------
# Real Ray, tiny models
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_prm(tmp_path_factory) -> Path:
    from prm_models import build_rlhflow

    return build_rlhflow(tmp_path_factory.mktemp("ray-rlhflow-prm"))


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs) for the whole session; RayRunners join it."""
    ray = pytest.importorskip("ray", reason="pip install 'tts-eval[ray]' to run the Ray tests")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def _args(policy: Path, prm: Path, strategy: str) -> str:
    return (
        f"pretrained={policy},backend=hf,device=cpu,prm={prm},prm_type=rlhflow,"
        f"strategy={strategy},n=4,beam_width=2,num_iterations=3,max_tokens=24,seed=7"
    )


def _problems(runner) -> list[Problem]:
    return [
        Problem(
            uid=f"p{i}",
            text=text,
            prompt_ids=tuple(runner.engine.render_prompt([{"role": "user", "content": text}])),
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


@pytest.fixture(scope="session")
def k1_results(tiny_llama, ray_prm):
    """In-process K=1 results per strategy (the reference every Ray run must reproduce)."""
    from tts_eval.config import parse_model_args
    from tts_eval.runner import Runner

    cache: dict[str, list[SearchResult]] = {}

    def get(strategy: str) -> list[SearchResult]:
        if strategy not in cache:
            runner = Runner.from_config(parse_model_args(_args(tiny_llama, ray_prm, strategy)))
            cache[strategy] = runner.search(_problems(runner))
        return cache[strategy]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["best_of_n", "beam_search"])
def test_two_ray_workers_reproduce_one_worker(
    ray_cluster, tiny_llama, ray_prm, k1_results, strategy
):
    from tts_eval.config import parse_model_args
    from tts_eval.distributed import RayRunner
    from tts_eval.runner import Runner

    config = parse_model_args(_args(tiny_llama, ray_prm, strategy) + ",data_parallel_size=2")
    with Runner.from_config(config) as runner:
        assert isinstance(runner, RayRunner) and runner.workers == 2
        problems = _problems(runner)
        got = runner.search(problems)
        run = runner.last_run
    want = k1_results(strategy)
    assert want[0].candidates, "the reference run produced no candidates"
    assert_same_results(got, want)
    ranks = {r.settings[WORKER_KEY]["rank"] for r in got}
    assert ranks == {0, 1}, "both workers should have searched problems"
    assert run["lost_chunks"] == 0
    assert sum(row["problems"] for row in run["workers"]) == len(PROBLEMS)
    assert all(row["busy_s"] > 0 and row["problems_per_s"] > 0 for row in run["workers"])
    assert ray_cluster.is_initialized(), "a runner that joined a session must not shut it down"


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_nothing(
    ray_cluster, tiny_llama, ray_prm, k1_results, monkeypatch
):
    from tts_eval.config import parse_model_args
    from tts_eval.runner import Runner

    monkeypatch.setenv(EXIT_AFTER_ENV, "1")  # worker 0 dies after its first chunk, unreturned
    monkeypatch.setenv(EXIT_RANK_ENV, "0")
    config = parse_model_args(_args(tiny_llama, ray_prm, "best_of_n") + ",data_parallel_size=2")
    with Runner.from_config(config) as runner:
        problems = _problems(runner)
        got = runner.search(problems)
        run = runner.last_run
        # Ray restarts worker 0 (models reloaded); it takes work again and the hook fires once.
        assert runner.wait_for_workers(timeout_s=300) == 2
        again = runner.search(problems)
        assert runner.last_run["lost_chunks"] == 0
        assert 0 in {r.settings[WORKER_KEY]["rank"] for r in again}
    assert_same_results(again, k1_results("best_of_n"))
    assert run["lost_chunks"] == 1
    assert [r.uid for r in got] == [p.uid for p in problems]  # every problem answered once
    assert_same_results(got, k1_results("best_of_n"))
    # The lost chunk (worker 0's first) was never returned: no result carries its chunk id.
    chunks = {(r.settings[WORKER_KEY]["rank"], r.settings[WORKER_KEY]["chunk"]) for r in got}
    assert 1 not in {chunk for _, chunk in chunks}


@pytest.mark.slow
def test_lm_eval_cli_with_two_ray_workers_matches_one(
    ray_cluster, tiny_llama, ray_prm, math500_path, tmp_path
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
                _args(tiny_llama, ray_prm, "best_of_n")
                + f",data_parallel_size={k},trace_path={traces}",
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


class _FakeRay:
    """Just what ``_check_capacity`` reads from Ray: the cluster's total resources."""

    def __init__(self, resources: dict[str, float]) -> None:
        self.resources = resources

    def cluster_resources(self) -> dict[str, float]:
        return self.resources


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
    from tts_eval.distributed import _check_capacity

    fake = _FakeRay(cluster)
    if error:
        with pytest.raises(ValueError, match=f"{error}.*accepted here: data_parallel_size <= 4"):
            _check_capacity(fake, per_worker, workers, joined=joined)
    else:
        _check_capacity(fake, per_worker, workers, joined=joined)
        assert ("wait until the cluster grows" in caplog.text) == joined


@pytest.mark.slow
def test_a_model_that_fails_to_load_in_a_worker_raises_its_own_error(
    ray_cluster, tiny_llama, ray_prm
):
    from tts_eval.config import parse_model_args
    from tts_eval.runner import Runner

    # The driver's cheap checks pass (the type is given); loading the head fails in the workers.
    args = _args(tiny_llama, ray_prm, "best_of_n").replace("prm_type=rlhflow", "prm_type=skywork")
    with pytest.raises(ValueError, match="Skywork value head weights") as info:
        Runner.from_config(parse_model_args(args + ",data_parallel_size=2"))
    assert "\n" not in str(info.value)
    assert ray_cluster.is_initialized()

"""Scale-out on Ray: one search spread over K workers, each with its own policy engine and PRM.

``--model_args ...,data_parallel_size=K`` (K >= 2) makes ``Runner.from_config`` return a
:class:`RayRunner`. It joins the Ray cluster named by ``ray_address=`` or ``RAY_ADDRESS`` (or
starts a local one), starts K actors (:class:`SearchWorker`) that each build an ordinary
``Runner`` (engine + PRM loaded once per actor; ``num_gpus`` per actor = the tensor-parallel size
on GPU clusters, ``num_cpus`` only on CPU) and feeds them the problems of each request batch from
a dynamic work queue on the driver:

- problems are handed out in chunks (a chunk is searched as one batch inside its actor, so the
  engine still batches across problems); chunk sizes shrink as the queue drains
  (:func:`chunk_size`), and the next chunk goes to whichever actor finishes first (``ray.wait``),
  so a few slow problems do not leave the other actors idle;
- when an actor dies mid-chunk (killed process, lost node), that chunk goes back to the front of
  the queue and runs on whichever actor is free next; Ray restarts the dead actor
  (``max_restarts``) and it rejoins once its models are loaded again. Finished chunks are never
  recomputed. Per-problem seeds come from the search seed and the problem uid only, so results do
  not depend on K, on chunking or on which actor ran a problem;
- results come back in the original order; each carries ``settings["worker"]`` (rank, node,
  chunk, chunk busy seconds), from which :func:`worker_throughput` computes per-worker throughput;
  a per-worker summary is logged at the end of every batch.

Test-only hook (never set it in real runs): with ``TTS_EVAL_TEST_WORKER_EXIT_AFTER=c`` (and
optionally ``TTS_EVAL_TEST_WORKER_EXIT_RANK=r``, default 0) in the driver's environment, worker
``r`` kills its own process (``os._exit(1)``) after searching its ``c``-th chunk and before
returning it, once (not again after Ray restarts it). Tests use it to check recovery.

With K=1 (the default) none of this is imported: ``Runner`` runs in-process, without Ray.

What this module does not do: search (``tts_eval.search``), load models (``tts_eval.runner``),
split one problem across workers, or manage the cluster itself (start it with ``ray start``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tts_eval.search.run import check_problems
from tts_eval.types import Problem, SearchResult

logger = logging.getLogger(__name__)

RAY_INSTALL_HINT = (
    "data_parallel_size>1 runs on Ray, which is not installed: pip install 'tts-eval[ray]'"
)
WORKER_KEY = "worker"  # the SearchResult.settings entry a RayRunner adds
EXIT_AFTER_ENV = "TTS_EVAL_TEST_WORKER_EXIT_AFTER"  # test-only, see the module docstring
EXIT_RANK_ENV = "TTS_EVAL_TEST_WORKER_EXIT_RANK"  # test-only
_FORWARDED_ENV = (EXIT_AFTER_ENV, EXIT_RANK_ENV)


# --------------------------------------------------------------------------------------------
# Options and small pure helpers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RayOptions:
    """How a :class:`RayRunner` uses Ray (the defaults suit one node or a small cluster).

    ``cpus_per_worker``: Ray ``num_cpus`` of each actor. ``max_chunk``: most problems per chunk;
    ``chunks_per_worker``: the queue aims at about this many chunks per worker for the problems
    still waiting (smaller chunks toward the end). ``max_restarts``: Ray restarts of each actor
    after its process dies. ``max_attempts``: tries per problem before the run fails (a problem
    that kills every worker it lands on must not loop forever). ``ready_timeout_s``: how long to
    wait for the actors to load their models (and for resources to appear); ``restart_timeout_s``:
    how long to wait for a restarted actor when no other worker is alive.
    """

    cpus_per_worker: float = 1.0
    max_chunk: int = 32
    chunks_per_worker: int = 4
    max_restarts: int = 3
    max_attempts: int = 3
    ready_timeout_s: float = 1800.0
    restart_timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        if not self.cpus_per_worker > 0:
            raise ValueError(f"cpus_per_worker={self.cpus_per_worker} is invalid; accepted: > 0")
        for name in ("max_chunk", "chunks_per_worker", "max_attempts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid; accepted: an integer >= 1")
        if isinstance(self.max_restarts, bool) or not isinstance(self.max_restarts, int):
            raise ValueError(
                f"max_restarts={self.max_restarts!r} is invalid; accepted: an integer >= 0"
            )
        if self.max_restarts < 0:
            raise ValueError(
                f"max_restarts={self.max_restarts} is invalid; accepted: an integer >= 0"
            )
        for name in ("ready_timeout_s", "restart_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} is invalid; accepted: seconds > 0")


def chunk_size(
    remaining: int, workers: int, *, max_chunk: int = 32, chunks_per_worker: int = 4
) -> int:
    """Problems in the next chunk: ``ceil(remaining / (workers * chunks_per_worker))`` in [1, max_chunk].

    Large while many problems wait (each actor batches across the problems of its chunk), down to
    single problems at the end, so the last chunks finish close together.
    """
    if remaining < 1 or workers < 1:
        raise ValueError(
            f"chunk_size needs remaining >= 1 and workers >= 1, got {remaining}, {workers}"
        )
    return max(1, min(max_chunk, math.ceil(remaining / (workers * chunks_per_worker))))


def worker_resources(
    engine: Any, cluster_gpus: float, cpus_per_worker: float = 1.0
) -> dict[str, float]:
    """Ray resources of one worker: ``num_gpus`` = tensor-parallel size on GPUs, else CPUs only.

    ``engine`` is the :class:`tts_eval.engines.EngineConfig`. backend=hf follows its ``device``
    (``auto``: a GPU when the cluster has any); backend=vllm takes GPUs when the cluster has any.
    Ray hands each actor its own GPUs, so a numbered ``device=cuda:N`` is refused.
    """
    device = engine.device
    if device.startswith("cuda:"):
        raise ValueError(
            f"device={device} cannot be used with data_parallel_size>1: Ray assigns each worker "
            "its GPUs; accepted: device=auto or device=cuda"
        )
    if engine.backend == "vllm":
        wants_gpu = cluster_gpus > 0
    else:
        wants_gpu = device == "cuda" or (device == "auto" and cluster_gpus > 0)
    if device == "cuda" and cluster_gpus <= 0:
        raise ValueError(
            "device=cuda but the Ray cluster has no GPU; accepted here: device=cpu or auto"
        )
    num_gpus = float(engine.tensor_parallel_size) if wants_gpu else 0.0
    return {"num_cpus": float(cpus_per_worker), "num_gpus": num_gpus}


def _get(record: Any, key: str, default: Any = None) -> Any:
    if isinstance(record, Mapping):
        return record.get(key, default)
    return getattr(record, key, default)


def worker_throughput(records: Iterable[SearchResult | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per-worker totals of a distributed run, from results or their trace records.

    One dict per worker rank (sorted): ``worker`` (rank), ``node``, ``problems``,
    ``policy_tokens``, ``prm_tokens``, ``busy_s`` (sum of the wall time of the chunks it searched)
    and ``problems_per_s`` (problems / busy_s). Records without a ``settings["worker"]`` entry
    (runs with data_parallel_size=1) are ignored, so such a run gives ``[]``.
    """
    rows: dict[int, dict[str, Any]] = {}
    chunks: dict[int, dict[Any, float]] = {}
    for record in records:
        info = (_get(record, "settings") or {}).get(WORKER_KEY)
        if not info:
            continue
        rank = int(info["rank"])
        cost = _get(record, "cost")
        row = rows.setdefault(
            rank,
            {
                "worker": rank,
                "node": info.get("node"),
                "problems": 0,
                "policy_tokens": 0,
                "prm_tokens": 0,
            },
        )
        row["problems"] += 1
        row["policy_tokens"] += int(_get(cost, "policy_tokens", 0) or 0)
        row["prm_tokens"] += int(_get(cost, "prm_tokens", 0) or 0)
        chunks.setdefault(rank, {})[info.get("chunk")] = float(info.get("chunk_busy_s", 0.0))
    out = []
    for rank in sorted(rows):
        row = rows[rank]
        busy = sum(chunks[rank].values())
        row["busy_s"] = busy
        row["problems_per_s"] = row["problems"] / busy if busy > 0 else 0.0
        out.append(row)
    return out


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"{RAY_INSTALL_HINT} ({exc})") from exc
    return ray


# --------------------------------------------------------------------------------------------
# The worker (a Ray actor; a plain class so it can be read and tested without Ray)
# --------------------------------------------------------------------------------------------


class SearchWorker:
    """One data-parallel worker: an in-process ``Runner`` and the chunks it searches.

    A load error is kept and raised again by every call, so the driver sees the original error
    (e.g. a bad PRM path) from :meth:`ready` instead of a dead actor.
    """

    def __init__(self, config: Any, rank: int) -> None:
        from tts_eval.runner import Runner

        self.rank = rank
        self.chunks_done = 0
        self.node = _node_name()
        self._error: BaseException | None = None
        self.runner = None
        t0 = time.perf_counter()
        try:
            self.runner = Runner.from_config(dataclasses.replace(config, data_parallel_size=1))
        except Exception as exc:  # noqa: BLE001 - re-raised by ready()/search()
            self._error = exc
        self.load_s = time.perf_counter() - t0

    def ready(self) -> dict[str, Any]:
        """Who and where this worker is; raises the load error if the models did not load."""
        if self._error is not None:
            raise self._error
        return {
            "rank": self.rank,
            "node": self.node,
            "pid": os.getpid(),
            "load_s": self.load_s,
            "threads": _torch_threads(),
        }

    def search(self, chunk_id: int, problems: Sequence[Problem]) -> list[SearchResult]:
        """Search ``problems`` as one batch; each result gets its ``settings["worker"]`` entry."""
        if self._error is not None:
            raise self._error
        t0 = time.perf_counter()
        results = self.runner.search(problems)
        busy = time.perf_counter() - t0
        self.chunks_done += 1
        self._test_exit_hook()
        info = {
            "rank": self.rank,
            "node": self.node,
            "chunk": chunk_id,
            "chunk_size": len(problems),
            "chunk_busy_s": busy,
        }
        return [
            dataclasses.replace(r, settings={**r.settings, WORKER_KEY: dict(info)}) for r in results
        ]

    def _test_exit_hook(self) -> None:
        """Test-only: die like a killed process after chunk ``$TTS_EVAL_TEST_WORKER_EXIT_AFTER``."""
        after = os.environ.get(EXIT_AFTER_ENV)
        if not after or int(os.environ.get(EXIT_RANK_ENV, "0")) != self.rank:
            return
        if self.chunks_done == int(after) and not _was_restarted():
            logger.warning("test hook %s: worker %d exits now", EXIT_AFTER_ENV, self.rank)
            os._exit(1)


def _was_restarted() -> bool:
    """Whether Ray restarted this actor (asked only by the test hook: it queries the GCS)."""
    import warnings

    try:
        import ray

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Ray's property uses a deprecated accessor
            return bool(
                ray.is_initialized() and ray.get_runtime_context().was_current_actor_reconstructed
            )
    except Exception:  # noqa: BLE001 - outside an actor there is nothing to ask
        return False


def _node_name() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - only a label
        pass
    return os.uname().nodename


def _torch_threads() -> int | None:
    try:
        import torch

        return int(torch.get_num_threads())
    except ImportError:
        return None


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


class PromptRenderer:
    """The policy tokenizer's chat template, on the driver (models live in the workers).

    :class:`RayRunner` exposes it as ``runner.engine`` because callers render prompts through
    ``runner.engine.render_prompt``; it has no ``generate``.
    """

    def __init__(self, engine_config: Any) -> None:
        from tts_eval.engines.config import load_tokenizer

        self.tokenizer = load_tokenizer(engine_config)

    def render_prompt(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        from tts_eval.engines.config import render_chat

        return render_chat(self.tokenizer, messages)


def _check_models(config: Any) -> None:
    """The cheap checks a Runner makes, on the driver, before Ray starts anything."""
    from tts_eval.engines import check_pretrained

    check_pretrained(config.engine.pretrained)
    worker_resources(config.engine, cluster_gpus=1.0)  # refuses device=cuda:N before Ray starts
    if config.prm is not None:
        from tts_eval.prm.registry import read_model_config, resolve_prm_type

        resolve_prm_type(config.prm, read_model_config(str(config.prm.path)))
        device = config.prm.device
        if device is not None and device.startswith("cuda:"):
            raise ValueError(
                f"prm_device={device} cannot be used with data_parallel_size>1: Ray assigns each "
                "worker its GPUs; accepted: prm_device=cuda or leave it unset"
            )


def _connect(ray: Any, address: str | None, num_cpus: float) -> bool:
    """Join ``address`` (or the in-process session), else start a local cluster; True if started."""
    if ray.is_initialized():
        logger.info("ray: using the Ray session already open in this process")
        return False
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        logger.info("ray: joined the cluster at %s", address)
        return True
    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    logger.info("ray: started a local cluster (%g CPUs)", num_cpus)
    return True


_PROBE_RETRY_S = 1.0


@dataclass
class _Recovery:
    """A lost worker Ray is restarting: when it was lost and the pending ``ready`` probe."""

    since: float
    ref: Any = None
    next_try: float = 0.0


class RayRunner:
    """Runs each request batch over K Ray actors (see the module docstring).

    Same interface as :class:`tts_eval.runner.Runner` where callers use it: ``engine``
    (``render_prompt`` only), ``search_config`` and ``search(problems, progress)``.
    """

    def __init__(
        self,
        config: Any,
        engine: PromptRenderer,
        actors: list[Any],
        *,
        options: RayOptions,
        started_ray: bool,
    ) -> None:
        self.config = config
        self.search_config = config.search
        self.engine = engine
        self.prm = None  # each worker holds its own
        self.options = options
        self._actors = actors
        self._started_ray = started_ray
        self._dead: set[int] = set()  # restarts exhausted
        self._recovering: dict[int, _Recovery] = {}  # lost, being restarted by Ray
        self._chunk_ids = 0
        self.last_run: dict[str, Any] = {}

    @property
    def workers(self) -> int:
        return len(self._actors)

    @classmethod
    def from_config(cls, config: Any, options: RayOptions | None = None) -> RayRunner:
        """Check the models, join or start Ray, start ``config.data_parallel_size`` loaded actors."""
        options = options or RayOptions()
        workers = config.data_parallel_size
        if workers < 2:
            raise ValueError(
                f"RayRunner needs data_parallel_size >= 2, got {workers}; use Runner for one worker"
            )
        ray = _import_ray()
        _check_models(config)
        engine = PromptRenderer(config.engine)
        address = config.ray_address or os.environ.get("RAY_ADDRESS") or None
        local_cpus = max(float(os.cpu_count() or 1), workers * options.cpus_per_worker)
        started = _connect(ray, address, local_cpus)
        runner = None
        try:
            gpus = float(ray.cluster_resources().get("GPU", 0.0))
            resources = worker_resources(config.engine, gpus, options.cpus_per_worker)
            _check_capacity(ray, resources, workers, joined=bool(address) or not started)
            env = {k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ}
            actor_cls = ray.remote(SearchWorker)
            actors = [
                actor_cls.options(
                    **resources,
                    max_restarts=options.max_restarts,
                    max_task_retries=0,  # the driver re-queues lost chunks itself
                    scheduling_strategy="SPREAD",
                    runtime_env={"env_vars": env} if env else None,
                ).remote(config, rank)
                for rank in range(workers)
            ]
            runner = cls(config, engine, actors, options=options, started_ray=started)
            runner._wait_ready(resources)
            return runner
        except BaseException:
            if runner is not None:
                runner.close()
            elif started:
                ray.shutdown()
            raise

    def _wait_ready(self, resources: Mapping[str, float]) -> None:
        import ray

        refs = [actor.ready.remote() for actor in self._actors]
        done, pending = ray.wait(refs, num_returns=len(refs), timeout=self.options.ready_timeout_s)
        if pending:
            raise TimeoutError(
                f"data_parallel_size={self.workers}: only {len(done)} of {self.workers} Ray workers "
                f"were ready after {self.options.ready_timeout_s:.0f}s (each needs {dict(resources)}); "
                "check the cluster's free resources (ray status)"
            )
        infos = [_unwrap(ray, ref) for ref in refs]
        for info in infos:
            logger.info(
                "ray worker %d ready on %s (pid %d, %s threads) after %.1fs",
                info["rank"],
                info["node"],
                info["pid"],
                info["threads"],
                info["load_s"],
            )

    # ------------------------------------------------------------------ search
    def search(self, problems: Sequence[Problem], progress: bool = False) -> list[SearchResult]:
        """Search every problem on the workers; one result each, in the order of ``problems``."""
        import ray
        from ray.exceptions import RayActorError

        check_problems(problems)
        if not problems:
            return []
        opts = self.options
        t0 = time.perf_counter()
        results: list[SearchResult | None] = [None] * len(problems)
        attempts = [0] * len(problems)
        pending: deque[int] = deque(range(len(problems)))
        idle: deque[int] = deque(
            r for r in range(self.workers) if r not in self._dead and r not in self._recovering
        )
        inflight: dict[Any, tuple[int, list[int]]] = {}
        lost_chunks = 0
        bar = None
        if progress:
            from tqdm.auto import tqdm

            desc = f"search[{self.search_config.strategy}] x{self.workers}"
            bar = tqdm(total=len(problems), desc=desc)
        try:
            while pending or inflight:
                self._probe_recovering()
                while idle and pending:
                    rank = idle.popleft()
                    chunk = self._next_chunk(pending)
                    for i in chunk:
                        attempts[i] += 1
                    self._chunk_ids += 1
                    ref = self._actors[rank].search.remote(
                        self._chunk_ids, [problems[i] for i in chunk]
                    )
                    inflight[ref] = (rank, chunk)
                if not inflight:
                    self._check_recoverable(len(pending))
                probes = {rec.ref: rank for rank, rec in self._recovering.items() if rec.ref}
                ready, _ = ray.wait([*inflight, *probes], num_returns=1, timeout=_PROBE_RETRY_S)
                if not ready:
                    continue
                ref = ready[0]
                if ref in probes:
                    if self._on_probe(probes[ref], ref):
                        idle.append(probes[ref])
                    continue
                rank, chunk = inflight.pop(ref)
                try:
                    out = _unwrap(ray, ref)
                except RayActorError as exc:
                    lost_chunks += 1
                    over = [problems[i].uid for i in chunk if attempts[i] >= opts.max_attempts]
                    if over:
                        raise RuntimeError(
                            f"problems {over} were lost with their worker {opts.max_attempts} "
                            f"times (last: {_first_line(exc)}); giving up"
                        ) from exc
                    logger.warning(
                        "ray worker %d died searching %d problems; re-queued them (%s)",
                        rank,
                        len(chunk),
                        _first_line(exc),
                    )
                    pending.extendleft(reversed(chunk))
                    self._recovering[rank] = _Recovery(since=time.monotonic())
                    continue
                for i, result in zip(chunk, out, strict=True):
                    if result.uid != problems[i].uid:
                        raise RuntimeError(
                            f"worker {rank} returned {result.uid!r} for {problems[i].uid!r}"
                        )
                    results[i] = result
                idle.append(rank)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        elapsed = time.perf_counter() - t0
        done = [r for r in results if r is not None]
        self.last_run = {
            "problems": len(done),
            "wall_s": elapsed,
            "lost_chunks": lost_chunks,
            "workers": worker_throughput(done),
        }
        _log_summary(self.last_run)
        return done

    def wait_for_workers(self, timeout_s: float | None = None) -> int:
        """Wait until every lost worker is back (or dead for good); return how many are alive.

        ``search`` does not wait for a worker Ray is still restarting (the others carry on); call
        this between batches to have all of them again. Raises ``TimeoutError`` after
        ``timeout_s`` (default: ``options.restart_timeout_s``).
        """
        import ray

        limit = self.options.restart_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        while self._recovering:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Ray workers {sorted(self._recovering)} were not back within {limit:.0f}s"
                )
            self._probe_recovering()
            probes = {rec.ref: rank for rank, rec in self._recovering.items() if rec.ref}
            ready, _ = ray.wait(list(probes), num_returns=1, timeout=_PROBE_RETRY_S)
            if ready:
                self._on_probe(probes[ready[0]], ready[0])
        return self.workers - len(self._dead)

    def _next_chunk(self, pending: deque[int]) -> list[int]:
        alive = max(1, self.workers - len(self._dead))
        size = chunk_size(
            len(pending),
            alive,
            max_chunk=self.options.max_chunk,
            chunks_per_worker=self.options.chunks_per_worker,
        )
        return [pending.popleft() for _ in range(min(size, len(pending)))]

    def _probe_recovering(self) -> None:
        """Ask each lost worker (being restarted by Ray) whether it is back, at most every 1 s."""
        now = time.monotonic()
        for rank, rec in self._recovering.items():
            if rec.ref is None and now >= rec.next_try:
                rec.ref = self._actors[rank].ready.remote()

    def _on_probe(self, rank: int, ref: Any) -> bool:
        """Handle a finished probe; True when the worker is back."""
        import ray
        from ray.exceptions import ActorDiedError, RayActorError

        try:
            _unwrap(ray, ref)
        except ActorDiedError as exc:
            del self._recovering[rank]
            self._dead.add(rank)
            logger.warning("ray worker %d is gone for good: %s", rank, _first_line(exc))
            return False
        except RayActorError:  # still restarting: ask again shortly
            rec = self._recovering[rank]
            rec.ref, rec.next_try = None, time.monotonic() + _PROBE_RETRY_S
            return False
        del self._recovering[rank]
        logger.info("ray worker %d is back", rank)
        return True

    def _check_recoverable(self, left: int) -> None:
        """With nothing in flight, fail when no worker can come back (or takes too long)."""
        if not self._recovering:
            raise RuntimeError(
                f"all {self.workers} Ray workers died (restarts exhausted); "
                f"{left} problems were left unsearched"
            )
        waited = time.monotonic() - min(rec.since for rec in self._recovering.values())
        if waited > self.options.restart_timeout_s:
            raise TimeoutError(
                f"no Ray worker came back within {self.options.restart_timeout_s:.0f}s after "
                f"losing workers; {left} problems were left unsearched"
            )

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Kill this runner's actors; shut Ray down only if this runner started or joined it."""
        try:
            import ray
        except ImportError:  # pragma: no cover - we could not have started anything
            return
        if not ray.is_initialized():
            return
        for actor in self._actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception as exc:  # noqa: BLE001 - an actor already gone is fine
                logger.debug("ray.kill: %s", exc)
        self._actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    def __enter__(self) -> RayRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_capacity(ray: Any, resources: Mapping[str, float], workers: int, joined: bool) -> None:
    """Fail fast when a cluster can never host the workers (warn only where it may scale up)."""
    total = ray.cluster_resources()
    for key, ray_key in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
        need = resources.get(key, 0.0) * workers
        have = float(total.get(ray_key, 0.0))
        if need > have:
            message = (
                f"data_parallel_size={workers} needs {need:g} {ray_key}s "
                f"({resources.get(key):g} per worker) but the Ray cluster has {have:g}"
            )
            if not joined:
                raise ValueError(
                    f"{message}; accepted here: data_parallel_size <= {int(have // resources[key])}"
                )
            logger.warning("%s; the workers wait until the cluster grows", message)


def _unwrap(ray: Any, ref: Any) -> Any:
    """``ray.get`` that re-raises a worker's own exception as itself (not wrapped)."""
    from ray.exceptions import RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _log_summary(run: Mapping[str, Any]) -> None:
    logger.info(
        "ray search: %d problems in %.1fs on %d workers (%d chunks lost and re-run)",
        run["problems"],
        run["wall_s"],
        len(run["workers"]),
        run["lost_chunks"],
    )
    for row in run["workers"]:
        logger.info(
            "  worker %d (%s): %d problems, %d policy tokens, %d PRM tokens, busy %.1fs, %.3f problems/s",
            row["worker"],
            row["node"],
            row["problems"],
            row["policy_tokens"],
            row["prm_tokens"],
            row["busy_s"],
            row["problems_per_s"],
        )

"""``RaySearcher``: one search spread over K Ray actors, each holding its own policy and PRM.

``--model_args ...,data_parallel_size=K`` (K >= 2) makes :func:`tts_eval.runtime.open_searcher`
build a :class:`RaySearcher`. It checks the models on the driver (no weights), joins the cluster
named by ``ray_address=`` or ``RAY_ADDRESS`` (or starts a local one), and starts K
:class:`SearchWorker` actors that each load a :class:`~tts_eval.runtime.local.LocalSearcher` once
(``num_gpus`` per actor = the tensor-parallel size on GPU clusters, CPUs only on CPU). The actors
live as long as the searcher: every ``search(problems, search_config)`` call (every lm-eval
request batch, every run of a sweep) reuses them with the settings it brings.

Built on Ray's own pieces, not a hand-written queue:

- ``ray.util.ActorPool`` hands the chunks of a call to whichever actor is free first; chunks
  shrink towards the end of the call (:func:`chunk_plan`), so the last ones finish close together;
- Ray's actor fault tolerance (``max_restarts``, ``max_task_retries``) restarts an actor whose
  process died (killed, node lost) and runs the chunk it was searching again on it once its models
  are loaded; finished chunks are never recomputed. Seeds come from the search seed and the
  problem uid only, so results do not depend on K, on chunking or on which actor ran a problem;
- results come back in input order, each stamped with ``settings["worker"]`` (rank, node, pid,
  chunk, busy seconds, whether the actor was restarted), from which
  :func:`tts_eval.runtime.throughput.worker_throughput` computes per-worker throughput.

Why not Ray Data (``Dataset.map_batches`` over an actor pool), which does the same for batch
inference: every Dataset execution starts its own actor pool, and each actor's constructor is
where the models load, so each ``search`` call (each lm-eval batch, each chunk of each sweep run)
would load K policies and PRMs again; a sweep would load them (runs x chunks) times instead of
once. Measured here (2-core CPU, tiny Llama policy + tiny RLHFlow PRM, K=2, 6 problems,
best_of_n n=8, max_tokens=48, ``python benchmarks/bench_ray.py --problems 6 --ray-data``):
Ray Data took 7.4-7.8 s per search, every time, because each call starts the pool and loads the
models again; this module's actors took 4.9 s to start once and then 0.2 s per search (same
tokens). Three searches: 22.9 s on Ray Data, 5.6 s here. With real models (an 8B PRM loads in
minutes) the gap only grows, so the runtime keeps long-lived actors and uses Ray's ActorPool and
actor fault tolerance for the rest (see ``RAY_DATA_MEASUREMENT``).

Interrupts (``tts-eval``'s SIGINT / SIGTERM handling, ``tts_eval.cli``): ``ray.init`` would take
over SIGTERM (:func:`keep_signal_handlers` puts the process's handlers back); a search stopped
half-way cancels its chunks with ``ray.cancel`` and :meth:`RaySearcher.close` then kills the busy
actors (``ray.kill``) instead of waiting for their chunks, and shuts down the Ray instance it
started, so no actor or Ray helper process outlives the command.

Fault injection for tests: pass ``worker_cls=`` a subclass of :class:`SearchWorker`.

What this module does not do: search (``tts_eval.search``), load models itself
(``tts_eval.runtime.local``), split one problem across workers, or manage the cluster (start it
with ``ray start``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from tts_eval.config import TTSConfig
from tts_eval.engines.chat import load_tokenizer, render_chat
from tts_eval.errors import MissingDependencyError
from tts_eval.runtime.local import LocalSearcher, models_loaded, preflight
from tts_eval.runtime.throughput import WORKER_KEY, log_summary, worker_throughput
from tts_eval.search import SearchConfig, check_problems
from tts_eval.settings import RayOptions, invalid
from tts_eval.types import Problem, SearchResult

logger = logging.getLogger(__name__)

RAY_INSTALL_HINT = (
    "data_parallel_size>1 runs on Ray, which is not installed: pip install 'tts-scaling-eval[ray]'"
)
RAY_DATA_MEASUREMENT = (
    "Ray Data map_batches over a K=2 actor pool: 7.4-7.8 s per search (pool start + model loads "
    "every call); RaySearcher: 4.9 s start-up once, then 0.2 s per search; same tokens; "
    "3 searches in all: 22.9 s vs 5.6 s"
)


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------


def chunk_plan(total: int, workers: int, options: RayOptions) -> list[range]:
    """Consecutive chunks covering ``range(total)``, large first, single problems at the end.

    Each chunk holds ``ceil(remaining / (workers * chunks_per_worker))`` problems (at most
    ``max_chunk``, at least 1) of what is left after the chunks before it: actors batch across the
    problems of a chunk, and small last chunks keep them busy until the end.
    """
    if total < 0 or workers < 1:
        raise ValueError(f"chunk_plan needs total >= 0 and workers >= 1, got {total}, {workers}")
    chunks, start = [], 0
    while start < total:
        remaining = total - start
        size = -(-remaining // (workers * options.chunks_per_worker))
        size = max(1, min(options.max_chunk, size))
        chunks.append(range(start, start + size))
        start += size
    return chunks


def worker_resources(config: TTSConfig, cluster_gpus: float, cpus: float = 1.0) -> dict[str, float]:
    """Ray resources of one worker: ``num_gpus`` = tensor-parallel size on GPUs, else CPUs only.

    backend=hf follows its ``device`` (``auto``: a GPU when the cluster has any); backend=vllm
    takes GPUs when the cluster has any; backend=openai (the policy on its server) one GPU for the
    PRM when it has one (``prm_device`` cuda, or auto on a cluster with GPUs). A PRM on
    ``prm_backend=vllm`` takes ``prm_tensor_parallel_size`` GPUs when the cluster has any (shared
    with a policy on GPUs: the larger of the two counts); on ``prm_backend=openai`` none. Ray hands each actor its own GPUs, so numbered devices
    (``device=cuda:N``, ``prm_device=cuda:N``) are refused.
    """
    engine = config.engine
    for key, device in (
        ("device", engine.device),
        ("prm_device", getattr(config.prm, "device", None)),
    ):
        if device and device.startswith("cuda:"):
            raise invalid(
                key,
                device,
                f"{key}=cuda or auto with data_parallel_size>1 (Ray assigns each worker its GPUs)",
            )
    if engine.device == "cuda" and cluster_gpus <= 0:
        raise invalid("device", "cuda", "cpu or auto: the Ray cluster has no GPU")
    prm = config.prm
    prm_backend = getattr(prm, "backend", "hf")
    # The PRM's own GPUs: none on a server (prm_backend=openai); its tensor-parallel size for
    # its own vLLM engine when the cluster has GPUs; one for transformers on cuda (or auto with
    # GPUs). A policy and a PRM on GPUs share the worker's GPUs (their memory shares split them).
    if prm is None or prm_backend == "openai":
        prm_gpus = 0.0
    elif prm_backend == "vllm":
        prm_gpus = float(prm.tensor_parallel_size) if cluster_gpus > 0 else 0.0
    else:
        prm_device = prm.device or "auto"
        wants = prm_device == "cuda" or (prm_device == "auto" and cluster_gpus > 0)
        prm_gpus = 1.0 if wants else 0.0
    if engine.backend == "openai":  # the policy runs on its server: only a local PRM wants a GPU
        return {"num_cpus": float(cpus), "num_gpus": prm_gpus}
    if engine.backend == "vllm":
        wants_gpu = cluster_gpus > 0
    else:
        wants_gpu = engine.device == "cuda" or (engine.device == "auto" and cluster_gpus > 0)
    num_gpus = float(engine.tensor_parallel_size) if wants_gpu else 0.0
    if prm_backend == "vllm":
        num_gpus = max(num_gpus, prm_gpus)
    return {"num_cpus": float(cpus), "num_gpus": num_gpus}


def check_capacity(
    cluster: Mapping[str, float], resources: Mapping[str, float], workers: int, joined: bool
) -> None:
    """Fail fast when a cluster can never host the workers (warn only where it may grow)."""
    for key, ray_key in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
        need = resources.get(key, 0.0) * workers
        have = float(cluster.get(ray_key, 0.0))
        if need <= have:
            continue
        message = (
            f"data_parallel_size={workers} needs {need:g} {ray_key}s "
            f"({resources.get(key):g} per worker) but the Ray cluster has {have:g}"
        )
        if not joined:
            raise invalid(
                "data_parallel_size",
                workers,
                f"at most {int(have // resources[key])} here ({message})",
            )
        logger.warning("%s; the workers wait until the cluster grows", message)


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError(f"{RAY_INSTALL_HINT} ({exc})") from exc
    return ray


# --------------------------------------------------------------------------------------------
# The worker (a Ray actor; a plain class so it can be read, subclassed and tested without Ray)
# --------------------------------------------------------------------------------------------


class SearchWorker:
    """One data-parallel worker: a loaded :class:`LocalSearcher` and the chunks it searches.

    A load error is kept and raised again by every call, so the driver sees the original error
    (e.g. bad PRM weights) from :meth:`ready` instead of a dead actor.
    """

    def __init__(self, config: TTSConfig, rank: int) -> None:
        self.rank = rank
        self.node = _node_name()
        self.restarted = _was_restarted()
        self.searcher: LocalSearcher | None = None
        self._error: BaseException | None = None
        t0 = time.perf_counter()
        try:
            self.searcher = LocalSearcher.from_config(config)
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
            "loads": models_loaded(),
            "restarted": self.restarted,
            "max_model_len": self.searcher.max_model_len if self.searcher else None,
        }

    def search(
        self, chunk_id: int, problems: Sequence[Problem], config: SearchConfig
    ) -> list[SearchResult]:
        """Search ``problems`` as one batch; each result gets its ``settings["worker"]`` entry."""
        if self._error is not None:
            raise self._error
        assert self.searcher is not None
        t0 = time.perf_counter()
        results = self.searcher.search(problems, config)
        info = {
            "rank": self.rank,
            "node": self.node,
            "pid": os.getpid(),
            "chunk": chunk_id,
            "chunk_size": len(problems),
            "chunk_busy_s": time.perf_counter() - t0,
            "restarted": self.restarted,
        }
        return [
            dataclasses.replace(r, settings={**r.settings, WORKER_KEY: dict(info)}) for r in results
        ]

    def close(self) -> None:
        if self.searcher is not None:
            self.searcher.close()
            self.searcher = None


def _was_restarted() -> bool:
    """Whether Ray restarted this actor after its process died (False outside an actor)."""
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


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


class RaySearcher:
    """A :class:`tts_eval.runtime.Searcher` over K Ray actors (see the module docstring)."""

    def __init__(
        self,
        tokenizer: Any,
        actors: list[Any],
        *,
        options: RayOptions,
        started_ray: bool,
        infos: list[dict[str, Any]],
    ) -> None:
        self.tokenizer = tokenizer
        self.options = options
        self.infos = infos  # what each worker's ready() said when it started
        self.last_run: dict[str, Any] = {}
        self._actors = actors
        self._started_ray = started_ray
        self._chunk_ids = 0
        self._busy = False  # a search stopped half-way may have left chunks running

    @property
    def workers(self) -> int:
        return len(self._actors)

    @property
    def max_model_len(self) -> int | None:
        """The policy's context length, as the workers' engines reported it at start-up."""
        limits = [info.get("max_model_len") for info in self.infos]
        return min(limits) if limits and None not in limits else None

    @classmethod
    def from_config(
        cls,
        config: TTSConfig,
        options: RayOptions | None = None,
        *,
        worker_cls: type[SearchWorker] = SearchWorker,
    ) -> RaySearcher:
        """Check the models, join or start Ray, start ``config.data_parallel_size`` loaded actors."""
        options = options or RayOptions()
        workers = config.data_parallel_size
        if workers < 2:
            raise invalid("data_parallel_size", workers, "an integer >= 2 for a Ray searcher")
        ray = import_ray()
        preflight(config)
        worker_resources(config, cluster_gpus=1.0, cpus=options.cpus_per_worker)
        tokenizer = load_tokenizer(config.engine)
        address = config.ray_address or os.environ.get("RAY_ADDRESS") or None
        started = _connect(ray, address, max(float(os.cpu_count() or 1), workers))
        actors: list[Any] = []
        try:
            gpus = float(ray.cluster_resources().get("GPU", 0.0))
            resources = worker_resources(config, gpus, options.cpus_per_worker)
            check_capacity(
                ray.cluster_resources(), resources, workers, joined=bool(address) or not started
            )
            actor_cls = ray.remote(worker_cls)
            actors = [
                actor_cls.options(
                    **resources,
                    max_restarts=options.max_restarts,
                    max_task_retries=options.max_task_retries,
                    scheduling_strategy="SPREAD",
                ).remote(config, rank)
                for rank in range(workers)
            ]
            infos = _wait_ready(ray, actors, options.ready_timeout_s, resources)
            return cls(tokenizer, actors, options=options, started_ray=started, infos=infos)
        except BaseException:
            _kill(ray, actors)
            if started:
                ray.shutdown()
            raise

    def render_prompt(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        return render_chat(self.tokenizer, messages)

    def search(
        self, problems: Sequence[Problem], config: SearchConfig, *, progress: bool = False
    ) -> list[SearchResult]:
        """Search every problem on the workers; one result each, in the order of ``problems``."""
        from ray.exceptions import RayActorError
        from ray.util import ActorPool

        if not self._actors:
            raise RuntimeError("this searcher was closed; open a new one")
        if not isinstance(config, SearchConfig):
            raise TypeError(f"config must be a SearchConfig, got {type(config).__name__}")
        check_problems(problems)
        if not problems:
            return []
        t0 = time.perf_counter()
        position = {p.uid: i for i, p in enumerate(problems)}
        results: list[SearchResult | None] = [None] * len(problems)
        pool = ActorPool(self._actors)
        submitted: list[Any] = []  # refs of the chunks handed to actors so far

        def _sent(ref: Any) -> Any:
            submitted.append(ref)
            return ref

        for chunk in chunk_plan(len(problems), self.workers, self.options):
            self._chunk_ids += 1
            batch = (self._chunk_ids, [problems[i] for i in chunk])
            pool.submit(lambda actor, b: _sent(actor.search.remote(b[0], b[1], config)), batch)
        bar = _progress(progress, len(problems), f"search[{config.strategy}] x{self.workers}")
        finished = False
        try:
            while pool.has_next():
                try:
                    out = _unwrap(pool.get_next_unordered)
                except RayActorError as exc:
                    raise RuntimeError(
                        f"a Ray worker died searching a chunk more often than Ray retries it "
                        f"(max_task_retries={self.options.max_task_retries}): {_first_line(exc)}"
                    ) from exc
                for result in out:
                    results[position[result.uid]] = result
                if bar is not None:
                    bar.update(len(out))
            finished = True
        finally:
            if bar is not None:
                bar.close()
            if not finished:  # interrupted or failed: no more chunks; actors may still be busy
                self._abandon(submitted)
        missing = [p.uid for p, r in zip(problems, results, strict=True) if r is None]
        if missing:
            raise RuntimeError(f"the Ray workers returned no result for problems {missing}")
        done = [r for r in results if r is not None]
        self.last_run = {
            "problems": len(done),
            "wall_s": time.perf_counter() - t0,
            "workers": worker_throughput(done),
        }
        log_summary(self.last_run)
        return done

    def _abandon(self, submitted: Sequence[Any]) -> None:
        """A search that stops half-way (an interrupt, a worker's error) submits nothing more
        and cancels the chunks it handed out (``ray.cancel``: one still queued on its actor never
        runs; one running goes on, as Ray cannot stop a running task of a plain actor), and
        remembers that actors may be busy, so :meth:`close` kills them at once rather than
        queueing a ``close`` call behind their chunks."""
        import ray

        for ref in submitted:
            try:
                ray.cancel(ref)
            except Exception as exc:  # noqa: BLE001 - finished, or its actor is gone
                logger.debug("ray.cancel: %s", exc)
        self._busy = self._busy or bool(submitted)

    def close(self) -> None:
        """Free the actors' models, kill them; shut Ray down only if this searcher started it.

        Idle actors close their searchers first (vLLM's engine processes stop in order); actors
        a stopped search left busy are killed straight away (``ray.kill``: Ray ends the worker's
        process group, the engine's processes included).
        """
        try:
            import ray
        except ImportError:  # pragma: no cover - we could not have started anything
            return
        if ray.is_initialized() and self._actors:
            if not self._busy:
                try:
                    ray.get([actor.close.remote() for actor in self._actors], timeout=60)
                except Exception as exc:  # noqa: BLE001 - a dead actor has nothing left to free
                    logger.debug("ray worker close: %s", exc)
            _kill(ray, self._actors)
        self._actors = []
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False

    def __enter__(self) -> RaySearcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connect(ray: Any, address: str | None, num_cpus: float) -> bool:
    """Join ``address`` (or the in-process session), else start a local cluster; True if started."""
    if ray.is_initialized():
        logger.info("ray: using the Ray session already open in this process")
        return False
    with keep_signal_handlers():
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
            logger.info("ray: joined the cluster at %s", address)
            return True
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    logger.info("ray: started a local cluster (%g CPUs)", num_cpus)
    return True


@contextlib.contextmanager
def keep_signal_handlers() -> Iterator[None]:
    """Keep the process's SIGINT / SIGTERM handling across ``ray.init``.

    ``ray.init`` replaces the driver's SIGTERM handler (with ``sys.exit``, then, when it starts a
    node, one that kills the node's processes and exits 1), and its core worker installs a crash
    handler on SIGTERM at the C level that prints a stack dump and chains on (a ``kill -TERM``
    ended the run with "Aborted", exit 134). Afterwards the Python-level handler that was there
    before is installed again, or, where there was none, the one Ray set (re-installing it at the
    Python level removes the C-level dump). Outside the main thread nothing can be changed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            if not callable(handler):
                handler = signal.getsignal(sig)
            if handler is not None:
                signal.signal(sig, handler)


def _wait_ready(
    ray: Any, actors: list[Any], timeout_s: float, resources: Mapping[str, float]
) -> list[dict[str, Any]]:
    refs = [actor.ready.remote() for actor in actors]
    done, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    if len(done) < len(refs):
        raise TimeoutError(
            f"data_parallel_size={len(actors)}: only {len(done)} of {len(actors)} Ray workers "
            f"were ready after {timeout_s:.0f}s (each needs {dict(resources)}); "
            "check the cluster's free resources (ray status)"
        )
    infos = [_unwrap(lambda ref=ref: ray.get(ref)) for ref in refs]
    for info in infos:
        logger.info(
            "ray worker %d ready on %s (pid %d) after %.1fs",
            info["rank"],
            info["node"],
            info["pid"],
            info["load_s"],
        )
    return infos


def _kill(ray: Any, actors: list[Any]) -> None:
    for actor in actors:
        try:
            ray.kill(actor, no_restart=True)
        except Exception as exc:  # noqa: BLE001 - an actor already gone is fine
            logger.debug("ray.kill: %s", exc)


def _unwrap(get: Any) -> Any:
    """Call ``get`` (a ``ray.get``), re-raising a worker's own exception as itself."""
    from ray.exceptions import RayTaskError

    try:
        return get()
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc)

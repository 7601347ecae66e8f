"""Per-worker throughput of a data-parallel run, from its results or their trace records.

A Ray searcher stamps every result with ``settings["worker"]`` (rank, node, chunk, the chunk's busy
seconds); :func:`worker_throughput` adds those up per worker. It is pure (no Ray import), so
``tts-eval report`` reads it from trace files written anywhere.

What this module does not do: run anything, or time anything itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from tts_eval.types import SearchResult

logger = logging.getLogger(__name__)

WORKER_KEY = "worker"  # the SearchResult.settings entry a Ray searcher adds


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
            {"worker": rank, "node": info.get("node"), "problems": 0, "policy_tokens": 0}
            | {"prm_tokens": 0},
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


def log_summary(run: Mapping[str, Any]) -> None:
    """Log one line for the run and one per worker (what ``RaySearcher.last_run`` holds)."""
    logger.info(
        "ray search: %d problems in %.1fs on %d workers",
        run["problems"],
        run["wall_s"],
        len(run["workers"]),
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

"""Hooks of the ``arith`` task: a seeded generator of addition/subtraction word problems, grading.

The task exists to show test-time scaling on a *small* real model (SmolLM2-135M-Instruct gets some
of these right, MATH-500 almost none): ``generate_problems(count, seed)`` writes ``count`` word
problems with two or three one-digit numbers (1-9) joined by additions and subtractions, each with a
non-negative integer answer. The same ``(count, seed)`` always gives the same problems, in the same
order, on every platform (``random.Random`` with an integer seed; ``random``, ``randint`` and
``choice`` are stable across Python versions), so no data file is shipped or downloaded:
``load_arith`` generates the 100 problems of the task (a test pins the first ones).

The prompt asks for one step per line (search with ``step_delimiter=\n``: SmolLM2 rarely leaves
blank lines between steps) and a last line ``The answer is N.`` (what
``tts_eval.grader.NumberAnswerSpec`` recognises as a final step). ``process_results`` grades
by number (the last number of the output equals the gold integer) and, for ``--model tts``, adds
the trace metrics (``maj@n``, ``weighted@n``, ``naive@n``, ``pass@n``, ``policy_tokens``) graded
the same way. Run ``--model tts`` with ``answer=number`` so that voting and search group answers
as this task grades them.

This file must stay importable on its own (lm-eval loads it from the task folder by path): only
the standard library at import time.
"""

from __future__ import annotations

import random
from typing import Any

COUNT = 100
SEED = 2026
INSTRUCTION = (
    "Solve the problem step by step. Write each step on its own line and end with "
    'a last line of the form "The answer is N."'
)

NAMES = (
    "Ana",
    "Ben",
    "Carla",
    "Dev",
    "Emma",
    "Farid",
    "Grace",
    "Hugo",
    "Iris",
    "Jon",
    "Kemal",
    "Lea",
)
ITEMS = (
    "apples",
    "marbles",
    "stickers",
    "pencils",
    "books",
    "coins",
    "cookies",
    "stamps",
    "shells",
)


def _two(rng: random.Random, name: str, item: str) -> tuple[str, int, str]:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    if rng.choice((True, False)):
        text = f"{name} has {a} {item}. {name} gets {b} more {item}. How many {item} does {name} have now?"
        return text, a + b, f"{a} + {b}"
    a, b = max(a, b), min(a, b)
    text = (
        f"{name} has {a} {item} and gives {b} of them away. How many {item} does {name} have left?"
    )
    return text, a - b, f"{a} - {b}"


def _three(rng: random.Random, name: str, item: str) -> tuple[str, int, str]:
    a, b, c = rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, 9)
    kind = rng.choice(("add-add", "add-sub", "sub-add"))
    if kind == "add-add":
        text = (
            f"There are {a} {item} in a box. {name} puts in {b} more, then {c} more. "
            f"How many {item} are in the box now?"
        )
        return text, a + b + c, f"{a} + {b} + {c}"
    if kind == "add-sub":
        c = min(c, a + b)
        text = (
            f"{name} has {a} {item}, buys {b} more and then gives {c} to a friend. "
            f"How many {item} does {name} have now?"
        )
        return text, a + b - c, f"{a} + {b} - {c}"
    a, b = max(a, b), min(a, b)
    text = (
        f"A shelf holds {a} {item}. {name} takes {b} of them away and later puts {c} back. "
        f"How many {item} are on the shelf now?"
    )
    return text, a - b + c, f"{a} - {b} + {c}"


def generate_problems(count: int = COUNT, seed: int = SEED) -> list[dict[str, Any]]:
    """``count`` problems (``uid``, ``question``, ``answer`` as a string, ``expression``,
    ``numbers``: 2 or 3), the same for the same ``(count, seed)``."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        numbers = 2 if rng.random() < 0.6 else 3
        text, answer, expression = (_two if numbers == 2 else _three)(rng, name, item)
        rows.append(
            {
                "uid": f"arith/{seed}/{index}",
                "question": text,
                "answer": str(answer),
                "expression": expression,
                "numbers": numbers,
            }
        )
    return rows


def doc_to_text(doc: dict) -> str:
    return f"{doc['question']}\n\n{INSTRUCTION}"


def load_arith(**kwargs):
    """A ``DatasetDict`` with the task's ``test`` split (kwargs from lm-eval's metadata are ignored)."""
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(generate_problems())})


def process_results(doc: dict, results: list) -> dict:
    from tts_eval.grader import NumberAnswerSpec
    from tts_eval.task_metrics import trace_metrics

    spec = NumberAnswerSpec()
    output = results[0]
    predicted = spec.extract(output)
    metrics: dict[str, Any] = {
        "exact_match": float(predicted is not None and spec.equivalent(predicted, doc["answer"]))
    }
    trace = getattr(output, "trace", None)
    if trace is not None:
        metrics.update(trace_metrics(trace, doc["answer"], spec, task="arith"))
    return metrics


def count_traces(items: list) -> int:
    """Aggregate of the ``tts_trace`` entries: how many search traces were logged."""
    return len(items)

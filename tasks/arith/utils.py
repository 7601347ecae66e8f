"""Hooks of the ``arith`` task: a seeded generator of addition/subtraction word problems, grading.

The task exists to show test-time scaling on a *small* real model (SmolLM2-135M-Instruct gets some
of these right, MATH-500 almost none): ``generate_problems(count, seed)`` writes ``count`` word
problems with two or three one-digit numbers (1-9) joined by additions and subtractions, each with a
non-negative integer answer. The same ``(count, seed)`` always gives the same problems, in the same
order, on every platform (``random.Random`` with an integer seed; ``random``, ``randint`` and
``choice`` are stable across Python versions), so no data file is shipped or downloaded:
``load_arith`` generates the 100 problems of the task (a test pins the first ones).

Three tasks share these hooks (their YAML passes ``dataset_kwargs`` to ``load_arith``):

- ``arith``: the first 100 problems of seed 2026;
- ``arith_500``: the first 500 problems of seed 2026 (``arith`` is its first 100): a test split
  large enough for paired comparisons;
- ``arith_train``: 2,000 problems of seed 1, leaving out every question that occurs among the first
  5,000 problems of seed 2026 (:data:`TEST_RESERVE`), so a PRM trained on it never saw a test
  question (``tts-eval label --task arith_train``).

``check_step(doc, step)`` is the task's exact step checker (read by ``tts-eval label``): a step
that states arithmetic (``9 - 2 + 1 = 8``) is right when every such equation holds and its value
lies on the way to the problem's answer (a run of neighbouring terms of the problem's expression:
for ``9 - 2 + 1``, one of 7, 1 and 8), wrong when an equation is false or off that way (``9 + 2 =
11`` for it: right sum, wrong operation), and not checkable (None) when it states none. A doc
without its ``expression`` is checked for arithmetic only.

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
import re
from fractions import Fraction
from typing import Any

COUNT = 100
SEED = 2026
# Questions of the first TEST_RESERVE problems of seed SEED never enter a training split.
TEST_RESERVE = 5000
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


def training_problems(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` problems of ``seed`` whose questions are none of the first :data:`TEST_RESERVE`
    problems of :data:`SEED` (drawn on until ``count`` are kept; uids keep the draw index)."""
    if seed == SEED:
        raise ValueError(f"a training split needs another seed than the test seed {SEED}")
    reserved = {row["question"] for row in generate_problems(TEST_RESERVE, SEED)}
    kept: list[dict[str, Any]] = []
    drawn = count
    while len(kept) < count:
        kept = [row for row in generate_problems(drawn, seed) if row["question"] not in reserved]
        drawn += count - len(kept)
    return kept[:count]


def doc_to_text(doc: dict) -> str:
    return f"{doc['question']}\n\n{INSTRUCTION}"


def load_arith(
    arith_count: int = COUNT, arith_seed: int = SEED, arith_split: str = "test", **kwargs
):
    """A ``DatasetDict`` with one ``test`` split: ``arith_count`` problems of ``arith_seed``
    (``arith_split="train"``: :func:`training_problems`). The names carry the task's prefix because
    lm-eval passes its metadata, which holds the run's ``model_args`` (``seed=1`` among them), as
    keywords beside them; other keywords are ignored."""
    import datasets

    if arith_split not in ("test", "train"):
        raise ValueError(f"arith_split={arith_split!r} is invalid; accepted: test, train")
    if arith_split == "train":
        rows = training_problems(arith_count, arith_seed)
    else:
        rows = generate_problems(arith_count, arith_seed)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


_NUMBER = r"\d+(?:\.\d+)?"
_OPERATOR = r"[-+*/×x÷−]"
_EQUATION = re.compile(
    rf"(?<![\w.])({_NUMBER}(?:\s*{_OPERATOR}\s*{_NUMBER})+)\s*=\s*(-?{_NUMBER})(?![\w.]*\d)"
)
_TOKEN = re.compile(rf"{_NUMBER}|{_OPERATOR}")


def _evaluate(expression: str) -> Fraction | None:
    """Value of ``a op b op c ...`` with the usual precedence (* and / before + and -)."""
    tokens = _TOKEN.findall(expression)
    ops = {"×": "*", "x": "*", "÷": "/", "−": "-"}
    terms: list[Fraction] = [Fraction(tokens[0])]
    signs: list[int] = [1]
    for op, number in zip(tokens[1::2], tokens[2::2], strict=False):
        op = ops.get(op, op)
        value = Fraction(number)
        if op in "+-":
            terms.append(value)
            signs.append(1 if op == "+" else -1)
        elif op == "*":
            terms[-1] *= value
        elif value == 0:
            return None
        else:
            terms[-1] /= value
    return sum((s * t for s, t in zip(signs, terms, strict=True)), Fraction(0))


def path_values(expression: str) -> frozenset[Fraction]:
    """Values a right solution of ``expression`` (``a op b op c``, + and -) can state: each run of
    neighbouring terms, grouped as the expression needs it (``a - b + c``: ``a - b``, ``b - c``
    as in ``a - (b - c)``, and the whole)."""
    tokens = _TOKEN.findall(expression)
    numbers, ops = [Fraction(t) for t in tokens[0::2]], tokens[1::2]
    values = set()
    for start in range(len(numbers)):
        # a run after a minus is subtracted whole: its own operators flip
        flip = start > 0 and ops[start - 1] == "-"
        value = numbers[start]
        for op, number in zip(ops[start:], numbers[start + 1 :], strict=False):
            value = value + number if (op == "+") != flip else value - number
            values.add(value)
    return frozenset(values)


def check_step(doc: dict, step: str) -> bool | None:
    """Exact check of one step (see the module docstring): False if an equation it states is
    wrong, or (when ``doc`` has its ``expression``) equals no value on the way to the answer;
    True if it states at least one and all pass; None if it states none."""
    on_path = path_values(doc["expression"]) if doc.get("expression") else None
    verdicts = []
    for lhs, rhs in _EQUATION.findall(step):
        value = _evaluate(lhs)
        if value is not None:
            verdicts.append(value == Fraction(rhs) and (on_path is None or value in on_path))
    if not verdicts:
        return None
    return all(verdicts)


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

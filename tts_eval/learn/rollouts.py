"""Process labels by Monte Carlo rollouts (Math-Shepherd), pure over the engine and answer protocols.

:func:`label_problems` does, for a batch of problems with gold answers:

1. **Solutions**, generated step by step exactly as the tree searches do (one engine call per
   round for every open solution of every problem, the first round one request for all
   ``samples`` of a problem; a step ends at ``step_delimiter``; a solution
   ends at EOS, at a step that :meth:`AnswerSpec.is_final_step` accepts, or at ``max_tokens``;
   the last of ``num_iterations`` rounds generates to the end). Steps are the PRM views of
   :func:`tts_eval.search.segment_steps`, so a PRM trained on them sees what a search shows it.
   Where each step ended in the solution's token ids is recorded as it is generated. With
   ``rollouts=0`` no boundary is needed: each problem's solutions are one request generated to the
   end, then ended at their first final-answer step (:func:`cut_at_final_step`).
2. **Rollouts**: from the token-id prefix that ends each non-final step, ``rollouts`` (m)
   completions to the end, in ONE engine call for the batch (all m rollouts of a prefix are one
   request for m samples; the prefixes of one solution share its tokens, so the engine's prefix
   cache serves them). A rollout reaches the gold answer when the solution it completes, ended as
   a search would end it (at its first final-answer step), has an answer equivalent to the gold
   one; one cut off at ``max_tokens`` before any final step reaches nothing.
3. **Labels**, one per step, with its source:

   - ``checker``: the task's exact step checker says the step is wrong (e.g. false arithmetic):
     the label is False whatever else says; or it says the step is right (a true step on the way
     to the answer) and no earlier step was checked wrong: True, unless it is the last step (the
     solution's answer decides that one);
   - ``outcome``: the last step of a solution, labelled by the solution's own answer (True iff it
     equals the gold answer; a solution cut off at ``max_tokens`` is False); also every step when
     ``rollouts=0`` (outcome supervision), and the steps a cap round closed together (no token
     boundary to roll out from);
   - ``mc``: hard label = some rollout reached the gold answer; ``soft`` = the share that did.

Seeds derive from the run seed, the problem uid, the solution index and the round or step (never a
batch position), so a problem's labels do not depend on which problems share its batch: a job
split into chunks and resumed gives what one uninterrupted job gives.

What this module does not do: load models or tasks, write files (``tts_eval.learn.label``), or
train (``tts_eval.learn.train``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from tts_eval.search import Node, SearchConfig, derive_seed, extend, segment_steps, step_request
from tts_eval.settings import check_int, invalid
from tts_eval.types import (
    AnswerSpec,
    Completion,
    FinishReason,
    GenerationRequest,
    PolicyEngine,
    SamplingParams,
)
from tts_eval.types import Problem as _SearchProblem

SCOPE = "tts-eval label"
SOURCES = ("mc", "outcome", "checker")
# A task's exact step checker, bound to one problem: step text -> wrong (False), right (True) or
# not checkable (None).
StepChecker = Callable[[str], "bool | None"]


@dataclass(frozen=True)
class LabelSettings:
    """How solutions are sampled and labelled. ``samples``: solutions per problem; ``rollouts``:
    completions per step prefix (0: outcome labels only); the rest as in a search."""

    samples: int = 4
    rollouts: int = 4
    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 2048
    seed: int = 0
    step_delimiter: str = "\n\n"
    num_iterations: int = 64

    def __post_init__(self) -> None:
        check_int("samples", self.samples, 1, scope=SCOPE)
        check_int("rollouts", self.rollouts, 0, scope=SCOPE)
        # The sampling settings are checked by the search's own config.
        self.search_config()

    def search_config(self) -> SearchConfig:
        """The settings of the step-by-step generation, as a search would take them."""
        return SearchConfig(
            strategy="best_of_n",
            n=self.samples,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            seed=self.seed,
            step_delimiter=self.step_delimiter,
            num_iterations=self.num_iterations,
        )


@dataclass(frozen=True)
class LabelProblem:
    """A problem with its gold answer: ``text`` as the PRM sees it, ``prompt_ids`` the policy's."""

    uid: str
    text: str
    prompt_ids: tuple[int, ...]
    gold: str

    def __post_init__(self) -> None:
        if not isinstance(self.gold, str) or not self.gold.strip():
            raise invalid("gold", self.gold, f"a non-empty gold answer (problem {self.uid})")


@dataclass(frozen=True)
class StepLabel:
    """One step: its PRM view, hard label, share of rollouts that reached gold (None without
    rollouts) and where the label came from (:data:`SOURCES`)."""

    text: str
    label: bool
    soft: float | None
    source: str


@dataclass(frozen=True)
class LabelledSolution:
    """One sampled solution, its steps labelled. ``ended``: ``answer`` (a final-answer step),
    ``eos``, ``length`` (cut off at max_tokens) or ``cap`` (the iteration cap's last round)."""

    index: int
    steps: tuple[StepLabel, ...]
    answer: str | None
    correct: bool
    ended: str
    tokens: int


@dataclass(frozen=True)
class LabelCost:
    """Tokens one problem cost: the solutions' and the rollouts' generated tokens, and the prompt
    tokens each queried (prompt x n) and had served from the engine's prefix cache."""

    solution_tokens: int = 0
    solution_prompt_tokens: int = 0
    solution_cached_prompt_tokens: int = 0
    rollout_tokens: int = 0
    rollout_prompt_tokens: int = 0
    rollout_cached_prompt_tokens: int = 0


@dataclass(frozen=True)
class ProblemLabels:
    uid: str
    problem: str
    gold: str
    solutions: tuple[LabelledSolution, ...]
    cost: LabelCost = field(default_factory=LabelCost)


# --------------------------------------------------------------------------------------------
# pure helpers
# --------------------------------------------------------------------------------------------


def rollout_answer(
    prefix_text: str, completion: Completion, answers: AnswerSpec, delimiter: str
) -> str | None:
    """The answer of the solution ``prefix_text + completion.text``, ended as a search ends it:
    at its first final-answer step; None when it was cut off before one."""
    text = prefix_text + completion.text
    kept = cut_at_final_step(text, answers, delimiter)
    if kept is not None:
        return answers.extract(kept)
    if completion.finish_reason is FinishReason.LENGTH:
        return None
    return answers.extract(text) if text.strip() else None


def reaches(answer: str | None, gold: str, answers: AnswerSpec) -> bool:
    return answer is not None and bool(answers.equivalent(answer, gold))


def combine_labels(
    views: Sequence[str],
    *,
    outcome: bool,
    mc: Mapping[int, float],
    checker: StepChecker | None,
) -> tuple[StepLabel, ...]:
    """Labels of a solution's steps (see the module docstring): ``mc`` maps a step index to its
    share of rollouts that reached gold; steps without one, and the last step, take ``outcome``."""
    labels = []
    last = len(views) - 1
    checked_wrong = False
    for i, view in enumerate(views):
        soft = mc.get(i) if i != last else None
        verdict = checker(view) if checker is not None else None
        if verdict is False:
            checked_wrong = True
            labels.append(StepLabel(view, False, soft, "checker"))
        elif verdict is True and i != last and not checked_wrong:
            labels.append(StepLabel(view, True, soft, "checker"))
        elif soft is not None:
            labels.append(StepLabel(view, soft > 0, soft, "mc"))
        else:
            labels.append(StepLabel(view, outcome, None, "outcome"))
    return tuple(labels)


# --------------------------------------------------------------------------------------------
# the batch
# --------------------------------------------------------------------------------------------


@dataclass
class _Solution:
    problem: int
    index: int
    node: Node
    # step index -> (number of the solution's token ids that end it, the text they decode to)
    boundaries: dict[int, tuple[int, str]] = field(default_factory=dict)
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0


def _closed_views(node: Node, delimiter: str) -> tuple[str, ...]:
    """The steps of ``node`` that are complete (an open tail is not yet a step)."""
    return segment_steps(node.text, delimiter, node.open_tail)[1]


def _generate_solutions(
    problems: Sequence[LabelProblem],
    engine: PolicyEngine,
    answers: AnswerSpec,
    settings: LabelSettings,
) -> list[_Solution]:
    config = settings.search_config()
    solutions = [
        _Solution(p, j, Node(lineage=(j,), group=j))
        for p in range(len(problems))
        for j in range(settings.samples)
    ]
    search_problems = [_SearchProblem(pr.uid, pr.text, pr.prompt_ids) for pr in problems]
    for round_ in range(settings.num_iterations):
        open_ = [s for s in solutions if s.node.active]
        if not open_:
            break
        final = round_ == settings.num_iterations - 1
        # Round 0: the samples of a problem are one request for n of them (one prefill); later
        # rounds continue each solution on its own.
        groups = (
            [[s for s in open_ if s.problem == p] for p in range(len(problems))]
            if round_ == 0
            else [[s] for s in open_]
        )
        requests = [
            step_request(
                search_problems[group[0].problem],
                group[0].node.token_ids,
                config,
                n=len(group),
                seed=derive_seed(
                    settings.seed,
                    problems[group[0].problem].uid,
                    "label",
                    None if round_ == 0 else group[0].index,
                    round_,
                ),
                final=final,
            )
            for group in groups
        ]
        outputs = engine.generate(requests)
        if len(outputs) != len(requests):
            raise RuntimeError(f"engine returned {len(outputs)} outputs for {len(requests)}")
        for group, output in zip(groups, outputs, strict=True):
            for s, completion in zip(group, output.completions, strict=True):
                before = len(_closed_views(s.node, settings.step_delimiter))
                s.node = extend(s.node, completion, index=0, config=config, answers=answers)
                after = len(_closed_views(s.node, settings.step_delimiter))
                if s.node.active:
                    for step in range(before, after):
                        s.boundaries[step] = (len(s.node.token_ids), s.node.text)
            # the prompt was queried once per sample; its cost is shared evenly
            for k, s in enumerate(group):
                share = output.prompt_tokens // len(group)
                cached = (output.cached_prompt_tokens or 0) // len(group)
                extra = k < output.prompt_tokens % len(group)
                s.prompt_tokens += share + extra
                s.cached_prompt_tokens += cached + (
                    k < (output.cached_prompt_tokens or 0) % len(group)
                )
    return solutions


def cut_at_final_step(text: str, answers: AnswerSpec, delimiter: str) -> str | None:
    """``text`` up to the end of its first final-answer step (how a tree search ends it), or
    None when no step is final."""
    raws, views = segment_steps(text, delimiter)
    kept = ""
    for raw, view in zip(raws, views, strict=True):
        kept += raw
        if answers.is_final_step(view):
            return kept
    return None


def _whole_solutions(
    problems: Sequence[LabelProblem],
    engine: PolicyEngine,
    answers: AnswerSpec,
    settings: LabelSettings,
) -> list[_Solution]:
    """Without rollouts no step boundary is needed: each problem's ``samples`` solutions are one
    request generated to the end (about half the engine work of step-by-step rounds, which
    re-prefill each prompt's last partial KV block every round), then ended at their first
    final-answer step as a search ends them (the steps are the same text segments)."""
    requests = [
        GenerationRequest(
            prompt_ids=problem.prompt_ids,
            params=SamplingParams(
                n=settings.samples,
                temperature=settings.temperature,
                top_p=settings.top_p,
                max_tokens=settings.max_tokens,
                seed=derive_seed(settings.seed, problem.uid, "label-whole"),
            ),
        )
        for problem in problems
    ]
    outputs = engine.generate(requests)
    if len(outputs) != len(requests):
        raise RuntimeError(f"engine returned {len(outputs)} outputs for {len(requests)}")
    solutions = []
    for p, output in enumerate(outputs):
        for j, completion in enumerate(output.completions):
            text = completion.text
            cut = cut_at_final_step(text, answers, settings.step_delimiter)
            reason = completion.finish_reason
            node = Node(
                lineage=(j,),
                group=j,
                token_ids=tuple(completion.token_ids),
                text=text if cut is None else cut,
                finish_reason=FinishReason.STEP if cut is not None else reason,
                finished=cut is not None or reason is FinishReason.EOS,
                truncated=cut is None and reason is FinishReason.LENGTH,
            )
            share, rest = divmod(output.prompt_tokens, len(output.completions))
            cached, cached_rest = divmod(output.cached_prompt_tokens or 0, len(output.completions))
            solutions.append(
                _Solution(
                    p,
                    j,
                    node,
                    prompt_tokens=share + (j < rest),
                    cached_prompt_tokens=cached + (j < cached_rest),
                )
            )
    return solutions


def _ended(s: _Solution) -> str:
    node = s.node
    if node.truncated:
        return "length"
    if node.finished:
        return "eos" if node.finish_reason is FinishReason.EOS else "answer"
    return "cap"


def label_problems(
    problems: Sequence[LabelProblem],
    engine: PolicyEngine,
    answers: AnswerSpec,
    settings: LabelSettings,
    checkers: Mapping[str, StepChecker] | None = None,
) -> list[ProblemLabels]:
    """Sample, roll out and label every problem (see the module docstring); one result each, in
    order. ``checkers`` maps a problem uid to its exact step checker (optional)."""
    delimiter = settings.step_delimiter
    if settings.rollouts:
        solutions = _generate_solutions(problems, engine, answers, settings)
    else:
        solutions = _whole_solutions(problems, engine, answers, settings)

    # Rollouts: one request of m samples per exact step boundary (never the last step).
    rollout_keys: list[tuple[int, int]] = []  # (solution position, step index)
    requests: list[GenerationRequest] = []
    if settings.rollouts:
        for pos, s in enumerate(solutions):
            views = segment_steps(s.node.text, delimiter)[1]
            for step, (boundary, _) in sorted(s.boundaries.items()):
                remaining = settings.max_tokens - boundary
                if step >= len(views) - 1 or remaining < 1:
                    continue
                problem = problems[s.problem]
                rollout_keys.append((pos, step))
                requests.append(
                    GenerationRequest(
                        prompt_ids=problem.prompt_ids + s.node.token_ids[:boundary],
                        params=SamplingParams(
                            n=settings.rollouts,
                            temperature=settings.temperature,
                            top_p=settings.top_p,
                            max_tokens=remaining,
                            seed=derive_seed(
                                settings.seed, problem.uid, "label-rollout", s.index, step
                            ),
                        ),
                    )
                )
    outputs = engine.generate(requests) if requests else []
    if len(outputs) != len(requests):
        raise RuntimeError(f"engine returned {len(outputs)} outputs for {len(requests)}")

    mc: dict[int, dict[int, float]] = {}
    rollout_cost: dict[int, list[int]] = {}
    for (pos, step), output in zip(rollout_keys, outputs, strict=True):
        s = solutions[pos]
        problem = problems[s.problem]
        prefix_text = s.boundaries[step][1]
        hits = sum(
            reaches(rollout_answer(prefix_text, c, answers, delimiter), problem.gold, answers)
            for c in output.completions
        )
        mc.setdefault(pos, {})[step] = hits / len(output.completions)
        cost = rollout_cost.setdefault(s.problem, [0, 0, 0])
        cost[0] += sum(len(c.token_ids) for c in output.completions)
        cost[1] += output.prompt_tokens
        cost[2] += output.cached_prompt_tokens or 0

    results = []
    for p, problem in enumerate(problems):
        mine = [(pos, s) for pos, s in enumerate(solutions) if s.problem == p]
        checker = (checkers or {}).get(problem.uid)
        labelled = []
        for pos, s in mine:
            views = segment_steps(s.node.text, delimiter)[1]
            answer = answers.extract(s.node.text) if s.node.text.strip() else None
            correct = s.node.finished and reaches(answer, problem.gold, answers)
            labelled.append(
                LabelledSolution(
                    index=s.index,
                    steps=combine_labels(
                        views, outcome=correct, mc=mc.get(pos, {}), checker=checker
                    ),
                    answer=answer,
                    correct=correct,
                    ended=_ended(s),
                    tokens=len(s.node.token_ids),
                )
            )
        r_tokens, r_prompt, r_cached = rollout_cost.get(p, [0, 0, 0])
        results.append(
            ProblemLabels(
                uid=problem.uid,
                problem=problem.text,
                gold=problem.gold,
                solutions=tuple(labelled),
                cost=LabelCost(
                    solution_tokens=sum(len(s.node.token_ids) for _, s in mine),
                    solution_prompt_tokens=sum(s.prompt_tokens for _, s in mine),
                    solution_cached_prompt_tokens=sum(s.cached_prompt_tokens for _, s in mine),
                    rollout_tokens=r_tokens,
                    rollout_prompt_tokens=r_prompt,
                    rollout_cached_prompt_tokens=r_cached,
                ),
            )
        )
    return results

"""The non-math answer specs (``tts_eval.grader.simple``), the ``answer=`` setting, and the local
GSM8K-style task (``tests/data/gsm8k_local``) graded with ``NumberAnswerSpec``."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import FakePRM, ScriptedEngine, problem

from tts_eval.grader import (
    MathAnswerSpec,
    NumberAnswerSpec,
    RegexAnswerSpec,
    answer_spec,
    check_answer_setting,
)
from tts_eval.search import AnswerGrouper, SearchConfig, run_search
from tts_eval.types import AnswerSpec, FinishReason

ROOT = Path(__file__).resolve().parents[1]
TASK_DIR = ROOT / "tests" / "data" / "gsm8k_local"
ACCEPTED = "accepted: math, number, regex:<pattern with one group>"

NUMBER = NumberAnswerSpec()

# --------------------------------------------------------------------------------------------
# NumberAnswerSpec
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("He has 3 apples, then 5 more: 8 apples.", "8"),
        ("Total: 1,234 dollars", "1234"),
        ("7,425,000 people", "7425000"),
        ("It costs $1,234.50 in all", "1234.50"),
        ("The price is $12.", "12"),
        ("It fell to -5 degrees", "-5"),
        ("she owes -$7", "-7"),
        ("she owes $-7", "-7"),
        ("a \u22123 change", "-3"),  # Unicode minus
        ("10-20 minutes", "20"),  # a range, not -20
        ("5 - 3 = 2", "2"),
        ("x = .5", "0.5"),
        ("3/4 of the cake", "3/4"),
        (r"so $x = \frac{3}{4}$", "3/4"),
        (r"so $x = -\dfrac{1}{2}$", "-1/2"),
        (r"\tfrac{-1}{2}", "-1/2"),
        ("1,2,3", "3"),  # a list, not a thousands grouping
        ("Step 1: 6 * 7 = 42\n#### 42", "42"),
        ("first 100, and finally 7.", "7"),
        ("version v2 of H2O", None),  # digits glued to letters are not numbers
        ("no digits here", None),
        ("", None),
    ],
)
def test_number_extract_takes_the_last_number(text, expected):
    assert NUMBER.extract(text) == expected


@pytest.mark.parametrize(
    ("answer", "key"),
    [
        ("1,234", "1234"),
        ("1234", "1234"),
        (" 1000.0 ", "1000"),
        ("2.50", "2.5"),
        ("-0", "0"),
        ("-0.0", "0"),
        ("0.050", "0.05"),
        ("3/4", "0.75"),
        (r"\frac{3}{4}", "0.75"),
        ("0.75", "0.75"),
        ("6/8", "0.75"),
        ("1/3", "1/3"),
        ("-2/6", "-1/3"),
        ("$5", "5"),
        ("-$1,000.50", "-1000.5"),
        ("12345678901234567890.125", "12345678901234567890.125"),
        ("abc", "abc"),  # not a number: the stripped text
        ("3/0", "3/0"),  # zero denominator: not a number
    ],
)
def test_number_canonical_keys(answer, key):
    assert NUMBER.canonical(answer) == key


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("1,000", "1000", True),
        ("1000", "1000.0", True),
        ("2.50", "2.5", True),
        ("3/4", "0.75", True),
        (r"\frac{1}{2}", "0.5", True),
        ("-0", "0", True),
        ("1/3", "2/6", True),
        ("0.3333333333", "1/3", True),  # decimal vs rational: relative tolerance 1e-9
        ("0.333", "1/3", False),
        ("1000000000.1", "1000000000", True),  # 1e-10 relative
        ("1000000001", "1000000000", False),  # integers compare exactly
        ("1/1000000001", "1/1000000000", False),  # fractions compare exactly
        ("5.001", "5", False),
        ("-5", "5", False),
        ("1,000", "100", False),
        ("abc", "abc", True),  # non-numbers: stripped string equality
        ("abc", "abd", False),
        ("5", "five", False),
    ],
)
def test_number_equivalence(a, b, equal):
    assert NUMBER.equivalent(a, b) is equal
    assert NUMBER.equivalent(b, a) is equal
    if NUMBER.canonical(a) == NUMBER.canonical(b):  # equal keys imply equivalent answers
        assert equal


def test_number_rel_tol_is_configurable_and_validated():
    assert NumberAnswerSpec(rel_tol=1e-3).equivalent("0.333", "1/3")
    assert not NumberAnswerSpec(rel_tol=0).equivalent("0.3333333333", "1/3")
    for bad in (-1.0, float("nan"), "1e-9", True):
        with pytest.raises(ValueError, match="rel_tol must be a finite number >= 0"):
            NumberAnswerSpec(rel_tol=bad)


@pytest.mark.parametrize(
    ("step", "final"),
    [
        ("#### 42", True),
        ("So the total is 6 * 7 = 42.\n#### 1,000", True),
        ("The answer is 18.", True),
        ("The final answer is: $1,234", True),
        ("the ANSWER IS -3", True),
        (r"The answer is \boxed{5}", True),
        ("The answer is **7**", True),
        ("He has 42 apples.", False),
        ("The answer is the number of apples", False),
        ("#### ", False),
        ("Answer: 42", False),  # only '####' and 'answer is' state a final answer
        ("", False),
    ],
)
def test_number_is_final_step(step, final):
    assert NUMBER.is_final_step(step) is final


# --------------------------------------------------------------------------------------------
# RegexAnswerSpec
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        (r"answer: (\w+)", "answer: A then answer: B", "B"),  # the last match
        (r"answer: (\w+)", "no final answer here", None),
        (r"\(([A-D])\)", "(A) looks wrong, (C) is right", "C"),
        (r"Answer:(.*)", "Answer:   yes  ", "yes"),  # group stripped
        (r"Answer:(.*)", "Answer: 1\nAnswer:   ", None),  # last match's group is blank
        (r"(?:x=(\d+)|y=(\d+))", "x=1 then y=2", None),  # group 1 not in the last match
        (r"(?P<ans>[A-D])\.", "B. then D.", "D"),  # named group = group 1
        (r"(?i)final: (\w+) (\w+)", "FINAL: one two", "one"),  # first group of several
    ],
)
def test_regex_extract_first_group_of_last_match(pattern, text, expected):
    assert RegexAnswerSpec(pattern).extract(text) == expected


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("B", "B", True),
        (" B\n", "B", True),
        ("B", "b", False),
        ("1000", "1,000", False),  # exact strings, no numeric equivalence
    ],
)
def test_regex_canonical_and_equivalence_are_exact_strings(a, b, equal):
    spec = RegexAnswerSpec(r"(\w+)")
    assert spec.equivalent(a, b) is equal
    assert (spec.canonical(a) == spec.canonical(b)) is equal
    assert spec.canonical(" B\n") == "B"


@pytest.mark.parametrize(
    ("step", "final"),
    [("so the answer: C", True), ("Answer: C.", False), ("answer: ", False)],
)
def test_regex_is_final_step_when_the_pattern_matches(step, final):
    assert RegexAnswerSpec(r"answer: ([A-D])").is_final_step(step) is final


def test_specs_are_frozen_and_hashable():
    spec = RegexAnswerSpec(r"(\d+)")
    with pytest.raises(AttributeError):
        spec.pattern = "x"  # type: ignore[misc]
    assert spec == RegexAnswerSpec(r"(\d+)") and hash(spec) == hash(RegexAnswerSpec(r"(\d+)"))
    assert spec != RegexAnswerSpec(r"(\w+)")
    with pytest.raises(AttributeError):
        NUMBER.rel_tol = 0.5  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# answer_spec / check_answer_setting
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "cls"),
    [
        ("math", MathAnswerSpec),
        ("number", NumberAnswerSpec),
        (r"regex:#### (\d+)", RegexAnswerSpec),
        ("regex:answer is ([A-D])", RegexAnswerSpec),
    ],
)
def test_answer_spec_maps_settings_and_conforms_to_the_protocol(setting, cls):
    spec = answer_spec(setting)
    assert type(spec) is cls
    assert isinstance(spec, AnswerSpec)
    check_answer_setting(setting)  # no error


def test_regex_setting_keeps_the_whole_pattern():
    spec = answer_spec("regex:a:(b) c")
    assert spec.pattern == "a:(b) c"
    assert spec.extract("a:b c") == "b"


@pytest.mark.parametrize(
    ("setting", "reason"),
    [
        ("regex:(", "does not compile: missing ), unterminated subpattern at position 0"),
        (r"regex:\d+", "the pattern has no capture group"),
        ("regex:(?:x)", "the pattern has no capture group"),
        ("regex:", "empty pattern"),
        ("regex:a\n(b", "does not compile"),  # newline in the pattern: still one line
        ("numbers", "unknown answer format"),
        ("Math", "unknown answer format"),
        ("", "empty setting"),
    ],
)
def test_bad_settings_are_one_line_errors(setting, reason):
    for check in (answer_spec, check_answer_setting):
        with pytest.raises(ValueError) as info:
            check(setting)
        message = str(info.value)
        assert "\n" not in message
        shown = setting.replace("\n", "\\n")
        assert message.startswith(f"model_args answer={shown} is invalid; {ACCEPTED} (")
        assert message.endswith(")")
        assert reason in message


def test_regex_spec_constructed_directly_validates_too():
    with pytest.raises(ValueError, match=r"^model_args answer=regex:\[a-z\]\+ is invalid; "):
        RegexAnswerSpec("[a-z]+")


def test_non_string_setting_is_rejected():
    with pytest.raises(ValueError, match="expected a string"):
        answer_spec(None)  # type: ignore[arg-type]


def test_grader_imports_only_types_and_grader():
    allowed = ("tts_eval.types", "tts_eval.grader")
    for path in sorted((ROOT / "tts_eval" / "grader").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.startswith("tts_eval"):
                    assert name.startswith(allowed), f"{path.name} imports {name}"
    code = (
        "import sys, tts_eval.grader.simple\n"
        "print(sorted(m for m in sys.modules if m.startswith('tts_eval.')"
        " and not m.startswith(('tts_eval.grader', 'tts_eval.types', 'tts_eval._lm_eval_hook'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------
# The real search with NumberAnswerSpec
# --------------------------------------------------------------------------------------------

# "999" appears twice as the same string; the three spellings of 1000 are all different strings.
VOTES = {
    "": [
        "Each box has 333 apples, 3 boxes.\n\n#### 999<eos>",
        "I count 999 apples.\n\n#### 999<eos>",
        "10 boxes of 100 apples.\n\n#### 1,000<eos>",
        "1000 apples.\n\n#### 1000<eos>",
        "That is 1000.0 apples.\n\n#### 1000.0<eos>",
    ]
}


def test_majority_groups_number_spellings_and_they_win():
    config = SearchConfig(strategy="majority", n=5, max_tokens=100)
    (result,) = run_search(config, [problem("P")], ScriptedEngine(VOTES), None, NUMBER)
    answers = [c.answer for c in result.candidates]
    assert answers == ["999", "999", "1000", "1000", "1000.0"]
    assert all(c.finished for c in result.candidates)
    assert result.selected == 2  # first member of the 1000 group
    assert result.candidates[result.selected].answer == "1000"
    assert "#### 1,000" in result.selected_text
    assert AnswerGrouper(NUMBER).group(answers) == [0, 0, 1, 1, 1]


def test_majority_with_exact_strings_lets_the_repeated_string_win():
    """The control: grouping by exact strings, the three 1000s split and "999" wins."""
    spec = RegexAnswerSpec(r"#### (\S+)")
    config = SearchConfig(strategy="majority", n=5, max_tokens=100)
    (result,) = run_search(config, [problem("P")], ScriptedEngine(VOTES), None, spec)
    assert [c.answer for c in result.candidates] == ["999", "999", "1,000", "1000", "1000.0"]
    assert result.candidates[result.selected].answer == "999"


def test_step_search_finishes_on_a_gsm8k_final_step():
    """A STEP stating ``#### <number>`` finishes the solution (is_final_step inside the search).

    Score tags come first in each step so that the last number of a solution is its answer.
    """
    script = {
        "": ["[0.9] Work\n\n", "[0.5] Other\n\n", "[0.1] a\n\n", "[0.1] b\n\n"],
        "[0.9] Work\n\n": ["[0.8] #### 1,000\n\n", "[0.1] more\n\n"],
        "[0.5] Other\n\n": ["[0.3] #### 5\n\n", "[0.1] more\n\n"],
        "[0.9] Work\n\n[0.1] more\n\n": ["[0.05] The answer is 1000.0<eos>"],
        "[0.5] Other\n\n[0.1] more\n\n": ["[0.05] #### 5<eos>"],
    }
    config = SearchConfig(strategy="beam_search", n=4, beam_width=2, num_iterations=3)
    (result,) = run_search(config, [problem("P")], ScriptedEngine(script), FakePRM(), NUMBER)
    got = [(c.text, c.finish_reason, c.finished, c.answer) for c in result.candidates]
    # the "####" steps ended their solutions at a step boundary, without EOS (ranked first)
    assert got[:2] == [
        ("[0.9] Work\n\n[0.8] #### 1,000\n\n", FinishReason.STEP, True, "1000"),
        ("[0.5] Other\n\n[0.3] #### 5\n\n", FinishReason.STEP, True, "5"),
    ]
    # the "more" steps stated no answer, so those solutions went on (to EOS)
    assert all(reason is FinishReason.EOS for _, reason, _, _ in got[2:])
    assert all("more" in text for text, *_ in got[2:])
    # weighted vote: 1000 (0.8 + 0.05 + 0.05, "1000" ~ "1000.0") beats 5 (0.3)
    assert result.candidates[result.selected].answer == "1000"


# --------------------------------------------------------------------------------------------
# The local GSM8K-style task
# --------------------------------------------------------------------------------------------


def test_local_task_data_is_gsm8k_style():
    rows = [json.loads(line) for line in (TASK_DIR / "test.jsonl").read_text().splitlines()]
    assert len(rows) >= 5
    for row in rows:
        assert set(row) == {"question", "answer"}
        gold = row["answer"].rsplit("####", 1)[1].strip()
        assert NUMBER.extract(gold) is not None
        # the worked solution's last number is the gold answer
        assert NUMBER.equivalent(NUMBER.extract(row["answer"]), gold)


@pytest.fixture(scope="module")
def local_task():
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASK_DIR))
    assert "gsm8k_local" in manager.all_tasks
    return manager, manager.load(["gsm8k_local"])["tasks"]["gsm8k_local"]


def test_local_task_loads_docs_prompt_and_target(local_task):
    _, task = local_task
    docs = list(task.test_docs())
    assert len(docs) == 6
    assert task.doc_to_text(docs[0]) == f"Question: {docs[0]['question']}\nAnswer:"
    assert task.fewshot_context(docs[0], num_fewshot=0) == task.doc_to_text(docs[0])
    assert [task.doc_to_target(d) for d in docs] == ["8", "48", "13", "1,000", "9", "2.5"]
    assert task.config.output_type == "generate_until"
    assert task.config.generation_kwargs["until"] == ["Question:"]


@pytest.mark.parametrize(
    ("index", "response", "score"),
    [
        (3, " It makes 250 * 4 = 1000 toys.\n#### 1000", 1.0),
        (3, " 1,000.0 toys", 1.0),
        (3, " It makes 250 * 4 = 1000 toys, minus 1 broken: 999", 0.0),
        (5, " Each piece is 10/4 = 5/2 meters", 1.0),
        (5, " Each piece is 2.50 meters.", 1.0),
        (5, " Each piece is 2 meters.", 0.0),
        (0, " I don't know.", 0.0),
    ],
)
def test_local_task_process_results(local_task, index, response, score):
    _, task = local_task
    doc = list(task.test_docs())[index]
    assert task.process_results(doc, [response]) == {"exact_match": score}


def test_local_task_evaluates_end_to_end_from_another_cwd(local_task, tmp_path, monkeypatch):
    """simple_evaluate over a scripted LM, run from an unrelated CWD: 4 of 6 answers right."""
    import lm_eval
    from lm_eval.api.model import LM

    right = {"Tom": " 3 + 5 = 8", "book": " $48.00", "toys": " 1,000", "rope": " 5/2"}
    prompts = []

    class Scripted(LM):
        def generate_until(self, requests):
            prompts.extend(r.args for r in requests)
            out = []
            for r in requests:
                hit = [text for word, text in right.items() if word in r.args[0]]
                out.append(hit[0] if hit else " 0")
            return out

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

    manager, _ = local_task
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    results = lm_eval.simple_evaluate(model=Scripted(), tasks=["gsm8k_local"], task_manager=manager)
    metrics = results["results"]["gsm8k_local"]
    assert metrics["exact_match,none"] == pytest.approx(4 / 6)
    assert len(prompts) == 6
    assert all(args[1]["until"] == ["Question:"] for args in prompts)

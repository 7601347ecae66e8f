"""Pick the final answer out of a whole model output.

Order of preference (the first that finds something wins):

1. ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed 5``: the last box, joined with the boxes right
   before it when only a connector separates them ("and", "or", ",", ";", ``\\quad``), so
   ``\\boxed{1} and \\boxed{-2}`` gives ``"1, -2"``. A "final answer is X" phrase written after the
   last box overrides it (the model restated its answer); a plain "answer is" does not.
2. An answer phrase, last occurrence: "final answer is X", "Final Answer: X", "answer is X",
   "answer: X". Within the phrase's sentence: its math (``$...$`` etc.) if any, else the part after
   the last " is ", else the last number.
3. Fallback: whichever ends later in the text, the last math span (``$...$``, ``$$...$$``,
   ``\\(...\\)``, ``\\[...\\]``; inline ``$...$`` may not span a newline) or the last standalone
   number (not glued to letters before it; "2/3", "1,000.99", "28%" are one number).

Returns None when nothing is found. What this module does not do: decide equivalence or normalise
beyond trimming (``equiv`` does that). Never raises; linear-time regexes only.
"""

from __future__ import annotations

import re

from tts_eval.grader.latex import find_boxes

_MATH_RE = re.compile(
    r"\$\$(?P<a>.+?)\$\$|\\\[(?P<b>.+?)\\\]|\\\((?P<c>.+?)\\\)|(?<!\\)\$(?P<d>(?:\\\$|[^$\n])+?)(?<!\\)\$",
    re.DOTALL,
)
_NUMBER_RE = re.compile(
    r"(?<![A-Za-z0-9_.\\])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:[.,]\d+)?(?:\s*/\s*\d+)?(?:\s*%)?(?![0-9])"
    r"|(?<![A-Za-z0-9_.\\])-?\.\d+(?![0-9])"
)
_PHRASE_RE = re.compile(
    r"final\s+answer\s*(?:is|:)|answer\s+is|answer\s*:|(?:result|solution)\s+is\s*:?", re.IGNORECASE
)
_PHRASE_END_RE = re.compile(r"I hope|\n\s*\n|<\|", re.IGNORECASE)
_CONNECTOR_RE = re.compile(r"^(?:[,;&]|and|or|\\quad|\\qquad|\\text\{[^{}]*\}|\\[,;! ]|\s)*$")
_CONNECTOR_WORD_RE = re.compile(r"(?:^|[\s,;}])(?:and|or)(?:$|[\s,;{])|[,;]", re.IGNORECASE)

MAX_GAP_CHARS = 40


def _is_connector_gap(gap: str) -> bool:
    """Whether the text between two answer spans joins them into one list answer."""
    g = re.sub(r"\\[()]|\$", " ", gap)
    if "\n\n" in g or len(g.strip()) > MAX_GAP_CHARS:
        return False
    if not g.strip() or _CONNECTOR_RE.match(g.strip()):
        return True
    return _CONNECTOR_WORD_RE.search(g) is not None and not re.search(r"[.!?]\s", g)


def _chain_back(spans: list[tuple[int, int, str]], text: str) -> str:
    """The last span's content, joined with earlier ones separated from it only by connectors."""
    chosen = [spans[-1]]
    for prev in reversed(spans[:-1]):
        if not _is_connector_gap(text[prev[1] : chosen[-1][0]]):
            break
        chosen.append(prev)
    return ", ".join(c[2].strip() for c in reversed(chosen))


def _math_spans(text: str) -> list[tuple[int, int, str]]:
    out = []
    for m in _MATH_RE.finditer(text):
        content = next(g for g in m.group("a", "b", "c", "d") if g is not None)
        if content.strip():
            out.append((m.start(), m.end(), content))
    return out


def _last_number(text: str) -> tuple[int, str] | None:
    last = None
    for m in _NUMBER_RE.finditer(text):
        last = m
    return None if last is None else (last.end(), last.group(0))


def _from_phrase(segment: str) -> str | None:
    """The answer inside the sentence that follows an answer phrase."""
    seg = segment.strip()
    if " is " in seg:  # "Final Answer: The volume of $V$ is 120."
        seg = seg.rsplit(" is ", 1)[1]
    maths = _math_spans(seg)
    if maths:
        return _chain_back(maths, seg)
    seg = seg.strip().strip('"').strip()
    seg = re.split(r"\.\s|\.$", seg, maxsplit=1)[0].strip()
    if not seg:
        return None
    if len(seg) <= 40 and len(re.findall(r"[A-Za-z]{3,}", seg)) <= 1:
        return seg
    num = _last_number(seg)
    return None if num is None else num[1]


def extract_answer(text: str) -> str | None:
    """The final answer of a model output (see the module docstring), or None."""
    if not isinstance(text, str) or not text.strip():
        return None
    boxes = find_boxes(text)
    phrase = None
    for m in _PHRASE_RE.finditer(text):
        phrase = m
    strong = phrase is not None and phrase.group(0).lower().startswith("final")
    if boxes and (not strong or phrase.start() < boxes[-1].start):
        ans = _chain_back([(b.start, b.end, b.content) for b in boxes], text)
        if ans.strip():
            return ans.strip()
    if phrase is not None:
        rest = text[phrase.end() :]
        end = _PHRASE_END_RE.search(rest)
        ans = _from_phrase(rest[: end.start()] if end else rest)
        if ans:
            return ans
        if boxes:
            return _chain_back([(b.start, b.end, b.content) for b in boxes], text).strip() or None
    maths = _math_spans(text)
    num = _last_number(text)
    if maths and (num is None or maths[-1][1] >= num[0]):
        return _chain_back(maths, text).strip() or None
    if num is not None:
        return num[1].strip()
    return None

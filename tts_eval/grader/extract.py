"""Pick the final answer out of a whole model output.

Order of preference (the first that finds something wins):

1. ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed 5``: the last box, joined with the boxes right
   before it when only a connector separates them ("and", "or", ",", ";", ``\\quad``), so
   ``\\boxed{1} and \\boxed{-2}`` gives ``"1, -2"``. A "final answer is X" phrase written after the
   last box overrides it (the model restated its answer); a plain "answer is" does not.
2. An answer phrase, last occurrence: "final answer is X", "Final Answer: X", "answer is X",
   "answer: X". Within the phrase's sentence: its math (``$...$`` etc.) if any, else the part after
   the last " is ", else the last number.
3. Fallback: whichever ends last in the text (ties in this order): the last math span
   (``$...$``, ``$$...$$``, ``\\(...\\)``, ``\\[...\\]``; inline ``$...$`` may not span a newline),
   the last bare LaTeX expression (a space-separated, brace-balanced run outside delimiters with a
   command, a brace, ``^`` or ``_`` in it and no word in it - no run of three letters outside a
   command, no leading two: ``\\frac{1}{0}``, ``10^{10^{10}}``, not ``cm^2`` or ``<|im_end|>``), or
   the last standalone number ("2/3", "1,000.99", "28%", "1e5" are one number; a digit glued into
   a LaTeX construct - after ``{``, ``^``, ``_`` or before ``^``, ``_`` - is no standalone number,
   so ``\\frac{1}{0}`` never shrinks to ``0``).

The text is first cleaned with ``latex.clean_control`` (missed escapes such as backspace + ``oxed``
are repaired to ``\\boxed``; NUL and other control characters are dropped). Answers are never cut
short: a chain of boxes is returned whole however long (``equiv`` compares an answer longer than
``latex.MAX_ANSWER_CHARS`` as a plain string, so 100,000 copies of ``\\boxed{1}`` do not equal
``1``). Returns None when nothing is found. What this module does not do: decide equivalence or
normalise beyond trimming (``equiv`` does that). Never raises; linear time.
"""

from __future__ import annotations

import re

from tts_eval.grader.latex import clean_control, find_boxes

_MATH_RE = re.compile(
    r"\$\$(?P<a>.+?)\$\$|\\\[(?P<b>.+?)\\\]|\\\((?P<c>.+?)\\\)|(?<!\\)\$(?P<d>(?:\\\$|[^$\n])+?)(?<!\\)\$",
    re.DOTALL,
)
_NUMBER_RE = re.compile(
    r"(?<![A-Za-z0-9_.\\])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:[.,]\d+)?(?:[eE][+-]?\d+(?![0-9]))?"
    r"(?:\s*/\s*\d+)?(?:\s*%)?(?![0-9])"
    r"|(?<![A-Za-z0-9_.\\])-?\.\d+(?![0-9])"
)
_GLUED_AFTER_RE = re.compile(r"[\^_]|[eE][+-]?\d")
_TOKEN_RE = re.compile(r"\S+")
_LATEX_MARK_RE = re.compile(r"\\[A-Za-z]|[{}^_]")
_NOT_BARE_RE = re.compile(r"^[A-Za-z]{2}|\$|\\[()\[\]]|<\||\|>|(?<![A-Za-z\\])[A-Za-z]{3}")
_PHRASE_RE = re.compile(
    r"final\s+answer\s*(?:is\s*:?|:)|answer\s+is\s*:?|answer\s*:|(?:result|solution)\s+is\s*:?",
    re.IGNORECASE,
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


def _standalone(text: str, m: re.Match[str]) -> bool:
    """Whether a number match stands alone rather than inside a construct (``{1}``, ``x^2``)."""
    i = m.start()
    if i and text[i - 1] == "-":
        i -= 1
    if i and text[i - 1] in "{^_":
        return False
    return _GLUED_AFTER_RE.match(text, m.end()) is None


def _last_number(text: str) -> tuple[int, str] | None:
    last = None
    for m in _NUMBER_RE.finditer(text):
        if _standalone(text, m):
            last = m
    return None if last is None else (last.end(), last.group(0))


def _balance(token: str) -> int:
    return token.count("{") - token.count("}")


def _last_bare_latex(text: str) -> tuple[int, str] | None:
    """The last bare LaTeX expression (module docstring) and where it ends, or None.

    Tokens are runs of non-space text; a token with more closing than opening braces is joined
    with the tokens before it until it balances. Each token is visited once (linear time)."""
    toks = list(_TOKEN_RE.finditer(text))
    i = len(toks) - 1
    while i >= 0:
        j, depth = i, _balance(toks[i].group())
        while depth < 0 and j > 0:
            j -= 1
            depth += _balance(toks[j].group())
        start, end = toks[j].start(), toks[i].end()
        cand = text[start:end].rstrip(".,;:!?")
        if _LATEX_MARK_RE.search(cand) and not _NOT_BARE_RE.search(cand) and depth == 0:
            return start + len(cand), cand
        i = j - 1
    return None


def _last_atom(text: str) -> tuple[int, str] | None:
    """The later of the last bare LaTeX expression and the last standalone number."""
    num, bare = _last_number(text), _last_bare_latex(text)
    if bare is not None and (num is None or bare[0] >= num[0]):
        return bare
    return num


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
    atom = _last_atom(seg)
    return None if atom is None else atom[1]


def extract_answer(text: str) -> str | None:
    """The final answer of a model output (see the module docstring), or None."""
    if not isinstance(text, str):
        return None
    text = clean_control(text)
    if not text.strip():
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
    atom = _last_atom(text)
    if maths and (atom is None or maths[-1][1] >= atom[0]):
        return _chain_back(maths, text).strip() or None
    if atom is not None:
        return atom[1].strip() or None
    return None

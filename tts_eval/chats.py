"""The chat messages of lm-eval's requests, kept beside them rather than parsed back.

``--model tts`` renders every prompt with the policy's chat template from the request's messages.
lm-eval hands a model a context string; how the messages are known:

- with ``--apply_chat_template``, lm-eval builds the chat and asks the model to render it
  (``TTSLM.apply_chat_template``), which keeps the messages (and the token ids) under the text;
- without it, :func:`keep_task_chats` has lm-eval's ``ConfigurableTask.fewshot_context`` also build
  the chat it would have built with a chat template (the task's description as the system turn,
  the problem as the user turn) and :func:`chat_of` finds it by the context string;
- a context neither knows (a request lm-eval replays from its request cache, few-shot or
  ``gen_prefix`` contexts, whose chats are not rebuilt: that would draw other few-shot examples)
  is read back by :func:`context_to_messages`: one user turn, unless it starts with math500's
  description (``tts_eval.prompts.SYSTEM_PROMPT``), which becomes the system turn again.

What this module does not do: render chats (the policy's tokenizer, ``tts_eval.engines.chat``) or
search.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from tts_eval.errors import DataError
from tts_eval.prompts import DESCRIPTION_SEPARATOR, SYSTEM_PROMPT

logger = logging.getLogger(__name__)

# Contexts of requests built by earlier versions (tag + JSON messages); still understood.
CHAT_TAG = "\x1etts-chat\x1e"
_PATCHED = "_tts_eval_keeps_chats"
_KEPT_LIMIT = 1 << 16  # contexts whose chats are kept (oldest forgotten first)
_KEPT: OrderedDict[str, list[dict[str, str]]] = OrderedDict()


def normalize_messages(
    messages: Sequence[Mapping[str, str]], system_prompt: str | None = None
) -> list[dict[str, str]]:
    """Copies of ``messages``, system turns right-stripped, ``system_prompt`` (model arg)
    replacing any system turn when given."""
    out = [dict(m) for m in messages]
    for m in out:
        if m["role"] == "system":
            m["content"] = m["content"].rstrip()
    if system_prompt is not None:
        out = [m for m in out if m["role"] != "system"]
        out.insert(0, {"role": "system", "content": system_prompt})
    return out


def context_to_messages(context: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    """Read chat messages back from a context whose chat is not known (see the module docstring).

    * A plain context is one user turn; when it starts with the math500 description (our
      ``SYSTEM_PROMPT``), that part becomes the system message again.
    * A context tagged with :data:`CHAT_TAG` (built by earlier versions) holds the JSON messages.

    ``system_prompt`` (model arg) replaces any system message when given.
    """
    if context.startswith(CHAT_TAG):
        messages = json.loads(context[len(CHAT_TAG) :])
    else:
        prefix = SYSTEM_PROMPT + DESCRIPTION_SEPARATOR
        if context.startswith(prefix):
            messages = [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": context[len(prefix) :]},
            ]
        else:
            messages = [{"role": "user", "content": context}]
    return normalize_messages(messages, system_prompt)


def problem_text(messages: Sequence[Mapping[str, str]]) -> str:
    """The problem as the PRM sees it: the last user turn."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
        raise DataError("a request has no user message to take the problem from")
    return users[-1]


def plain_chat_text(messages: Sequence[Mapping[str, str]]) -> str:
    """A readable rendering of a chat, for searchers whose policy tokenizer is not at hand."""
    turns = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
    return f"{turns}<|assistant|>\n"


def remember_chat(context: str, messages: Sequence[Mapping[str, str]]) -> None:
    """Keep the chat behind a context string (bounded; the oldest are forgotten first)."""
    _KEPT[context] = [dict(m) for m in messages]
    _KEPT.move_to_end(context)
    while len(_KEPT) > _KEPT_LIMIT:
        _KEPT.popitem(last=False)


def chat_of(context: str) -> list[dict[str, str]] | None:
    """The chat kept for ``context`` (copies), or None."""
    messages = _KEPT.get(context)
    return None if messages is None else [dict(m) for m in messages]


def keep_task_chats() -> None:
    """Make lm-eval's ``ConfigurableTask.fewshot_context`` keep, for each zero-shot plain context
    it builds, the chat it would build with a chat template (:func:`remember_chat`). Idempotent."""
    from lm_eval.api.task import ConfigurableTask

    original = ConfigurableTask.fewshot_context
    if getattr(original, _PATCHED, False):
        return

    @functools.wraps(original)
    def fewshot_context(self, doc, num_fewshot, *args, **kwargs):
        context = original(self, doc, num_fewshot, *args, **kwargs)
        names = (
            "system_instruction",
            "apply_chat_template",
            "fewshot_as_multiturn",
            "chat_template",
            "gen_prefix",
        )
        bound = dict(zip(names, args, strict=False))
        bound.update(kwargs)
        plain = not bound.get("apply_chat_template") and not bound.get("gen_prefix")
        if plain and num_fewshot == 0 and isinstance(context, str):
            seen: list[list[dict[str, str]]] = []

            def capture(messages, add_generation_prompt: bool = True) -> str:
                seen.append([dict(m) for m in messages])
                return context

            original(
                self,
                doc,
                0,
                system_instruction=bound.get("system_instruction"),
                apply_chat_template=True,
                fewshot_as_multiturn=False,
                chat_template=capture,
            )
            if seen:
                remember_chat(context, seen[0])
        return context

    setattr(fewshot_context, _PATCHED, True)
    ConfigurableTask.fewshot_context = fewshot_context

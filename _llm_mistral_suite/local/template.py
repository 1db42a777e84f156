"""Chat templates as text: the GGUF's own Jinja template, Mistral's system prompt placement, for prompts fed as text."""

from __future__ import annotations

import sys
from typing import Any

# Used when a GGUF fed as text carries no chat template: Mistral's v1 [INST] format ([INST] is plain text in
# such a vocabulary; Mistral instruct vocabularies, where it is a control token, go through prompt.py).
# The system prompt is placed by our code.
LOCAL_DEFAULT_TEMPLATE_V1 = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
_SYSTEM_PROBE, _USER_PROBE = "\u27e6system-probe\u27e7", "\u27e6user-probe\u27e7"


def arrange_local_messages(messages: list[dict[str, Any]], system_placement: str,
                           strip_assistant: bool = False) -> list[dict[str, Any]]:
    """Messages a Mistral chat template accepts: user/assistant alternating, the system prompt placed.

    ``system_placement``: "native" (the template handles a leading system message) or "first-user"
    (Mistral v1 tokenizer: prepended to the first user message). Consecutive messages of one role are
    joined; roles other than these are dropped.
    ``strip_assistant`` drops the leading space of replies for templates that add their own, so a
    replayed reply tokenizes as it was generated (and the KV cache prefix still matches).
    """
    system_texts: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role, content = message.get("role"), message.get("content")
        text = content if isinstance(content, str) else "".join(
            piece.get("text", "") for piece in content or () if isinstance(piece, dict)
        )
        if role == "system":
            if text:
                system_texts.append(text)
        elif role in ("user", "assistant"):
            if role == "assistant" and strip_assistant:
                text = text.lstrip()
            if turns and turns[-1]["role"] == role:
                turns[-1]["content"] += "\n\n" + text
            else:
                turns.append({"role": role, "content": text})
    system = "\n\n".join(system_texts)
    if not system:
        return turns
    if system_placement == "native":
        return [{"role": "system", "content": system}, *turns]
    users = [i for i, turn in enumerate(turns) if turn["role"] == "user"]
    if not users:
        return [{"role": "user", "content": system}, *turns]
    turns[users[0]] = {"role": "user", "content": system + "\n\n" + turns[users[0]]["content"]}
    return turns


class LocalChatFormatter:
    """The GGUF's Jinja chat template with Mistral's system prompt placement, for GGUFs whose prompts are
    rendered as text (v1 Mistral models, other families); used instead of llama-cpp-python's chat handlers,
    so its built-in "mistral-instruct" format (which drops system prompts) never applies. Keeps the last
    rendered prompt, and prints it when ``show_prompt`` is set.
    """

    def __init__(self, template: str | None, *, bos_token: str = "<s>", eos_token: str = "</s>",
                 eos_token_id: int | None = None) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.template_source = "gguf" if template else "default"
        self.jinja = Jinja2ChatFormatter(
            template=template or LOCAL_DEFAULT_TEMPLATE_V1, eos_token=eos_token, bos_token=bos_token,
            stop_token_ids=[eos_token_id] if eos_token_id is not None and eos_token_id >= 0 else None,
        )
        self.last_prompt: str | None = None
        self.show_prompt = False  # print each rendered prompt on stderr (``-o verbose 1``)
        self.strip_assistant = self._spaces_replies()
        # a template that places a system message itself does; otherwise mistral-common's v1 rule
        self.system_placement = "native" if template and self._handles_system() else "first-user"

    def _handles_system(self) -> bool:
        try:
            probe = self.jinja(messages=[{"role": "system", "content": _SYSTEM_PROBE},
                                         {"role": "user", "content": _USER_PROBE}]).prompt
        except Exception:  # raise_exception("Only user and assistant roles are supported!")
            return False
        return _SYSTEM_PROBE in probe and _USER_PROBE in probe

    def _spaces_replies(self) -> bool:
        """Whether the template puts whitespace before an assistant reply (as Mistral v3 templates do)."""
        try:
            probe = self.jinja(messages=[{"role": "user", "content": _USER_PROBE},
                                         {"role": "assistant", "content": _SYSTEM_PROBE},
                                         {"role": "user", "content": _USER_PROBE}]).prompt
        except Exception:
            return False
        at = probe.find(_SYSTEM_PROBE)
        return at > 0 and probe[at - 1].isspace()

    @classmethod
    def for_llama(cls, llama: Any) -> "LocalChatFormatter":
        eos_id, bos_id = llama.token_eos(), llama.token_bos()
        text = llama._model.token_get_text
        return cls(
            llama.metadata.get("tokenizer.chat_template"),
            bos_token=text(bos_id) if bos_id >= 0 else "",
            eos_token=text(eos_id) if eos_id >= 0 else "",
            eos_token_id=eos_id,
        )

    def render(self, messages: list[dict[str, Any]]) -> str:
        return self(messages=messages).prompt

    def render_raw(self, *, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        """The template applied to ``messages`` as they are (no system prompt placement), for probing it."""
        return self.jinja(messages=messages, tools=tools).prompt

    def __call__(self, *, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        arranged = arrange_local_messages(messages, self.system_placement, self.strip_assistant)
        result = self.jinja(messages=arranged, **kwargs)
        self.last_prompt = result.prompt
        if self.show_prompt:
            sys.stderr.write(f"--- prompt rendered with the {self.template_source} chat template ---\n"
                             f"{result.prompt}\n---\n")
        return result

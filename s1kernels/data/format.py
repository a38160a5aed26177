"""The s1 chat format and its loss mask.

A training sample is a chat: the user turn holds the question, the assistant turn is

    <|im_start|>think\\n  + "\\n".join(thinking) +  \\n<|im_start|>answer\\n  + "Answer: " + answer + <|im_end|>

The prompt (system + user turn, ending with `<|im_start|>assistant\\n`) comes from the
tokenizer's chat template when it has one, else from the Qwen ChatML format with Qwen2.5's
default system message. Only the assistant turn is trained.
"""
from __future__ import annotations

from typing import Sequence
from s1kernels import checks

THINK_START = "<|im_start|>think\n"
ANSWER_START = "<|im_start|>answer\n"
ANSWER_PREFIX = "Answer: "
FINAL_ANSWER = "Final Answer:"  # appended after a forced exit of thinking
END_OF_TURN = "<|im_end|>"
QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def prompt_text(question: str, tokenizer=None, system: str | None = None) -> str:
    """The prompt text for `question`: system + user turn, ending with `<|im_start|>assistant\\n`.

    Uses `tokenizer.chat_template` when the tokenizer has one (a system message is passed
    only when `system` is given, so the template's default applies otherwise); else Qwen
    ChatML with `system` or Qwen2.5's default system message.
    """
    if not isinstance(question, str):
        raise checks.argument_error("question", "str", type(question).__name__, TypeError)
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system is not None else []) + [
            {"role": "user", "content": question}
        ]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    sys_text = QWEN_DEFAULT_SYSTEM if system is None else system
    return (
        f"<|im_start|>system\n{sys_text}<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def assistant_text(thinking: Sequence[str] | str, answer: str) -> str:
    """The assistant turn of the s1 format (think block, answer block, end of turn)."""
    if isinstance(thinking, str):
        trace = thinking
    elif isinstance(thinking, (list, tuple)) and all(isinstance(t, str) for t in thinking):
        trace = "\n".join(thinking)
    else:
        raise checks.argument_error("thinking", "str or list[str]", type(thinking).__name__, TypeError)
    if not isinstance(answer, str):
        raise checks.argument_error("answer", "str", type(answer).__name__, TypeError)
    return THINK_START + trace + "\n" + ANSWER_START + ANSWER_PREFIX + answer + END_OF_TURN


def render_sample(tokenizer, question: str, thinking: Sequence[str] | str, answer: str,
                  system: str | None = None) -> tuple[list[int], list[bool]]:
    """Token ids of one s1 training chat and its loss mask (True on the assistant turn only).

    The prompt and the assistant turn are encoded separately and concatenated, so the mask
    boundary is exact (the assistant turn starts with a special token, so this equals
    encoding the whole text at once).
    """
    prompt_ids = tokenizer.encode(prompt_text(question, tokenizer, system))
    reply_ids = tokenizer.encode(assistant_text(thinking, answer))
    return prompt_ids + reply_ids, [False] * len(prompt_ids) + [True] * len(reply_ids)


def render_rows(tokenizer, rows, system: str | None = None, progress: bool = False) -> list[tuple[list[int], list[bool]]]:
    """`render_sample` over rows from `read_rows` ("thinking", "answer") or `make_rows` /
    s1K ("thinking_trajectories", "attempt"): the one place rows become training samples,
    each field found by the aliases of s1kernels.data.readers; `progress` shows a tqdm bar."""
    if progress:
        from tqdm import tqdm

        rows = tqdm(rows, desc="tokenizing", unit="row")
    from s1kernels.data.readers import ANSWER_KEYS, QUESTION_KEYS, THINKING_KEYS, field

    out = []
    for i, r in enumerate(rows):
        question, thinking, answer = field(r, QUESTION_KEYS), field(r, THINKING_KEYS), field(r, ANSWER_KEYS)
        if question is None or thinking is None or answer is None:
            raise checks.argument_error(f"rows[{i}]",
                                        f"a question ({'/'.join(QUESTION_KEYS)}), thinking "
                                        f"({'/'.join(THINKING_KEYS)}) and answer ({'/'.join(ANSWER_KEYS)})",
                                        f"keys {sorted(r)}")
        out.append(render_sample(tokenizer, question, thinking, str(answer), system=system))
    return out

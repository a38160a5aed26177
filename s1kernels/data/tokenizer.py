"""Tokenizer wrapper: a `tokenizers.Tokenizer` plus the folder's chat template.

`S1Tokenizer` loads any Hugging Face tokenizer folder (tokenizer.json +
tokenizer_config.json, the chat template in the config or in chat_template.jinja) without
`transformers`. `build_default_tokenizer()` makes the small word-level tokenizer of the
built-in synthetic task, so the default pipeline needs no download.
"""
from __future__ import annotations

import json
import os
from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from s1kernels import checks
from s1kernels.checks import read_json
from s1kernels.data.byte_level import BYTE_TO_CHAR

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
UNK = "<unk>"
SPECIAL_TOKENS = (IM_START, IM_END, ENDOFTEXT)

# ChatML without a default system turn: keeps the built-in task's sequences short.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Pieces: an optional space glued to one digit, a word, or one punctuation mark; any other
# whitespace character stands alone. Digits are always single tokens so arithmetic is
# per-digit, and every piece maps back to its exact text (exact round trip for known words).
_PIECE_PATTERN = r" ?\p{N}| ?\p{L}+| ?[^\s\p{L}\p{N}]|\s"

# Words of the built-in task and of the s1 format (budget forcing uses Wait / Final Answer:).
_DEFAULT_WORDS = (
    "system user assistant think answer Answer Final Wait Start at Result mod "
    "You are a helpful The is so steps step "
    "A B C D E F G H I J K L M N O P"
).split()
_DEFAULT_PUNCT = list("+-*=:.,?!()/")


def _default_vocab() -> list[str]:
    pieces: list[str] = []
    for d in "0123456789":
        pieces += [d, " " + d]
    for w in _DEFAULT_WORDS:
        pieces += [w, " " + w]
    for p in _DEFAULT_PUNCT:
        pieces += [p, " " + p]
    pieces += [" ", "\n", "\t"]
    # The vocabulary stores the byte-level form (space -> 'Ġ', newline -> 'Ċ') like GPT-2/Qwen.
    return [_to_byte_level(p) for p in pieces]


def _to_byte_level(text: str) -> str:
    return "".join(BYTE_TO_CHAR[b] for b in text.encode("utf-8"))


def build_default_tokenizer() -> "S1Tokenizer":
    """The small word-level tokenizer of the built-in synthetic task.

    Word-level vocabulary (~120 tokens): the ChatML specials `<|im_start|>`, `<|im_end|>`,
    `<|endoftext|>` (special, never split), `<unk>`, single digits, the task's words, the s1
    format words (think, answer, Answer, Final, Wait) and punctuation, each with and without
    a leading space. Text made only of these pieces round-trips exactly through
    encode/decode; any other word becomes `<unk>`.
    """
    vocab_list = list(SPECIAL_TOKENS) + [UNK] + _default_vocab()
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PIECE_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": DEFAULT_CHAT_TEMPLATE,
        "eos_token": IM_END,
        "pad_token": ENDOFTEXT,
        "unk_token": UNK,
        "bos_token": None,
        "model_max_length": 4096,
    }
    return S1Tokenizer(tok, config)


class S1Tokenizer:
    """A `tokenizers.Tokenizer` with the chat template and special ids the s1 recipe needs.

    Special tokens written in the text (e.g. `<|im_start|>`) encode as single tokens.
    `pad_id` is the folder's pad token when it names one, else `<|endoftext|>`; `eos_ids`
    holds the ids of `<|im_end|>` and `<|endoftext|>` (those present).
    """

    def __init__(self, tokenizer: Tokenizer, config: dict | None = None):
        if not isinstance(tokenizer, Tokenizer):
            raise checks.argument_error("tokenizer", "a tokenizers.Tokenizer", type(tokenizer).__name__, TypeError)
        self.tokenizer = tokenizer
        self.config = dict(config or {})
        self.chat_template: str | None = self.config.get("chat_template") or None
        if self.chat_template is not None and not isinstance(self.chat_template, str):
            raise checks.argument_error("chat_template", "a string", type(self.chat_template).__name__, TypeError)
        self.template_source = "the chat template"  # named in rendering errors; from_folder names the file
        self.im_start_id = self.token_to_id(IM_START)
        self.im_end_id = self.token_to_id(IM_END)
        self.eos_ids = [i for i in (self.im_end_id, self.token_to_id(ENDOFTEXT)) if i is not None]
        pad_tok = _token_text(self.config.get("pad_token"))
        pad_id = self.token_to_id(pad_tok) if pad_tok else None
        self.pad_id = pad_id if pad_id is not None else self.token_to_id(ENDOFTEXT)
        if self.pad_id is None:
            raise checks.argument_error("tokenizer", f"a pad token or {ENDOFTEXT!r} in the vocabulary",
                                            "a vocabulary with neither")

    # ---- loading / saving -------------------------------------------------------------
    @classmethod
    def from_folder(cls, path: str | os.PathLike) -> "S1Tokenizer":
        """Load tokenizer.json (+ tokenizer_config.json, chat_template.jinja) from a folder."""
        path = os.fspath(path)
        tj = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(tj):
            raise checks.argument_error("path", "a folder holding tokenizer.json", repr(path))
        try:
            tok = Tokenizer.from_file(tj)
        except Exception as e:  # the tokenizers library raises its own Exception type
            raise ValueError(f"path: {tj!r} is not a readable tokenizer.json ({e})") from None
        config: dict = {}
        source = None
        cfg_path = os.path.join(path, "tokenizer_config.json")
        if os.path.isfile(cfg_path):
            config = read_json(cfg_path, "path", expect_object=True)
            source = f"{cfg_path} (chat_template)"
        tmpl_path = os.path.join(path, "chat_template.jinja")
        if not config.get("chat_template") and os.path.isfile(tmpl_path):
            try:
                with open(tmpl_path, encoding="utf-8") as f:
                    config["chat_template"] = f.read()
            except UnicodeDecodeError as e:
                raise ValueError(f"path: {tmpl_path!r} is not UTF-8 text ({e})") from None
            source = tmpl_path
        if isinstance(config.get("chat_template"), list):
            # Older HF configs store several named templates; the "default" one renders chats.
            named = {t.get("name"): t.get("template") for t in config["chat_template"] if isinstance(t, dict)}
            config["chat_template"] = named.get("default")
            source = f"{cfg_path} (chat_template 'default')"
        out = cls(tok, config)
        if source:
            out.template_source = source
        return out

    def save(self, folder: str | os.PathLike) -> None:
        """Write tokenizer.json and tokenizer_config.json into `folder` (created if needed)."""
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        self.tokenizer.save(os.path.join(folder, "tokenizer.json"))
        with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(self.config, f, indent=2, ensure_ascii=False)

    # ---- encoding ---------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; no BOS/EOS are added, special tokens in the text are parsed."""
        if not isinstance(text, str):
            raise checks.argument_error("text", "str", type(text).__name__, TypeError)
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids` (a list, tuple or 1-D tensor of ints)."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self.tokenizer.id_to_token(int(i))

    @property
    def vocab_size(self) -> int:
        """Number of ids (including added/special tokens)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def id_limit(self) -> int:
        """One past the largest id the tokenizer can produce or decode (= vocab_size unless
        the ids have holes)."""
        vocab = self.tokenizer.get_vocab(with_added_tokens=True)
        return max(vocab.values()) + 1 if vocab else 0

    # ---- chat -------------------------------------------------------------------------
    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        """Render `messages` with the folder's chat template (jinja2, as transformers does).

        Raises ValueError when the tokenizer has no chat template.
        """
        if not self.chat_template:
            raise ValueError("tokenizer has no chat_template; use s1kernels.data.format.prompt_text")
        return _render_template(self.chat_template, messages, add_generation_prompt, self.config,
                                self.template_source)

    def __repr__(self) -> str:
        return (
            f"S1Tokenizer(vocab_size={self.vocab_size}, pad_id={self.pad_id}, eos_ids={self.eos_ids}, "
            f"chat_template={'yes' if self.chat_template else 'no'})"
        )


def real_vocab_size(tokenizer, rows: int, override: int | None = None, flag: str = "--vocab-size") -> int:
    """How many logit rows are real tokens: `override` when given, else the tokenizer's size.

    Checkpoints often pad the lm_head past the tokenizer (Qwen2.5: 152,064 rows for 151,665
    tokens); rows past this size must take no probability in the loss and never be sampled.
    Raises ValueError naming `flag` when the size is not in [1, rows], or when the tokenizer
    has more ids than the model has rows.
    """
    if override is None:
        real = _id_limit(tokenizer)
        if real > rows:
            raise ValueError(f"{flag}: the tokenizer has {real} ids but the model has only {rows} vocabulary rows "
                             f"(config.json vocab_size); is this the model's own tokenizer?")
        return real
    if not checks.is_int(override):
        raise checks.argument_error(flag, "an int", type(override).__name__, TypeError)
    if not 1 <= override <= rows:
        raise checks.argument_error(flag, f"1 <= vocab size <= {rows} (the model's vocabulary rows)", override)
    return override


def _id_limit(tokenizer) -> int:
    """One past the largest id the tokenizer can give: its `id_limit`, else `len()`, else
    `vocab_size` (the size protocol a duck-typed tokenizer implements one of)."""
    if hasattr(tokenizer, "id_limit"):
        return int(tokenizer.id_limit)
    if hasattr(tokenizer, "__len__"):  # transformers: len() counts the added tokens, .vocab_size does not
        return len(tokenizer)
    if hasattr(tokenizer, "vocab_size"):
        return int(tokenizer.vocab_size)
    raise checks.argument_error("tokenizer",
                                "a size (an `id_limit` or `vocab_size` attribute, or `__len__`) "
                                "to bound the ids it gives",
                                f"a {type(tokenizer).__name__} with none of them", TypeError)


def _token_text(tok) -> str | None:
    # HF configs store special tokens either as strings or as AddedToken dicts.
    if isinstance(tok, dict):
        return tok.get("content")
    return tok


def _render_template(template: str, messages: list[dict], add_generation_prompt: bool, config: dict,
                     source: str = "the chat template") -> str:
    from s1kernels.data.template import render

    specials = {k: _token_text(config.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    return render(template, source, messages=messages, add_generation_prompt=add_generation_prompt, tools=None,
                  **specials)

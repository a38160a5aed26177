"""Budget forcing in vLLM (V1 engine), as a batch-level logits processor.

    from vllm import LLM
    from s1kernels.integrations.vllm import BudgetForcingLogitsProcessor, sampling_params

    llm = LLM(model="Qwen/Qwen2.5-32B-Instruct-s1", logits_processors=[BudgetForcingLogitsProcessor])
    out = llm.generate([prompt], sampling_params(max_thinking_tokens=512, num_waits=1))

or, with s1kernels installed next to vLLM, `vllm serve MODEL` (the `vllm.logits_processors`
entry point loads the processor into every engine) and per request
`"vllm_xargs": {"max_thinking_tokens": 512, "num_waits": 1}`.

A request takes part when its `SamplingParams.extra_args` holds any of the keys below; the
rest of the batch is left alone. The keys, their defaults and their rules are those of
`s1kernels.generate`:

    min_thinking_tokens 0, max_thinking_tokens 2**31-1, num_waits 0, max_answer_tokens 2**31-1,
    budget_mode "wait" ("suppress"), wait_string "Wait", answer_start "<|im_start|>answer\\n",
    final_answer "Final Answer:".

Every step runs s1kernels' fused decode step (`s1kernels.ops.decode.decode_step`: the CUDA
kernel on a GPU, its C++ twin on the CPU; the state machine of
csrc/include/s1k/budget_forcing.h) on the rows that take part: it picks each row's token (greedy, or sampled
with the request's temperature/top_k/top_p/min_p/seed through the decode step's own
Philox sampler, so vLLM and `s1kernels.generate` draw the same tokens from the same
logits) and advances the row's state. The row's logits come back -inf everywhere except at
that token, so vLLM's sampler returns it. The forcing character rule
(`s1kernels.ops.decode.characters`) is applied first.

Greedy rows take the same decode step on a compact vocabulary: the forcing ids (delimiter,
Wait, exit, EOS, pad) and one column holding the best of all other ids, with the forcing
renumbered onto it. The state machine only tells those ids apart, so the step picks the
same token and leaves the same state, at the cost of one max pass per row instead of the
whole-vocabulary step (a row where a forcing id ties the best other id takes the whole
step, whose tie-break is by id). `S1K_VLLM_COMPACT=0` turns it off. Consequences:

- multi-token Wait strings and delimiters are forced token by token; a delimiter the model
  begins on its own at the budget is completed, never doubled; ids past the tokenizer's
  vocabulary (a padded lm_head) are never picked;
- when the state machine finishes a row (EOS, or the answer cap) it emits an end-of-sequence
  id the request stops on, so a row ended by the answer cap ends with that id;
- vLLM's penalties act after this processor and have no effect on these rows; the logprobs
  vLLM reports are those of its raw logits.

Batch changes (requests added, removed, moved, swapped) carry each request's state with it.
A step whose token vLLM drops (a chunked prefill that is not finished) is undone at the next
step; a request that comes back after preemption has its state rebuilt from its emitted tokens.

The prompt must end where thinking starts (the s1 prompt ends with `<|im_start|>think\\n`).
"""
from __future__ import annotations

import dataclasses
import os
import random
import weakref

import torch

from s1kernels.extras import require

_vllm_lp = require("vllm.v1.sample.logits_processor", "s1kernels.integrations.vllm (budget forcing in vLLM)")
import vllm  # noqa: E402

from s1kernels.data.format import ANSWER_START, FINAL_ANSWER  # noqa: E402
from s1kernels.ops.decode import (  # noqa: E402
    DONE, Budget, BudgetTensors, DecodeState, ForcingTokens, Sampling, SamplingTensors, decode_step)
from s1kernels.ops.decode.characters import CharacterGuard  # noqa: E402
from s1kernels.ops.decode.contract import _STATE_FIELDS, MODE_SUPPRESS, MODE_WAIT  # noqa: E402
from s1kernels import checks  # noqa: E402

__all__ = ["BudgetForcingLogitsProcessor", "sampling_params", "budget_args", "KEYS"]

_UNLIMITED = 2**31 - 1
_MODES = {"wait": MODE_WAIT, "suppress": MODE_SUPPRESS}
# extra_args keys -> default (the defaults of s1kernels.generate and Budget)
KEYS = {
    "min_thinking_tokens": 0,
    "max_thinking_tokens": _UNLIMITED,
    "num_waits": 0,
    "max_answer_tokens": _UNLIMITED,
    "budget_mode": "wait",
    "wait_string": "Wait",
    "answer_start": ANSWER_START,
    "final_answer": FINAL_ANSWER,
}
_INT_KEYS = ("min_thinking_tokens", "max_thinking_tokens", "num_waits", "max_answer_tokens")
_STR_KEYS = ("wait_string", "answer_start", "final_answer")


def _settings(extra_args) -> dict | None:
    """The request's budget-forcing settings with defaults filled in, or None when it takes
    no part. Raises ValueError/TypeError naming the key on a bad value."""
    if not extra_args or not any(k in extra_args for k in KEYS):
        return None
    s = {k: extra_args.get(k, d) for k, d in KEYS.items()}
    for k in _INT_KEYS:
        v = s[k]
        if isinstance(v, float) and v.is_integer():
            v = int(v)  # JSON clients send 512.0
        if isinstance(v, bool) or not isinstance(v, int):
            raise checks.argument_error(f"extra_args[{k!r}]", "an int", repr(v), TypeError)
        s[k] = v
    for k in _STR_KEYS:
        if not isinstance(s[k], str):
            raise checks.argument_error(f"extra_args[{k!r}]", "a string", type(s[k]).__name__, TypeError)
    if s["budget_mode"] not in _MODES:
        raise checks.argument_error("extra_args['budget_mode']", "'wait' or 'suppress'", repr(s['budget_mode']))
    if not s["wait_string"]:
        raise checks.argument_error("extra_args['wait_string']", "a non-empty string", "''")
    if not s["answer_start"]:
        raise checks.argument_error("extra_args['answer_start']", "a non-empty string", "''")
    # the same checks as Budget.tensors, with the key names of extra_args
    if not 0 <= s["min_thinking_tokens"] <= s["max_thinking_tokens"] <= _UNLIMITED:
        raise ValueError(f"extra_args: need 0 <= min_thinking_tokens <= max_thinking_tokens <= 2**31-1, got "
                         f"min={s['min_thinking_tokens']}, max={s['max_thinking_tokens']}")
    if not 0 <= s["num_waits"] <= _UNLIMITED:
        raise checks.argument_error("extra_args['num_waits']", ">= 0", s['num_waits'])
    if not 1 <= s["max_answer_tokens"] <= _UNLIMITED:
        raise checks.argument_error("extra_args['max_answer_tokens']", ">= 1", s['max_answer_tokens'])
    return s


def budget_args(budget: Budget | None = None, *, wait_string: str = "Wait", answer_start: str = ANSWER_START,
                final_answer: str = FINAL_ANSWER, **fields) -> dict:
    """`extra_args` for one request from a `Budget` (scalar fields) or its fields as keywords."""
    if budget is not None and not isinstance(budget, Budget):
        raise checks.argument_error("budget", "a Budget or None", type(budget).__name__, TypeError)
    b = dataclasses.asdict(budget) if budget is not None else {}
    b.update(fields)
    unknown = set(b) - {"min_thinking_tokens", "max_thinking_tokens", "num_waits", "max_answer_tokens", "mode"}
    if unknown:
        raise TypeError(f"budget_args: unknown budget fields {sorted(unknown)}")
    args = {k: b[k] for k in _INT_KEYS if k in b}
    if "mode" in b:
        args["budget_mode"] = b["mode"]
    args.update(wait_string=wait_string, answer_start=answer_start, final_answer=final_answer)
    args.setdefault("max_thinking_tokens", KEYS["max_thinking_tokens"])
    _settings(args)  # validated here, with the keys' names
    return args


def sampling_params(budget: Budget | None = None, *, max_tokens: int | None = None, wait_string: str = "Wait",
                    answer_start: str = ANSWER_START, final_answer: str = FINAL_ANSWER, extra_args=None,
                    **kwargs):
    """A `vllm.SamplingParams` carrying a budget (a `Budget`, or its fields as keywords:
    min_thinking_tokens, max_thinking_tokens, num_waits, max_answer_tokens, mode). Greedy
    unless `temperature` is given. `max_tokens` defaults to what `s1kernels.generate` allows:
    the thinking budget, the forced exit and the answer cap (256 when uncapped)."""
    budget_fields = {k: kwargs.pop(k) for k in list(kwargs)
                     if k in ("min_thinking_tokens", "max_thinking_tokens", "num_waits", "max_answer_tokens", "mode")}
    args = budget_args(budget, wait_string=wait_string, answer_start=answer_start, final_answer=final_answer,
                       **budget_fields)
    if max_tokens is None:
        if args["max_thinking_tokens"] >= _UNLIMITED:
            raise ValueError("max_tokens: needed when the budget sets no max_thinking_tokens")
        answer = args.get("max_answer_tokens", _UNLIMITED)
        answer = 256 if answer >= _UNLIMITED else answer
        # + the delimiter and "Final Answer:" (a few tokens each) and the closing EOS
        max_tokens = args["max_thinking_tokens"] + answer + 32
    kwargs.setdefault("temperature", 0.0)
    return vllm.SamplingParams(max_tokens=max_tokens, extra_args={**(extra_args or {}), **args}, **kwargs)


# ----------------------------------------------------------------------------- the processor

@dataclasses.dataclass
class _Row:
    """One request's part of the batch."""

    out: list            # vLLM's live list of the request's output ids
    key: tuple           # (answer_start, wait_string, final_answer, pad_id): selects the ForcingTokens
    budget: list         # min, max, num_waits, max_answer, mode (ints)
    sampling: list       # temperature, top_k, top_p, min_p, seed
    state: list          # the DecodeState row, in _STATE_FIELDS order
    need: int = 0        # bytes still missing of the current character (characters.py)
    seen: int = -1       # len(out) when the last step ran (-1: no step pending)
    before: tuple | None = None  # (state, need) before that step, to undo it if its token was dropped


def _fresh_state() -> list:
    return [0] * len(_STATE_FIELDS)  # phase THINKING, all counters 0, step 0


class BudgetForcingLogitsProcessor(_vllm_lp.LogitsProcessor):
    """s1 budget forcing for the requests whose `extra_args` ask for it (see the module docstring)."""

    # engines that already run an instance (the entry point and --logits-processors may both name it)
    _live: "weakref.WeakValueDictionary[int, BudgetForcingLogitsProcessor]" = weakref.WeakValueDictionary()

    @classmethod
    def validate_params(cls, params) -> None:
        _settings(params.extra_args)

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.device = torch.device(device)
        self.model_config = vllm_config.model_config
        # holding the config keeps its id from being reused by another engine's config while
        # this instance is in _live (a freed config's id would make that engine's instance inert)
        self._vllm_config = vllm_config
        # a second instance in the same engine stays inert: one state machine per request
        self.inert = id(vllm_config) in self._live
        if not self.inert:
            self._live[id(vllm_config)] = self
        self.rows: dict[int, _Row] = {}
        self._tokenizer = None
        self._vocab_size = None
        self._guard = None
        self._forcing: dict[tuple, ForcingTokens] = {}
        self.backend = os.environ.get("S1K_VLLM_BACKEND", "auto")
        # greedy rows take the compact step (see _compact_step); False: the whole-vocabulary step
        self.compact = os.environ.get("S1K_VLLM_COMPACT", "1") != "0"
        self._compact: dict[tuple, tuple[ForcingTokens, torch.Tensor]] = {}

    def is_argmax_invariant(self) -> bool:
        return False  # it decides the token

    # ---- tokenizer-dependent tables, built on the first request that asks for forcing
    def _tok(self):
        if self._tokenizer is None:
            from s1kernels.data.tokenizer import S1Tokenizer, real_vocab_size

            self._tokenizer = S1Tokenizer.from_folder(_tokenizer_folder(self.model_config))
            rows = int(self.model_config.get_vocab_size())
            self._vocab_size = real_vocab_size(self._tokenizer, rows)
        return self._tokenizer

    def _forcing_for(self, key: tuple) -> ForcingTokens:
        if key not in self._forcing:
            answer_start, wait_string, final_answer, pad = key
            f = ForcingTokens.from_tokenizer(self._tok(), answer_start=answer_start, wait_string=wait_string,
                                             final_answer=final_answer)
            if pad is not None and pad != f.pad_id:
                f = dataclasses.replace(f, pad_id=pad)
            self._forcing[key] = f
        return self._forcing[key]

    def _char_guard(self, forcing: ForcingTokens) -> CharacterGuard:
        if self._guard is None:
            self._guard = CharacterGuard.from_tokenizer(self._tok(), forcing, self._vocab_size)
        return self._guard

    # ---- batch bookkeeping
    def update_state(self, batch_update) -> None:
        if batch_update is None or self.inert:
            return
        for i in batch_update.removed:
            self.rows.pop(i, None)
        for i, params, _prompt, out in batch_update.added:
            self.rows.pop(i, None)
            s = _settings(params.extra_args)
            if s is not None:
                self.rows[i] = self._new_row(s, params, out)
        for a, b, direction in batch_update.moved:
            ra, rb = self.rows.pop(a, None), self.rows.pop(b, None)
            if ra is not None:
                self.rows[b] = ra
            if direction == _vllm_lp.MoveDirectionality.SWAP and rb is not None:
                self.rows[a] = rb

    def _new_row(self, s: dict, params, out: list) -> _Row:
        stop = getattr(params, "all_stop_token_ids", None) or set()
        self._tok()
        eos = [e for e in self._tok().eos_ids if e in stop] if stop else []
        # finished rows emit an id the request stops on (the forcing's pad id when it is one)
        pad = None
        probe = self._forcing_for((s["answer_start"], s["wait_string"], s["final_answer"], None))
        if stop and probe.pad_id not in stop:
            pad = eos[0] if eos else min(stop)
        key = (s["answer_start"], s["wait_string"], s["final_answer"], pad)
        forcing = self._forcing_for(key)
        if forcing.max_id() >= self._vocab_size:
            raise ValueError(f"extra_args: a forcing id ({forcing.max_id()}) is past the vocabulary "
                             f"({self._vocab_size} tokens)")
        t = float(params.temperature or 0.0)
        seed = params.seed if params.seed is not None else random.getrandbits(63)
        top_k = int(params.top_k) if params.top_k and params.top_k > 0 else 0
        sampling = [t if t > 1e-5 else 0.0, top_k, float(params.top_p), float(params.min_p), int(seed)]
        budget = [s["min_thinking_tokens"], s["max_thinking_tokens"], s["num_waits"], s["max_answer_tokens"],
                  _MODES[s["budget_mode"]]]
        row = _Row(out=out, key=key, budget=budget, sampling=sampling, state=_fresh_state())
        if out:  # back after preemption: rebuild the state from what it emitted
            self._replay(row, list(out))
        return row

    def _replay(self, row: _Row, ids: list) -> None:
        """Runs the state machine over already emitted ids (greedy on one-hot logits picks
        each of them, and every injected id matches the state that injected it)."""
        forcing = self._forcing_for(row.key)
        guard = self._char_guard(forcing)
        budget_t = BudgetTensors(*[torch.tensor([v], dtype=torch.int32) for v in row.budget])
        sampling_t = Sampling().tensors(1, "cpu")
        state = DecodeState(*[torch.tensor([v], dtype=torch.int64 if f == "step" else torch.int32)
                              for f, v in zip(_STATE_FIELDS, row.state)])
        need = torch.tensor([row.need], dtype=torch.int32)
        logits = torch.zeros(1, self._vocab_size)
        for t in ids:
            logits.zero_()
            logits[0, t] = 1.0
            tok, _ = decode_step(logits, state, budget_t, sampling_t, forcing, vocab_size=self._vocab_size,
                                 backend=self.backend)
            need = guard.advance(need, tok)
        row.state = [int(getattr(state, f)[0]) for f in _STATE_FIELDS]
        row.need = int(need[0])
        row.seen = -1

    # ---- one step
    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows or self.inert:
            return logits
        if logits.device.type != "cpu":
            return self._apply(logits)
        # on a CPU the step's few passes run on one thread: a parallel fill or max over the
        # batch's logits waits at a barrier for every intra-op thread, milliseconds each when
        # another process holds a core (measured: bench/vllm_processor.py --threads 2)
        threads = torch.get_num_threads()
        if threads == 1:
            return self._apply(logits)
        torch.set_num_threads(1)
        try:
            return self._apply(logits)
        finally:
            torch.set_num_threads(threads)

    def _apply(self, logits: torch.Tensor) -> torch.Tensor:
        groups: dict[tuple, list[int]] = {}
        for i, row in self.rows.items():
            if row.seen >= 0 and len(row.out) == row.seen and row.before is not None:
                row.state, row.need = row.before  # vLLM dropped that step's token: undo the step
            row.seen, row.before = -1, None
            if i < logits.shape[0]:
                groups.setdefault(row.key, []).append(i)
        for key, idx in groups.items():
            idx = sorted(idx)
            greedy = [i for i in idx if self.rows[i].sampling[0] == 0.0]
            sampled = [i for i in idx if self.rows[i].sampling[0] != 0.0]
            if greedy:
                self._step(logits, key, greedy, compact=self.compact)
            if sampled:  # the decode step's own sampler draws over the whole vocabulary
                self._step(logits, key, sampled)
        return logits

    def _compact_forcing(self, key: tuple, device) -> tuple[ForcingTokens, torch.Tensor]:
        """The forcing of `key` renumbered onto a compact vocabulary: its distinct ids in
        ascending order (column j stands for ids[j]), then one column for every other id."""
        if key not in self._compact:
            f = self._forcing_for(key)
            ids = sorted({*f.end_think_ids, *f.delimiter_completion_ids, *f.wait_ids, *f.forced_exit_ids,
                          *f.eos_ids, f.pad_id})
            at = {v: j for j, v in enumerate(ids)}
            cf = ForcingTokens(end_think_ids=tuple(at[v] for v in f.end_think_ids),
                               delimiter_completion_ids=tuple(at[v] for v in f.delimiter_completion_ids),
                               wait_ids=tuple(at[v] for v in f.wait_ids),
                               forced_exit_ids=tuple(at[v] for v in f.forced_exit_ids),
                               eos_ids=tuple(at[v] for v in f.eos_ids), pad_id=at[f.pad_id])
            self._compact[key] = (cf, torch.tensor(ids, dtype=torch.int64))
        cf, ids = self._compact[key]
        if ids.device != torch.device(device):
            ids = ids.to(device)
            self._compact[key] = (cf, ids)
        return cf, ids

    def _compact_step(self, sub, state, budget_t, sampling_t, key):
        """Greedy rows: the decode step on a compact vocabulary instead of the whole one.

        The state machine tells the forcing ids apart from each other and from the rest; every
        other id is just "a token". So a greedy row's step is decided by the logits of the
        forcing ids and by the best of the other ids: the package's decode step runs on those
        (|forcing ids| + 1 columns, the forcing renumbered to match) and its token is mapped
        back. Suppression, Wait replacement, injections, the exit and the error rules are its
        own. One max pass over the vocabulary remains. Non-finite values reach the compact row
        (max propagates NaN and +inf), so the error rule sees them. Returns None for rows whose
        choice needs the whole vocabulary's first-index tie-break (a forcing id ties the best
        other id): the caller takes the whole step for them.

        `sub`'s forcing columns are -inf on return (the caller rewrites the rows) unless it
        returns None."""
        cf, ids = self._compact_forcing(key, sub.device)
        x = sub[:, : self._vocab_size]
        xk = x[:, ids]  # the forcing ids' logits (a copy)
        x[:, ids] = float("-inf")
        best, other = x.max(-1)  # the best other id (first of equals), NaN/+inf propagate
        if bool((xk == best[:, None]).any()):
            x[:, ids] = xk  # a forcing id ties the best other id: put the row back for the whole step
            return None
        c = torch.cat([xk, best[:, None]], 1)
        tok, _ = decode_step(c, state, budget_t, sampling_t, cf, vocab_size=c.shape[1], backend=self.backend)
        return torch.where(tok == ids.numel(), other, ids[tok.clamp(max=ids.numel() - 1)])

    def _step(self, logits: torch.Tensor, key: tuple, idx: list[int], compact: bool = False) -> None:
        forcing = self._forcing_for(key)
        guard = self._char_guard(forcing)
        rows = [self.rows[i] for i in idx]
        dev = logits.device
        cols = lambda j, dtype: torch.tensor([r.state[j] for r in rows], dtype=dtype, device=dev)  # noqa: E731
        state = DecodeState(*[cols(j, torch.int64 if f == "step" else torch.int32)
                              for j, f in enumerate(_STATE_FIELDS)])
        budget_t = BudgetTensors(*[torch.tensor([r.budget[j] for r in rows], dtype=torch.int32, device=dev)
                                   for j in range(5)])
        sampling_t = SamplingTensors(
            torch.tensor([r.sampling[0] for r in rows], dtype=torch.float32, device=dev),
            torch.tensor([r.sampling[1] for r in rows], dtype=torch.int32, device=dev),
            torch.tensor([r.sampling[2] for r in rows], dtype=torch.float32, device=dev),
            torch.tensor([r.sampling[3] for r in rows], dtype=torch.float32, device=dev),
            torch.tensor([r.sampling[4] for r in rows], dtype=torch.int64, device=dev))
        need = torch.tensor([r.need for r in rows], dtype=torch.int32, device=dev)
        whole = len(idx) == logits.shape[0] and idx[-1] == len(idx) - 1
        sel = None if whole else torch.tensor(idx, dtype=torch.int64, device=dev)
        # the rows are rewritten below, so the rule may mask vLLM's own tensor in place
        sub = logits if whole else logits.index_select(0, sel)
        if sub.dtype != torch.float32:
            sub = sub.float()
        guard.mask_(sub, need, state, budget_t)
        tokens = None
        if compact:  # None on a tie: then the whole step below, on the same logits
            tokens = self._compact_step(sub, state, budget_t, sampling_t, key)
        if tokens is None:
            tokens, _ = decode_step(sub, state, budget_t, sampling_t, forcing, vocab_size=self._vocab_size,
                                    backend=self.backend)
        need = guard.advance(need, tokens)
        # the chosen token is the only finite logit of the row
        if whole:
            logits.fill_(float("-inf"))
            logits.scatter_(1, tokens[:, None], 0.0)
        else:
            logits.index_fill_(0, sel, float("-inf"))
            logits[sel, tokens] = 0.0
        new = [t.tolist() for t in state.tensors()]
        need_l = need.tolist()
        for j, r in enumerate(rows):
            r.before = (r.state, r.need)
            r.seen = len(r.out)
            r.state = [new[k][j] for k in range(len(_STATE_FIELDS))]
            r.need = need_l[j]

    def done(self, index: int) -> bool:
        """Whether the request at batch `index` has finished its budget-forcing state machine."""
        r = self.rows.get(index)
        return r is not None and r.state[0] == DONE


def _tokenizer_folder(model_config) -> str:
    """The local folder holding the model's tokenizer.json (a hub id resolves to the copy vLLM
    downloaded)."""
    path = model_config.tokenizer
    if os.path.isdir(path):
        return path
    from huggingface_hub import snapshot_download

    return snapshot_download(path, revision=getattr(model_config, "tokenizer_revision", None),
                             allow_patterns=["tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                                             "special_tokens_map.json"])



# ----------------------------------------------------------------------------- offline engine

class VLLMGenerate:
    """`s1kernels.generate.generate` run by a vLLM engine: the same arguments (budget,
    sampling, forcing, prompts rendered in the s1 format) and the same `GenerationResult`s,
    so the evaluation runs unchanged on vLLM (`python -m s1kernels.evaluation --engine vllm`).

    `llm`: a `vllm.LLM` built with `logits_processors=[BudgetForcingLogitsProcessor]` (or with
    s1kernels installed, whose entry point loads it). The decode state stays inside vLLM's
    engine, so the events of a result are read off its tokens: `thinking_tokens` is the
    thinking span's length, `waits_used` the number of Wait sequences in it, `forced_exit`
    whether the forced exit follows it, `finished_reason` "answer_cap" when the answer has
    `max_answer_tokens` tokens (the closing end-of-sequence id vLLM needed to stop is
    dropped from `token_ids`).
    """

    def __init__(self, llm):
        self.llm = llm

    def __call__(self, model, tokenizer, prompts, budget=None, sampling=None, max_new_tokens=None, stream=None, *,
                 forcing=None, chat: bool = True, think_start: str | None = None, answer_start: str = ANSWER_START,
                 wait_string: str = "Wait", final_answer: str = FINAL_ANSWER, system: str | None = None,
                 progress: bool = False, **_engine_options):
        from vllm.inputs import TokensPrompt

        from s1kernels.control import thinking_span
        from s1kernels.data.format import THINK_START
        from s1kernels.generate import _build_result, _default_max_new, _slice_rows, format_prompt

        if stream:
            raise ValueError("stream: the vLLM engine does not stream; use s1kernels.generate")
        if isinstance(prompts, (str, bytes)):
            raise checks.argument_error("prompts", "a list of prompts", "a single string (wrap it in a list)",
                                        TypeError)
        prompts = list(prompts)
        if not prompts:
            return []
        budget = Budget() if budget is None else budget
        sampling = Sampling() if sampling is None else sampling
        if forcing is None:
            forcing = ForcingTokens.from_tokenizer(tokenizer, answer_start=answer_start, wait_string=wait_string,
                                                   final_answer=final_answer)
        else:  # the processor takes strings: recover them, and make sure they give these ids
            n_delim = 1 + len(forcing.delimiter_completion_ids)
            answer_start = tokenizer.decode([*forcing.end_think_ids[:1], *forcing.delimiter_completion_ids])
            wait_string = tokenizer.decode(list(forcing.wait_ids))
            final_answer = tokenizer.decode(list(forcing.forced_exit_ids[n_delim:]))
            again = ForcingTokens.from_tokenizer(tokenizer, answer_start=answer_start, wait_string=wait_string,
                                                 final_answer=final_answer, eos_ids=forcing.eos_ids)
            if dataclasses.replace(again, pad_id=forcing.pad_id) != forcing:
                raise ValueError("forcing: the vLLM engine needs forcing built from strings "
                                 "(ForcingTokens.from_tokenizer); these ids do not round-trip through text")
        if max_new_tokens is None:
            max_new_tokens = _default_max_new(budget, forcing)
        n = len(prompts)
        seed = sampling.seed
        if isinstance(seed, int) or (torch.is_tensor(seed) and seed.dim() == 0):
            sampling = dataclasses.replace(sampling, seed=[int(seed) + i for i in range(n)])
        texts, ids_list, params = [], [], []
        for i, p in enumerate(prompts):
            if isinstance(p, str):
                text = format_prompt(p, tokenizer, think_start or THINK_START, system) if chat else p
                ids = tokenizer.encode(text)
            else:
                ids = list(p)
                text = tokenizer.decode(ids)
            texts.append(text)
            ids_list.append(ids)
            b = _slice_rows(budget, [i], n)
            s = _slice_rows(sampling, [i], n)
            one = lambda v: v[0] if isinstance(v, (list, tuple)) else (int(v[0]) if torch.is_tensor(v) and v.dim() else v)  # noqa: E731
            args = budget_args(min_thinking_tokens=int(one(b.min_thinking_tokens)),
                               max_thinking_tokens=int(one(b.max_thinking_tokens)), num_waits=int(one(b.num_waits)),
                               max_answer_tokens=int(one(b.max_answer_tokens)), mode=one(b.mode),
                               wait_string=wait_string, answer_start=answer_start, final_answer=final_answer)
            t = float(one(s.temperature))
            params.append(vllm.SamplingParams(
                max_tokens=max_new_tokens + 1, temperature=t, top_p=float(one(s.top_p)),
                top_k=int(one(s.top_k)) or 0, min_p=float(one(s.min_p)), seed=int(one(s.seed)), extra_args=args,
                logprobs=0))
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in ids_list], params,
                                 use_tqdm=progress)
        results = []
        eos = set(forcing.eos_ids)
        for text, ids, prm, o in zip(texts, ids_list, params, outs):
            c = o.outputs[0]
            got = list(c.token_ids)
            lps = [float(next(iter(d.values())).logprob) if d else 0.0 for d in (c.logprobs or [])] or [0.0] * len(got)
            span = thinking_span(got, forcing.end_think_ids, forcing.eos_ids)
            n_exit = len(forcing.forced_exit_ids)
            forced = span.ended == "delimiter" and got[span.tokens: span.tokens + n_exit] == list(forcing.forced_exit_ids)
            delim = 1 + len(forcing.delimiter_completion_ids)
            answer = got[span.tokens + (n_exit if forced else delim):] if span.ended == "delimiter" else []
            cap = prm.extra_args["max_answer_tokens"]
            capped = span.ended == "delimiter" and len([t for t in answer if t not in eos]) >= cap
            if capped and got and got[-1] in eos and len(answer) > cap:
                got, lps = got[:-1], lps[: len(got) - 1]  # the EOS that stopped the request after the cap
            done = c.finish_reason == "stop" or capped
            w = list(forcing.wait_ids)
            waits = sum(1 for k in range(len(span.ids) - len(w) + 1) if list(span.ids[k: k + len(w)]) == w)
            results.append(_build_result(tokenizer, forcing, text, len(ids), got, lps[: len(got)], done, False,
                                         span.tokens, waits, forced))
        return results

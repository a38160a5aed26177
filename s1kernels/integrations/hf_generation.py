"""Budget forcing for transformers' `model.generate`, as a logits processor.

    forcing = forcing_for_tokenizer(tokenizer)                 # delimiter, "Final Answer:", "Wait"
    bf = BudgetForcingProcessor(forcing, Budget(max_thinking_tokens=512, num_waits=1))
    out = model.generate(**inputs, do_sample=False, max_new_tokens=1024,
                         logits_processor=[bf], stopping_criteria=[bf.stopping_criteria()])

Each call runs s1kernels' fused decode step (`s1kernels.ops.decode.decode_step`, the CUDA
kernel on a GPU, the C++ twin or the torch reference on CPU) on the scores of every row: it
samples the row's next token (greedy or with the processor's `Sampling`) and advances the
row's budget-forcing state machine (minimum budget: "Wait" or suppression; maximum budget:
the end-of-thinking delimiter and "Final Answer:" are forced). The scores handed back are
-inf everywhere except at that token, so transformers' own greedy pick or sampling returns
it unchanged. The state stays on the scores' device; nothing is synced to the host.

The stopping criteria ends a row when the state machine says it is done (an end-of-sequence
token, or the answer cap reached), so rows that end without EOS stop too.

    rows = bf.read_outputs(out, tokenizer)     # thinking, answer span, answer, thinking length

reads the outputs by the rule `generate` and eval use (`s1kernels.control.read_row`): the
answer is the first complete one after the delimiter, and what a row writes after it (a
restarted trace) counts in its thinking length.

The prompts must end where thinking starts (the s1 prompt ends with `<|im_start|>think\\n`);
rows begin in the thinking phase (`start_phase="answer"` for prompts past it). Put the
processor last if other processors are given: it decides the token.
"""
from __future__ import annotations

import dataclasses

import torch

from s1kernels import extras
from s1kernels.control import RowSpans, read_row
from s1kernels.ops.decode import DONE, Budget, DecodeState, ForcingTokens, Sampling, decode_step
from s1kernels.ops.decode.characters import CharacterGuard
from s1kernels import checks

_tf = extras.require("transformers", "s1kernels.integrations", extra="hf")

__all__ = ["BudgetForcingProcessor", "BudgetForcingStoppingCriteria", "forcing_for_tokenizer"]


class _TokenizerView:
    """A transformers tokenizer seen through the interface `ForcingTokens.from_tokenizer` reads."""

    def __init__(self, tokenizer, eos_ids, pad_id):
        self._tok = tokenizer
        if eos_ids is None:
            eos_ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
            im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
            if isinstance(im_end, int) and im_end != tokenizer.unk_token_id and im_end not in eos_ids:
                eos_ids.append(im_end)
        if not eos_ids:
            raise ValueError("eos_ids: the tokenizer has no eos_token_id; pass eos_ids")
        self.eos_ids = [int(e) for e in eos_ids]
        if pad_id is None:
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.pad_id = int(pad_id)

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def token_to_id(self, token: str):
        i = self._tok.convert_tokens_to_ids(token)
        return None if i is None or i == self._tok.unk_token_id else i


def forcing_for_tokenizer(tokenizer, *, answer_start: str = "<|im_start|>answer\n", wait_string: str = "Wait",
                          final_answer: str = "Final Answer:", eos_ids=None, pad_id: int | None = None
                          ) -> ForcingTokens:
    """`ForcingTokens.from_tokenizer` for a transformers tokenizer (text encoded without
    special tokens). EOS ids default to `eos_token_id` and `<|im_end|>` when it exists; the
    pad id to `pad_token_id`, else the first EOS id."""
    return ForcingTokens.from_tokenizer(_TokenizerView(tokenizer, eos_ids, pad_id), answer_start=answer_start,
                                        wait_string=wait_string, final_answer=final_answer)


class BudgetForcingProcessor(_tf.LogitsProcessor):
    """A transformers `LogitsProcessor` that applies s1 budget forcing per row.

    Args:
        forcing: the token lists (`forcing_for_tokenizer(tokenizer)`).
        budget: `Budget` (min/max thinking tokens, "Wait" extensions, answer cap, mode);
            per-row values have one entry per batch row.
        sampling: `Sampling` done by the decode step (default greedy). A scalar seed `s`
            gives row `i` the seed `s + i`, as `s1kernels.generate` does.
        vocab_size: the tokenizer's real vocabulary size: padded score columns are never
            picked (default: every column).
        start_phase: "thinking" (the prompt ends with the thinking start) or "answer".
        backend: decode-step backend ("auto", "cuda", "cpp", "torch").
        tokenizer: the model's tokenizer; with it the forcing character rule applies (no
            Wait, delimiter or forced exit inside a byte-level character, as in
            `s1kernels.generate`; `s1kernels.ops.decode.characters`).

    One instance serves one `generate` call at a time; it resets itself when a new call
    starts (the sequence is shorter than at the last step) or call `reset()`.
    """

    def __init__(self, forcing: ForcingTokens, budget: Budget | None = None, sampling: Sampling | None = None, *,
                 vocab_size: int | None = None, start_phase: str = "thinking", backend: str = "auto",
                 tokenizer=None):
        if not isinstance(forcing, ForcingTokens):
            raise checks.argument_error("forcing", "ForcingTokens", type(forcing).__name__, TypeError)
        if budget is not None and not isinstance(budget, Budget):
            raise checks.argument_error("budget", "a Budget or None", type(budget).__name__, TypeError)
        if sampling is not None and not isinstance(sampling, Sampling):
            raise checks.argument_error("sampling", "a Sampling or None", type(sampling).__name__, TypeError)
        if start_phase not in ("thinking", "answer"):
            raise checks.argument_error("start_phase", "'thinking' or 'answer'", repr(start_phase))
        self.forcing, self.budget = forcing, budget or Budget()
        self.sampling = sampling or Sampling()
        self.vocab_size, self.start_phase, self.backend = vocab_size, start_phase, backend
        self.guard = None if tokenizer is None else CharacterGuard.for_generation(tokenizer, forcing, vocab_size)
        self.reset()

    def reset(self) -> None:
        self.state: DecodeState | None = None
        self._last_len = -1
        self._config = None
        self._prompt_len, self._ends = 0, None

    def _start(self, batch: int, seq_len: int, device: torch.device) -> None:
        sampling = self.sampling
        seed = sampling.seed
        if isinstance(seed, int) or (torch.is_tensor(seed) and seed.dim() == 0):
            sampling = dataclasses.replace(sampling, seed=[int(seed) + i for i in range(batch)])
        self._config = (self.budget.tensors(batch, device), sampling.tensors(batch, device))
        self.state = DecodeState.new(batch, device, start_phase=self.start_phase)
        # where each row's tokens end in the output sequences (what follows is padding),
        # kept on the device: no host sync per step
        self._prompt_len = seq_len
        self._ends = torch.full((batch,), seq_len, dtype=torch.int64, device=device)
        self.need = torch.zeros(batch, dtype=torch.int32, device=device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not torch.is_tensor(scores) or scores.dim() != 2:
            raise checks.argument_error("scores", "a [batch, vocab] tensor", repr(getattr(scores, 'shape', scores)))
        batch, seq_len = input_ids.shape
        if self.state is None or seq_len <= self._last_len or self.state.phase.shape[0] != batch:
            self._start(batch, seq_len, scores.device)
        self._last_len = seq_len
        budget_t, sampling_t = self._config
        active = self.state.phase != DONE
        scores = scores.contiguous()
        if self.guard is not None:
            scores = scores.clone()  # the rule masks in place; the caller's scores stay as they were
            self.guard.mask_(scores, self.need, self.state, budget_t)
        tokens, _ = decode_step(scores, self.state, budget_t, sampling_t, self.forcing,
                                vocab_size=self.vocab_size, backend=self.backend)
        if self.guard is not None:
            self.need = self.guard.advance(self.need, tokens)
        self._ends = torch.where(active, seq_len + 1, self._ends)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, tokens[:, None].to(torch.int64), 0.0)
        return out

    @property
    def done(self) -> torch.Tensor | None:
        """Bool [batch] device tensor: rows the state machine has finished (None before the first step)."""
        return None if self.state is None else self.state.phase == DONE

    def read_outputs(self, sequences: torch.Tensor, tokenizer) -> list[RowSpans]:
        """Each row of the last `generate` call's output (``sequences``: [batch, prompt +
        new], prompts included as transformers returns them) read by s1kernels' one rule
        (``s1kernels.control.read_row``): thinking span, answer span (up to the first
        complete answer or a re-opened delimiter), the answer extracted from that span, and
        the thinking written after it, which ``RowSpans.thinking_tokens`` counts."""
        if self._ends is None:
            raise ValueError("read_outputs: this processor has not generated anything yet")
        if not torch.is_tensor(sequences) or sequences.dim() != 2 or sequences.shape[0] != self._ends.shape[0]:
            raise checks.argument_error("sequences",
                                        f"the [batch={self._ends.shape[0]}, length] output of the last generate call",
                                        repr(getattr(sequences, 'shape', type(sequences).__name__)))
        ends = self._ends.tolist()
        return [read_row(sequences[b, self._prompt_len:ends[b]].tolist(), self.forcing, tokenizer)
                for b in range(len(ends))]

    def stopping_criteria(self) -> "BudgetForcingStoppingCriteria":
        return BudgetForcingStoppingCriteria(self)


class BudgetForcingStoppingCriteria(_tf.StoppingCriteria):
    """Ends each row when its budget-forcing state machine is done (transformers `StoppingCriteria`)."""

    def __init__(self, processor: BudgetForcingProcessor):
        if not isinstance(processor, BudgetForcingProcessor):
            raise checks.argument_error("processor", "a BudgetForcingProcessor", type(processor).__name__, TypeError)
        self.processor = processor

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        done = self.processor.done
        if done is None or done.shape[0] != input_ids.shape[0]:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return done.to(input_ids.device)


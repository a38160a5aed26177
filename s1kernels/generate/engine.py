"""The generation engine: prefill, decode step, decode until done, compaction.

    prefill(model, prompt_ids, pad_id, max_new) -> (cache, first logits, lengths)
    Decoder.step()                    one decode step (model forward + fused decode_step),
                                      eager or replayed from a captured CUDA graph
    decode_until_done(...)            steps until every row is done or max_new is reached,
                                      reading the done mask without stalling the GPU
    compact(...)                      drops finished rows (cache rows, state and buffers)
    run_batch(...)                    the four above for one batch; returns a Harvest

The public entry point is s1kernels.generate.generate; its docstring tells how a batch is
decoded. Nothing here knows about prompts as text except the streaming path.
"""
from __future__ import annotations

import torch

from s1kernels.ops.decode import DONE, EVENT_EXIT, DecodeState, decode_step


class StepBuffers:
    """Static tensors one decode step reads and writes (the CUDA graph's inputs/outputs)."""

    def __init__(self, batch: int, max_new: int, device: torch.device):
        self.tokens = torch.zeros(batch, dtype=torch.int64, device=device)  # last token per row
        self.pos = torch.zeros(batch, dtype=torch.int64, device=device)  # its cache position
        self.step = torch.zeros(1, batch, dtype=torch.int64, device=device)  # output column
        self.out = torch.zeros(batch, max_new, dtype=torch.int64, device=device)
        self.out_logprobs = torch.zeros(batch, max_new, dtype=torch.float32, device=device)
        self.n_tokens = torch.zeros(batch, dtype=torch.int64, device=device)  # real tokens per row
        self.forced = torch.zeros(batch, dtype=torch.bool, device=device)  # a forced exit was injected

    _FIELDS = ("tokens", "pos", "out", "out_logprobs", "n_tokens", "forced")

    def select(self, idx: torch.Tensor) -> None:
        """Keep only rows ``idx`` (fresh tensors: a captured graph must be captured again)."""
        for name in self._FIELDS:
            setattr(self, name, getattr(self, name)[idx].contiguous())
        self.step = self.step[:, idx].contiguous()

    def record(self, tokens: torch.Tensor, logprobs: torch.Tensor, active: torch.Tensor, state: DecodeState) -> None:
        # scatter with a device-side column index: no host value enters the step
        self.n_tokens.add_(active.to(torch.int64))
        self.forced.logical_or_(state.event == EVENT_EXIT)
        col = self.step.t()
        self.out.scatter_(1, col, tokens[:, None])
        self.out_logprobs.scatter_(1, col, logprobs[:, None].float())
        self.tokens.copy_(tokens)
        self.step.add_(1)


class Decoder:
    """Runs decode steps eagerly or through a captured CUDA graph."""

    def __init__(self, model, cache, state, budget_t, sampling_t, forcing, bufs: StepBuffers,
                 vocab_size: int, backend: str, pack=None, guard=None):
        self.model, self.cache, self.state = model, cache, state
        # the forcing character rule (ops/decode/characters.py); `need` is its per-row state
        self.guard = guard
        self.need = torch.zeros(state.phase.shape[0], dtype=torch.int32, device=state.phase.device)
        self.budget_t, self.sampling_t, self.forcing = budget_t, sampling_t, forcing
        self.bufs, self.vocab_size, self.backend = bufs, vocab_size, backend
        self.pack = pack
        # on the CPU the host reads positions for free: attend over the filled prefix only
        self.host_positions = bufs.pos.device.type == "cpu"
        self.graph = None

    def first(self, logits: torch.Tensor) -> None:
        """The first generated token, from the prefill's last-position logits."""
        active = ~row_done_mask(self.state)
        tokens, logprobs = self._decode(logits)
        self.bufs.record(tokens, logprobs, active, self.state)

    def _decode(self, logits: torch.Tensor):
        if self.guard is not None:
            self.guard.mask_(logits, self.need, self.state, self.budget_t)
        tokens, logprobs = decode_step(logits, self.state, self.budget_t, self.sampling_t, self.forcing,
                                       vocab_size=self.vocab_size, backend=self.backend)
        if self.guard is not None:
            self.need.copy_(self.guard.advance(self.need, tokens))
        return tokens, logprobs

    def _step(self) -> None:
        b = self.bufs
        kv_len = int(b.pos.max()) + 1 if self.host_positions else None
        hidden = self.model.forward_cached(b.tokens[:, None], b.pos, self.cache, pack=self.pack, kv_len=kv_len)
        logits = self.model.logits(hidden[:, 0], pack=self.pack)
        active = ~row_done_mask(self.state)
        tokens, logprobs = self._decode(logits)
        b.pos.add_(1)
        b.record(tokens, logprobs, active, self.state)

    def capture(self, warmup: int = 2) -> int:
        """Captures one step in a CUDA graph. The warm-up steps are real decode steps (run on
        a side stream, as graph capture requires); returns how many were taken."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                self._step()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._step()  # recorded only: capture does not execute the kernels
        return warmup

    def step(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self._step()

    def select(self, idx: torch.Tensor) -> None:
        """Drop finished rows: keep rows ``idx`` of the state, the configuration, the buffers
        and the cache (moved to the cache's first rows; forward_cached uses the first B)."""
        n = idx.numel()
        for t in (self.cache.k, self.cache.v):
            t[:, :n] = t[:, idx]
        self.state = DecodeState(*[t[idx].contiguous() for t in self.state.tensors()])
        self.need = self.need[idx].contiguous()
        self.budget_t = type(self.budget_t)(*[t[idx].contiguous() for t in self.budget_t])
        self.sampling_t = type(self.sampling_t)(*[t[idx].contiguous() for t in self.sampling_t])
        self.bufs.select(idx)
        self.graph = None


def row_done_mask(state: DecodeState) -> torch.Tensor:
    """[B] bool device tensor: rows that finished (an error also finishes a row)."""
    return state.phase == DONE


class Harvest:
    """Host copies of finished rows, indexed by their row in the batch as given."""

    def __init__(self, batch: int):
        self.ids: list = [None] * batch
        self.logprobs: list = [None] * batch
        self.done, self.error = [False] * batch, [False] * batch
        self.thinking, self.waits, self.forced = [0] * batch, [0] * batch, [False] * batch

    def take(self, dec: Decoder, local: list[int], rows: list[int]) -> None:
        """Copies rows ``local`` of the decoder (original rows ``rows``) to the host."""
        if not local:
            return
        st, b = dec.state, dec.bufs
        idx = torch.as_tensor(local, device=b.out.device)
        n_tok = b.n_tokens[idx].cpu().tolist()
        out, lp = b.out[idx].cpu().tolist(), b.out_logprobs[idx].cpu().tolist()
        done, err = row_done_mask(st)[idx].cpu().tolist(), (st.error[idx] != 0).cpu().tolist()
        think, waits = st.thinking_tokens[idx].cpu().tolist(), st.waits_used[idx].cpu().tolist()
        forced = b.forced[idx].cpu().tolist()
        for j, r in enumerate(rows):
            self.ids[r], self.logprobs[r] = out[j][: n_tok[j]], lp[j][: n_tok[j]]
            self.done[r], self.error[r] = done[j], err[j]
            self.thinking[r], self.waits[r], self.forced[r] = think[j], waits[j], forced[j]


def prefill(model, prompt_ids: list[list[int]], pad_id: int, max_new: int, pack=None):
    """Prompts from position 0 into a fresh static cache of `longest prompt + max_new`
    positions: right-padded in one forward_cached call on a GPU, row by row on the CPU. Returns (cache, logits of each row's last
    prompt token [B, V], prompt lengths [B] on the device). `pack`: a DecodePack (CPU)."""
    device = next(model.parameters()).device
    B = len(prompt_ids)
    lengths = [len(p) for p in prompt_ids]
    L = max(lengths)
    cache = model.new_kv_cache(B, L + max_new, device=device)
    len_t = torch.as_tensor(lengths, dtype=torch.int64, device=device)
    if device.type == "cpu":
        # one row at a time: no work on padding (a batch of MATH500 prompts is ~70% padding
        # when padded to its longest), and each row attends over its own length only
        zero = torch.zeros(1, dtype=torch.int64)
        last = torch.cat([model.forward_cached(torch.as_tensor([p]), zero, cache.rows(b, b + 1), pack=pack,
                                               kv_len=len(p))[:, -1] for b, p in enumerate(prompt_ids)])
        return cache, model.logits(last, pack=pack), len_t
    ids = torch.full((B, L), int(pad_id), dtype=torch.int64)
    for b, p in enumerate(prompt_ids):
        ids[b, : len(p)] = torch.as_tensor(p, dtype=torch.int64)
    ids = ids.to(device)
    hidden = model.forward_cached(ids, torch.zeros(B, dtype=torch.int64, device=device), cache, pack=pack)
    last = hidden[torch.arange(B, device=device), len_t - 1]  # [B, H]: only these need logits
    return cache, model.logits(last, pack=pack), len_t


def stream_one(dec: Decoder, tokenizer, emit, max_new: int, steps: int) -> None:
    """One prompt printed as it is generated: one host sync per step, by nature."""
    shown: list[int] = []
    prev = ""
    while True:
        if int(dec.bufs.n_tokens[0].item()) > len(shown):
            shown.append(int(dec.bufs.tokens[0].item()))
            text = tokenizer.decode(shown)
            if text.startswith(prev):  # a multi-byte character may need more tokens
                emit(text[len(prev):])
                prev = text
        if bool(row_done_mask(dec.state).all().item()) or steps >= max_new:
            break
        dec.step()
        steps += 1
    emit("\n")


def compact(dec: Decoder, harvest: Harvest, rows: list[int], done: list[bool]) -> list[int]:
    """Copies the finished rows out and keeps the others in the decoder; returns the new
    decoder row -> batch row map."""
    gone = [i for i, d in enumerate(done) if d]
    keep = [i for i, d in enumerate(done) if not d]
    harvest.take(dec, gone, [rows[i] for i in gone])
    dec.select(torch.as_tensor(keep, device=dec.bufs.out.device))
    return [rows[i] for i in keep]


def decode_until_done(dec: Decoder, harvest: Harvest, max_new: int, steps: int, use_graph: bool,
                      check_every: int, compact_rows: bool) -> list[int]:
    """Decode steps until every row is done or `max_new` tokens were generated. Returns the
    decoder row -> batch row map of the rows still in the decoder."""
    device = dec.bufs.out.device
    rows = list(range(dec.bufs.out.shape[0]))
    if use_graph and max_new - steps > 2:
        steps += dec.capture(warmup=2)
    pinned = device.type == "cuda"
    mask_host = event = None
    while steps < max_new:
        dec.step()
        steps += 1
        if steps % check_every:
            continue
        if pinned:
            # read the done mask copied at the previous check (finished long ago, or nearly),
            # then queue a fresh copy: the GPU never waits for the host
            done_then = None
            if event is not None:
                event.synchronize()
                done_then = mask_host.tolist()
            if mask_host is None or mask_host.numel() != len(rows):
                mask_host = torch.zeros(len(rows), dtype=torch.bool, pin_memory=True)
            mask_host.copy_(row_done_mask(dec.state), non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            if done_then is None:
                continue
        else:
            done_then = row_done_mask(dec.state).tolist()
        n_left = sum(1 for d in done_then if not d)
        if not n_left:
            break
        if compact_rows and n_left <= len(rows) // 2:
            # half the rows or more have finished: stop spending work on them (done is final,
            # so a mask read one interval late is still right)
            rows = compact(dec, harvest, rows, done_then)
            event = None
            if use_graph and max_new - steps > 2:
                steps += dec.capture(warmup=2)
    return rows


@torch.inference_mode()
def run_batch(model, tokenizer, prompt_ids: list[list[int]], budget, sampling, forcing, max_new: int, emit,
              cuda_graph: bool, check_every: int, backend: str, compact_rows: bool = True,
              start_phase: str = "thinking", vocab_size: int | None = None, pack=None, guard=None) -> Harvest:
    """Prefills and decodes one batch; returns the rows' tokens and events on the host.
    start_phase="answer" decodes without a thinking phase: plain sampling until EOS or the
    budget's answer cap (what a greedy check of a trained model needs). Logit columns at or
    past `vocab_size` (default: the model's vocabulary rows) are never sampled. `pack`: a
    DecodePack of the model (CPU) used by every forward. `guard`: the forcing character rule
    (a CharacterGuard), applied to the logits before every decode step."""
    device = next(model.parameters()).device
    B = len(prompt_ids)
    cache, logits, len_t = prefill(model, prompt_ids, tokenizer.pad_id, max_new, pack)
    if vocab_size is None:
        vocab_size = int(getattr(model.config, "vocab_size", logits.shape[-1]))
    state = DecodeState.new(B, device, start_phase=start_phase)
    bufs = StepBuffers(B, max_new, device)
    bufs.pos.copy_(len_t)
    dec = Decoder(model, cache, state, budget.tensors(B, device), sampling.tensors(B, device), forcing, bufs,
                  vocab_size, backend, pack, guard)
    dec.first(logits)
    harvest = Harvest(B)
    if emit is not None:
        stream_one(dec, tokenizer, emit, max_new, steps=1)
        harvest.take(dec, [0], [0])
        return harvest
    use_graph = cuda_graph and device.type == "cuda"
    rows = decode_until_done(dec, harvest, max_new, 1, use_graph, check_every, compact_rows)
    harvest.take(dec, list(range(len(rows))), rows)
    return harvest

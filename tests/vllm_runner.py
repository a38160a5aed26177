"""Runs a vLLM engine in its own process for the tests: requests in, emitted ids out (JSON).

    python tests/vllm_runner.py job.json out.json

job.json: {"model": folder, "max_num_seqs": int, "processor": bool,
           "requests": [{"prompt_ids": [...], "extra_args": {...} | null, "max_tokens": int,
                         "arrive_at_step": int (0: before the first step),
                         "sampling": {vLLM SamplingParams keywords} | null}, ...]}
out.json: {"outputs": [{"token_ids": [...], "finish_reason": str}, ...], "steps": int,
           "batch_sizes": [...], "load_s": float, "decode_s": float}

The engine is driven step by step (LLMEngine.add_request / step) so that requests can
arrive while others run; `max_num_seqs` below the number of requests makes vLLM queue them
and fill freed batch slots (requests added, removed and moved inside its persistent batch).
vLLM spawns its engine processes, so this stays a script run under __main__.
"""
import json
import os
import sys
import time


def main(job_path: str, out_path: str) -> int:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    with open(job_path) as f:
        job = json.load(f)
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    kwargs = {}
    if job.get("processor", True):
        kwargs["logits_processors"] = ["s1kernels.integrations.vllm:BudgetForcingLogitsProcessor"]
    kwargs.update(job.get("engine_args", {}))
    if "reasoning_config" in kwargs:  # vLLM's own thinking budget (SamplingParams.thinking_token_budget)
        from vllm.config import ReasoningConfig

        kwargs["reasoning_config"] = ReasoningConfig(**kwargs["reasoning_config"])
    t0 = time.perf_counter()
    llm = LLM(model=job["model"], dtype="float32", max_model_len=job.get("max_model_len", 1024), enforce_eager=True,
              max_num_seqs=job.get("max_num_seqs", 8), seed=0, **kwargs)
    load_s = time.perf_counter() - t0
    engine = llm.llm_engine
    reqs = job["requests"]
    pending = sorted(range(len(reqs)), key=lambda i: reqs[i].get("arrive_at_step", 0))
    outputs: dict[str, dict] = {}
    step, batch_sizes = 0, []
    t0 = time.perf_counter()
    while pending or engine.has_unfinished_requests():
        while pending and reqs[pending[0]].get("arrive_at_step", 0) <= step:
            i = pending.pop(0)
            r = reqs[i]
            params = SamplingParams(max_tokens=r["max_tokens"], temperature=0.0, extra_args=r.get("extra_args"),
                                    **(r.get("sampling") or {}))
            engine.add_request(str(i), TokensPrompt(prompt_token_ids=r["prompt_ids"]), params)
        done = engine.step()
        batch_sizes.append(len(done))
        for o in done:
            if o.finished:
                c = o.outputs[0]
                outputs[o.request_id] = {"token_ids": list(c.token_ids), "finish_reason": c.finish_reason,
                                         "text": c.text}
        step += 1
    decode_s = time.perf_counter() - t0
    with open(out_path, "w") as f:
        json.dump({"outputs": [outputs[str(i)] for i in range(len(reqs))], "steps": step,
                   "load_s": load_s, "decode_s": decode_s}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

"""s1kernels inside transformers / TRL.

- `patch(model, vocab_size=len(tokenizer))`: Qwen2 / Llama / Qwen3 causal LMs compute their
  training loss with the fused `linear_cross_entropy` (no [tokens x vocab] logits); works
  with `Trainer`, TRL's `SFTTrainer` and padding-free packing. See `hf_loss`.
- `BudgetForcingProcessor` (+ `.stopping_criteria()`): s1 budget forcing inside
  `model.generate`, through the fused decode step. See `hf_generation`.
"""
from s1kernels import extras

extras.require("transformers", "s1kernels.integrations", extra="hf")

from s1kernels.integrations.hf_generation import (  # noqa: E402
    BudgetForcingProcessor, BudgetForcingStoppingCriteria, forcing_for_tokenizer)
from s1kernels.integrations.hf_loss import is_patched, packed_cu_seqlens, patch, unpatch  # noqa: E402

__all__ = ["patch", "unpatch", "is_patched", "packed_cu_seqlens", "BudgetForcingProcessor",
           "BudgetForcingStoppingCriteria", "forcing_for_tokenizer"]

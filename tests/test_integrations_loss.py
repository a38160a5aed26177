"""`s1kernels.integrations.transformers.patch`: the fused loss inside transformers models.

The oracle is the unpatched model (transformers' own logits + cross-entropy): loss and every
parameter gradient must agree, for Qwen2, Llama and Qwen3, on padded batches, with
`num_items_in_batch`, on padding-free packed batches, with a padded vocabulary and with the
per-sample mean. Then one `Trainer` run and one TRL `SFTTrainer` run (padding-free packing)
train the same as the unpatched model.
"""
import copy
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")

from s1kernels.integrations.transformers import is_patched, packed_cu_seqlens, patch, unpatch  # noqa: E402

V = 131


def _tiny(family: str, vocab: int = V):
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128)
    if family == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))
    elif family == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common))
    else:
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(head_dim=8, **common))
    return model.train()


def _loss_and_grads(model, **inputs):
    model.zero_grad(set_to_none=True)
    out = model(**inputs)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(a, b, rtol=1e-4, atol=1e-6):
    (la, ga), (lb, gb) = a, b
    torch.testing.assert_close(la, lb, rtol=rtol, atol=atol)
    assert ga.keys() == gb.keys()
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=rtol, atol=1e-5, msg=name)


def _batch(b=3, t=11, vocab=V):
    ids = torch.randint(0, vocab, (b, t))
    labels = ids.clone()
    labels[0, :4] = -100  # a prompt
    labels[-1, -3:] = -100  # padding
    mask = torch.ones(b, t, dtype=torch.long)
    mask[-1, -3:] = 0
    return ids, labels, mask


@pytest.mark.parametrize("family", ["qwen2", "llama", "qwen3"])
def test_patched_loss_and_grads_equal_transformers(family):
    model = _tiny(family)
    fused = patch(copy.deepcopy(model))
    ids, labels, mask = _batch()
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels)
    _assert_same(_loss_and_grads(fused, **inputs), _loss_and_grads(model, **inputs))
    out = fused(**inputs)
    assert out.logits is None  # the point: no [tokens x vocab] logits


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_num_items_in_batch_is_the_denominator(family):
    model = _tiny(family)
    fused = patch(copy.deepcopy(model))
    ids, labels, mask = _batch()
    n = torch.tensor(57)
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=n)
    _assert_same(_loss_and_grads(fused, **inputs), _loss_and_grads(model, **inputs))


def _packed(lengths=(5, 9, 3), vocab=V):
    ids = torch.randint(0, vocab, (1, sum(lengths)))
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
    labels = ids.clone()
    starts = torch.cumsum(torch.tensor((0,) + lengths[:-1]), 0)
    labels[0, starts] = -100  # as DataCollatorWithFlattening: no target crosses a boundary
    return ids, position_ids, labels


def test_padding_free_packed_batch_equals_transformers():
    model = _tiny("qwen2")
    fused = patch(copy.deepcopy(model))
    ids, position_ids, labels = _packed()
    inputs = dict(input_ids=ids, position_ids=position_ids, labels=labels)
    _assert_same(_loss_and_grads(fused, **inputs), _loss_and_grads(model, **inputs))


def test_sequence_mean_over_packed_samples():
    lengths = (5, 9, 3)
    model = _tiny("llama")
    fused = patch(copy.deepcopy(model), normalize="sequence")
    assert fused.accepts_loss_kwargs is False  # Trainer then averages micro-batches itself
    ids, position_ids, labels = _packed(lengths)
    got = fused(input_ids=ids, position_ids=position_ids, labels=labels).loss
    logits = model(input_ids=ids, position_ids=position_ids).logits[0].float()
    target = torch.nn.functional.pad(labels[0], (0, 1), value=-100)[1:]
    per_tok = torch.nn.functional.cross_entropy(logits, target, reduction="none", ignore_index=-100)
    means, start = [], 0
    for n in lengths:
        seg = slice(start, start + n)
        valid = target[seg] != -100
        if valid.any():
            means.append(per_tok[seg][valid].mean())
        start += n
    torch.testing.assert_close(got, torch.stack(means).mean(), rtol=1e-5, atol=1e-6)
    assert packed_cu_seqlens(position_ids).tolist() == [0, 5, 14, 17]


def test_padded_vocabulary_rows_take_no_probability():
    real = 120
    model = _tiny("qwen2", vocab=128)
    fused = patch(copy.deepcopy(model), vocab_size=real)
    ids, labels, mask = _batch(vocab=real)
    got = fused(input_ids=ids, attention_mask=mask, labels=labels).loss
    logits = model(input_ids=ids, attention_mask=mask).logits[..., :real].float()
    target = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    want = torch.nn.functional.cross_entropy(logits.reshape(-1, real), target.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    plain = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert not torch.allclose(got, plain)  # the padded rows did take mass before


def test_eval_mode_and_generation_keep_the_original_forward():
    model = _tiny("qwen2").eval()
    fused = patch(copy.deepcopy(model))
    ids, labels, mask = _batch()
    a = fused(input_ids=ids, attention_mask=mask, labels=labels)
    b = model(input_ids=ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(a.logits, b.logits)
    torch.testing.assert_close(a.loss, b.loss)
    out_a = fused.generate(ids[:1], max_new_tokens=4, do_sample=False)
    out_b = model.generate(ids[:1], max_new_tokens=4, do_sample=False)
    assert torch.equal(out_a, out_b)


def test_patch_class_and_unpatch():
    cls = transformers.LlamaForCausalLM
    before = cls.forward
    model = _tiny("llama")
    ref = copy.deepcopy(model)
    try:
        patch(cls)
        assert is_patched(cls) and not is_patched(model)
        ids, labels, mask = _batch()
        inputs = dict(input_ids=ids, attention_mask=mask, labels=labels)
        assert model(**inputs).logits is None
        unpatch(cls)
        assert cls.forward is before
        assert model(**inputs).logits is not None
    finally:
        unpatch(cls)
    m = patch(ref)
    unpatch(m)
    assert not is_patched(m) and "forward" not in vars(m)


def test_bad_arguments_are_named():
    model = _tiny("qwen2")
    with pytest.raises(ValueError, match="normalize"):
        patch(model, normalize="per-token")
    with pytest.raises(ValueError, match="vocab_size"):
        patch(model, vocab_size=0)
    with pytest.raises(TypeError, match="model"):
        patch("qwen2")
    fused = patch(copy.deepcopy(model))
    ids, labels, _ = _batch()
    with pytest.raises(ValueError, match="labels"):
        fused(input_ids=ids, shift_labels=labels[:, :-2])


def _trainer_losses(model, tmp_path, patched: bool):
    from torch.utils.data import Dataset

    class Rows(Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.rows = []
            for i in range(8):
                n = 6 + i % 4
                ids = torch.randint(0, V, (n,), generator=g)
                labels = ids.clone()
                labels[: 2 + i % 3] = -100
                self.rows.append(dict(input_ids=ids, labels=labels))

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            return self.rows[i]

    def collate(rows):
        t = max(len(r["input_ids"]) for r in rows)
        ids = torch.zeros(len(rows), t, dtype=torch.long)
        labels = torch.full((len(rows), t), -100)
        mask = torch.zeros(len(rows), t, dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = r["input_ids"], r["labels"], 1
        return dict(input_ids=ids, labels=labels, attention_mask=mask)

    if patched:
        patch(model)
    args = transformers.TrainingArguments(output_dir=str(tmp_path / ("p" if patched else "u")), max_steps=2,
                                          per_device_train_batch_size=2, gradient_accumulation_steps=2,
                                          learning_rate=1e-2, optim="sgd", report_to=[], use_cpu=True, logging_steps=1,
                                          save_strategy="no", seed=0, disable_tqdm=True, dataloader_num_workers=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Rows(), data_collator=collate)
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h], model


def test_trainer_steps_equal_unpatched(tmp_path):
    # plain SGD: Adam would blow the rounding noise of gradients that are exactly zero in
    # theory (the key biases under softmax) up to full-size steps
    model = _tiny("qwen2")
    plain, m1 = _trainer_losses(copy.deepcopy(model), tmp_path, patched=False)
    fused, m2 = _trainer_losses(copy.deepcopy(model), tmp_path, patched=True)
    assert len(plain) == len(fused) == 2
    torch.testing.assert_close(torch.tensor(fused), torch.tensor(plain), rtol=1e-4, atol=1e-5)
    for (n, p1), p2 in zip(m1.named_parameters(), m2.parameters()):
        torch.testing.assert_close(p2, p1, rtol=1e-4, atol=1e-5, msg=n)


def test_trl_sft_padding_free_uses_the_fused_loss(tmp_path, monkeypatch):
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from s1kernels.data import build_default_tokenizer
    from s1kernels.integrations import hf_loss

    folder = tmp_path / "tok"
    build_default_tokenizer().save(str(folder))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(folder, "tokenizer.json"),
                                               eos_token="<|im_end|>", pad_token="<|endoftext|>")
    base = _tiny("qwen2", vocab=len(tok))
    rows = [{"prompt": f"Start {i}\nA + {i} = ?", "completion": f"answer {i * 3 % 10}"} for i in range(8)]
    ds = datasets.Dataset.from_list(rows)
    calls = []
    real = hf_loss._trl_fused_output
    monkeypatch.setattr(hf_loss, "_trl_fused_output", lambda *a, **k: calls.append(1) or real(*a, **k))
    history = {}
    for name in ("trl", "s1kernels"):
        args = trl.SFTConfig(output_dir=str(tmp_path / name), max_steps=2, per_device_train_batch_size=4,
                             padding_free=True, packing=True, max_length=64, report_to=[], use_cpu=True,
                             logging_steps=1, save_strategy="no", learning_rate=1e-3, seed=0, disable_tqdm=True,
                             dataloader_num_workers=0)
        trainer = trl.SFTTrainer(model=copy.deepcopy(base), args=args, train_dataset=ds, processing_class=tok)
        if name == "s1kernels":
            patch(trainer.model)  # after the trainer: TRL's fused-head calls now reach s1kernels
        trainer.train()
        history[name] = [(h["loss"], h["entropy"]) for h in trainer.state.log_history if "loss" in h]
    assert len(calls) == 2  # one fused call per step
    torch.testing.assert_close(torch.tensor(history["s1kernels"]), torch.tensor(history["trl"]), rtol=1e-4, atol=1e-5)

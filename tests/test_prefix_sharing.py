"""A training batch's shared prompt prefix, run once: same hidden states, loss and gradients; fewer tokens."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from empathy_utils.artifacts import RunPaths
from empathy_utils.config import StudyConfig, load_config, profile_path
from empathy_utils.models import load_model
from empathy_utils.prefix_sharing import decoder_of, plan_segments, shared_length, shared_prompt_prefix
from empathy_utils.stages import build_datasets
from empathy_utils.training import sharing_prefix, train_dpo, train_sft

PREFIX = 40


@pytest.fixture
def lora_model(tiny_spec):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(load_model(tiny_spec), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                            task_type="CAUSAL_LM"))
    for name, weight in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; give the adapter an effect, as after some training
            weight.data.normal_(0, 0.05)
    return model.train()


def right_padded(model, lengths, prefix=PREFIX, seed=1):
    """Rows that begin with the same ``prefix`` tokens, then differ, right-padded as TRL pads them."""
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    shared = torch.randint(5, vocab, (prefix,), generator=g)
    rows = [torch.cat([shared, torch.randint(5, vocab, (n - prefix,), generator=g)]) for n in lengths]
    ids = torch.zeros(len(rows), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return ids, mask


def loss_and_gradients(model, ids, mask):
    """The SFT loss on the tokens after the prefix, and the LoRA weights' gradients."""
    model.zero_grad()
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :PREFIX] = -100
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def counting_tokens(model):
    """How many tokens the decoder embeds, call by call."""
    counts = []
    decoder_of(model).embed_tokens.register_forward_hook(lambda module, args, out: counts.append(args[0].numel()))
    return counts


def test_the_prefix_runs_once_and_hidden_states_loss_and_gradients_are_the_same(lora_model):
    ids, mask = right_padded(lora_model, [70, 55, 64, 48])
    rows, width = ids.shape
    counts = counting_tokens(lora_model)
    plain_loss, plain_grads = loss_and_gradients(lora_model, ids, mask)
    with torch.no_grad():
        plain_hidden = decoder_of(lora_model)(input_ids=ids, attention_mask=mask).last_hidden_state
    assert counts == [rows * width] * 2
    counts.clear()
    with shared_prompt_prefix(lora_model) as stats:
        shared_loss, shared_grads = loss_and_gradients(lora_model, ids, mask)
        with torch.no_grad():
            shared_hidden = decoder_of(lora_model)(input_ids=ids, attention_mask=mask).last_hidden_state
    assert counts == [PREFIX, rows * (width - PREFIX)] * 2, "the prefix for one row, then every row's remainder"
    assert stats.shared_batches == stats.batches == 2
    assert stats.tokens_run == 2 * (PREFIX + rows * (width - PREFIX))
    attended = mask.bool()
    torch.testing.assert_close(shared_hidden[attended], plain_hidden[attended], rtol=1e-5, atol=1e-5)
    assert shared_loss == pytest.approx(plain_loss, rel=1e-6)
    for name, grad in plain_grads.items():
        assert grad.abs().sum() > 0
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-4, atol=1e-7)


def _assert_same_computation(model, ids, mask, expected_counts):
    """Shared and plain runs: the decoder embeds ``expected_counts`` tokens per call when sharing, and the
    hidden states, the loss and every LoRA gradient agree within float tolerance."""
    counts = counting_tokens(model)
    plain_loss, plain_grads = loss_and_gradients(model, ids, mask)
    with torch.no_grad():
        plain_hidden = decoder_of(model)(input_ids=ids, attention_mask=mask).last_hidden_state
    counts.clear()
    with shared_prompt_prefix(model) as stats:
        shared_loss, shared_grads = loss_and_gradients(model, ids, mask)
        with torch.no_grad():
            shared_hidden = decoder_of(model)(input_ids=ids, attention_mask=mask).last_hidden_state
    assert counts == expected_counts * 2
    assert stats.shared_batches == 2
    attended = mask.bool()
    torch.testing.assert_close(shared_hidden[attended], plain_hidden[attended], rtol=1e-5, atol=1e-5)
    assert shared_loss == pytest.approx(plain_loss, rel=1e-6)
    for name, grad in plain_grads.items():
        assert grad.abs().sum() > 0
        # float tolerance relative to the tensor's largest gradient (summation order differs)
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-4, atol=1e-5 * float(grad.abs().max()))
    return stats


def test_pairs_that_agree_past_the_batch_prefix_run_their_own_stretch_once(lora_model):
    """DPO's layout: chosen and rejected replies to the same prompt, after definitions the whole batch shares."""
    g = torch.Generator().manual_seed(3)
    vocab = lora_model.config.vocab_size
    shared, dialogues = torch.randint(5, vocab, (PREFIX,), generator=g), torch.randint(5, vocab, (2, 30), generator=g)
    lengths = [20, 12, 25, 9]  # replies: chosen 1, chosen 2, rejected 1, rejected 2
    rows = [torch.cat([shared, dialogues[i % 2], torch.randint(5, vocab, (n,), generator=g)]) for i, n in enumerate(lengths)]
    width = max(len(r) for r in rows)
    ids, mask = torch.zeros(4, width, dtype=torch.long), torch.zeros(4, width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    stats = _assert_same_computation(lora_model, ids, mask, [PREFIX, 2 * 30, 4 * (width - PREFIX - 30)])
    assert stats.tokens_run == 2 * (PREFIX + 2 * 30 + 4 * (width - PREFIX - 30))


def test_copies_of_a_left_padded_prompt_run_it_once(lora_model):
    """TRL's SDFT layout: each prompt twice (two sampled replies), prompts left-padded, replies right-padded."""
    g = torch.Generator().manual_seed(4)
    vocab = lora_model.config.vocab_size
    prompts = [torch.randint(5, vocab, (n,), generator=g) for n in (50, 42)]
    replies = [torch.randint(5, vocab, (n,), generator=g) for n in (14, 6, 10, 14)]
    prompt_width, reply_width = 50, 14
    ids = torch.zeros(4, prompt_width + reply_width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, reply in enumerate(replies):
        prompt = prompts[i // 2]
        ids[i, prompt_width - len(prompt) : prompt_width], mask[i, prompt_width - len(prompt) : prompt_width] = prompt, 1
        ids[i, prompt_width : prompt_width + len(reply)], mask[i, prompt_width : prompt_width + len(reply)] = reply, 1
    segments = plan_segments(ids, mask)
    assert [(s.start, s.end, s.rows.tolist(), s.member.tolist()) for s in segments] == [(0, 50, [0, 2], [0, 0, 1, 1])]
    _assert_same_computation(lora_model, ids, mask, [2 * prompt_width, 4 * reply_width])


def test_short_stretches_join_the_next_segment_and_no_stretch_means_no_plan():
    ids = torch.tensor([[1] * 20 + [2] * 5 + [3] * 20 + [7],
                        [1] * 20 + [2] * 5 + [3] * 20 + [8],
                        [1] * 20 + [4] * 5 + [5] * 20 + [9],
                        [1] * 20 + [4] * 5 + [6] * 20 + [9]])
    plan = [(s.start, s.end, s.rows.tolist()) for s in plan_segments(ids)]
    # rows 2 and 3 agree 5 positions past the batch's 20: too short to run on its own, so from 20 to 45
    # they run apart, and rows 0 and 1 (agreeing up to 45) together
    assert plan == [(0, 20, [0]), (20, 45, [0, 2, 3])]
    assert [(s.start, s.end, s.rows.tolist()) for s in plan_segments(ids, min_tokens=30)] == [(0, 45, [0, 2, 3])]
    assert plan_segments(ids, min_tokens=50) == []
    first_differs = torch.cat([torch.arange(4)[:, None], ids], dim=1)
    assert plan_segments(first_differs) == [], "rows that differ from the first token share nothing"


def test_batches_it_cannot_serve_exactly_take_the_models_own_forward(lora_model):
    ids, mask = right_padded(lora_model, [30, 30], prefix=4)  # shares fewer than 16 tokens
    decoder = decoder_of(lora_model)
    with torch.no_grad():
        plain = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
        with shared_prompt_prefix(lora_model) as stats:
            short = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
            one_row = decoder(input_ids=ids[:1], attention_mask=mask[:1])
            cached = decoder(input_ids=ids, attention_mask=mask, use_cache=True)
            decoder(input_ids=ids[:, -1:], attention_mask=torch.cat([mask, mask[:, -1:]], 1),
                    past_key_values=cached.past_key_values, use_cache=True)
    assert torch.equal(short, plain), "no shared prefix: the model's own forward, bit for bit"
    assert stats.shared_batches == 0
    assert stats.batches == 2, "one row and a call with a cache are not counted"
    assert one_row.last_hidden_state.shape[0] == 1


def test_gradient_checkpointing_and_a_disabled_switch_leave_the_model_alone(lora_model):
    ids, mask = right_padded(lora_model, [60, 50])
    decoder = decoder_of(lora_model)
    with shared_prompt_prefix(lora_model, enabled=False) as stats:
        assert stats is None
        assert "forward" not in decoder.__dict__
    decoder.gradient_checkpointing = True
    with shared_prompt_prefix(lora_model) as stats:
        loss_and_gradients(lora_model, ids, mask)
    assert stats.shared_batches == 0
    assert "forward" not in decoder.__dict__, "the decoder's own forward is back after the block"


def test_shared_length_stops_at_the_first_difference_padding_or_last_token():
    ids = torch.tensor([[1, 2, 3, 4, 5], [1, 2, 3, 9, 9], [1, 2, 3, 4, 0]])
    assert shared_length(ids, torch.ones_like(ids)) == 3
    assert shared_length(ids[:1].repeat(2, 1), torch.ones(2, 5, dtype=torch.long)) == 4, "each row keeps one token"
    mask = torch.ones_like(ids)
    mask[1, 1] = 0
    assert shared_length(ids, mask) == 1


def test_lora_dropout_turns_sharing_off():
    assert sharing_prefix(StudyConfig.from_dict({}), StudyConfig.from_dict({}).sft)
    cfg = StudyConfig.from_dict({"lora": {"dropout": 0.05}})
    assert not sharing_prefix(cfg, cfg.sft) and not sharing_prefix(cfg, cfg.dpo)
    cfg = StudyConfig.from_dict({"dpo": {"share_prompt_prefix": False}})
    assert sharing_prefix(cfg, cfg.sft) and not sharing_prefix(cfg, cfg.dpo)


def _train(cfg, run_dir, step):
    folder = RunPaths(run_dir).sft_model if step == "sft" else RunPaths(run_dir).dpo_model
    shutil.rmtree(folder, ignore_errors=True)
    summary = (train_sft if step == "sft" else train_dpo)(cfg, run_dir)
    history = json.loads((folder / "train_log.json").read_text())["history"]
    return summary, [h["loss"] for h in history if "loss" in h], load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.parametrize("step", ["sft", "dpo"])
def test_training_with_the_shared_prefix_runs_fewer_tokens_to_the_same_losses_and_adapter(tmp_path, tiny_spec, step):
    base = ["sft.max_steps=2", "dpo.max_steps=2", "sft.logging_steps=1", "dpo.logging_steps=1"]
    cfg = load_config(profile_path("tiny"), base + [f"{step}.share_prompt_prefix=false"])
    build_datasets(cfg, tmp_path)
    if step == "dpo":
        train_sft(cfg, tmp_path)
    plain, plain_losses, plain_weights = _train(cfg, tmp_path, step)
    shared_cfg = load_config(profile_path("tiny"), base)
    shared, shared_losses, shared_weights = _train(shared_cfg, tmp_path, step)
    assert plain["prefix_sharing"] is None and plain["prefix_sharing_text"] == "off"
    assert shared["prefix_sharing_text"].startswith(f"on: {shared['prefix_sharing']['shared_batches']} of ")
    sharing = shared["prefix_sharing"]
    assert sharing["shared_batches"] > 0
    assert sharing["tokens_run"] < sharing["tokens_in_batches"]
    assert shared["tokens"] == plain["tokens"], "the same batches"
    assert shared["fingerprint"] != plain["fingerprint"], "not bit-identical, so not the same adapter"
    assert shared_losses == pytest.approx(plain_losses, rel=1e-4)
    for name, weight in plain_weights.items():
        torch.testing.assert_close(shared_weights[name], weight, rtol=1e-3, atol=1e-6)

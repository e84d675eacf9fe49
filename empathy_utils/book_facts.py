"""Numbers the book's prose states that are not results: the papers' reported settings, the make-up
of the embedded corpus, and the training settings a run actually used.

The book never types a number (tests/test_book_prose.py). The SFT and DPO stage notebooks glue
these values, so the methods chapter prints what the run used and what the papers report from one
place each, and a changed profile cannot leave a stale number behind."""

from __future__ import annotations

from .config import StudyConfig

# Xie et al. (SIGDIAL 2025), as reported in the paper; tests check that the defaults and limits the
# code uses agree with them.
XIE_2025 = {
    "lvh_dialogues": 2000,        # LLMs-vs-Humans prompts, five rated replies each
    "test_dialogues": 250,        # fewer than two Good replies
    "train_dialogues": 1750,
    "m3_sft_rows": 950,           # M3: train rows used for SFT ...
    "m3_dpo_rows": 800,           # ... and for DPO pairs
    "reply_words": 28,            # what the prompts ask for
    "reply_max_words": 97,
    "lora_rank": 8,
    "learning_rate": 5e-5,
    "epochs": 3,
    "batch_size": 2,
    "dpo_beta": 0.1,
}


# The papers' headline claims, which the conclusions chapter sets beside this study's answers.
# Xie et al.'s per-model tables are not public: only these headlines (win rates over their 250 test
# dialogues, judged by GPT-4o and by Gemini).
XIE_2025_CLAIMS = {
    "win_rate_vs_base": 0.90,       # SFT->DPO students beat the base SLM "above 90 %"
    "targeted_gain_points": 10,     # targeted prompts beat the naive (direct) prompt by "more than 10 points"
    "teacher": "GPT-4o",
    "students": "Llama-3.1-8B and Mistral-7B",
    "judges": "GPT-4o and Gemini",
}
# Son & So, Table 1: for each of Llama-3-8B, Mistral-7B and Gemma-7B, +SFT+DPO scores above the base
# model on BLEU-4, ROUGE-L and Distinct, and below it on their own (undefined) DBT metric.
SON_SO_TABLE1_DIRECTION = {"BLEU-4": "up", "ROUGE-L": "up", "Distinct": "up", "their DBT metric": "down",
                           "models": "Llama-3-8B, Mistral-7B and Gemma-7B"}
# PRIDE (Wu, Zhu & Wang 2026): the abstract's claim; it gives no number.
PRIDE_ABSTRACT_CLAIM = ("its student is competitive with, and sometimes better than, larger teachers in accuracy "
                        "and semantic relevance, on multi-modal and text-only empathetic dialogue")


def claim_sentences() -> dict:
    """The papers' claims as the conclusions chapter glues them (each cited in the chapter's prose)."""
    x = XIE_2025_CLAIMS
    d = SON_SO_TABLE1_DIRECTION
    metrics = [m for m in d if m != "models"]
    return {
        "claim_xie_base": (f"Xie et al. report that students fine-tuned SFT→DPO on targeted-prompt datasets beat "
                           f"the base student with a win rate above {100 * x['win_rate_vs_base']:.0f} % ({x['teacher']} "
                           f"teacher; {x['students']} students; judged by {x['judges']})."),
        "claim_xie_targeted": (f"Xie et al. report that targeted prompts beat the naive prompt by more than "
                               f"{x['targeted_gain_points']} points of win rate."),
        "claim_son_so": (f"Son & So's Table 1 shows +SFT+DPO moving each metric the same way for all three of "
                         f"their models ({d['models']}): " + ", ".join(f"{m} {d[m]}" for m in metrics) + "."),
        "claim_pride": f"The PRIDE abstract reports that {PRIDE_ABSTRACT_CLAIM}.",
    }


def scientific(value: float) -> str:
    """``5e-05`` -> ``"5e-5"``, ``0.0002`` -> ``"2e-4"``: learning rates as papers write them."""
    mantissa, exponent = f"{value:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def paper_facts() -> dict:
    """The papers' reported figures, keyed ``xie_<name>`` (learning rate as text)."""
    facts = {f"xie_{key}": value for key, value in XIE_2025.items()}
    facts["xie_learning_rate"] = scientific(XIE_2025["learning_rate"])
    return facts


def corpus_facts() -> dict:
    """What the embedded corpus holds, counted from its file (not typed)."""
    from .data import load_embedded_corpus

    corpus = load_embedded_corpus()
    per_emotion = corpus.groupby("emotion").size()
    return {
        "corpus_situations": len(corpus),
        "corpus_emotions": int(per_emotion.size),
        "corpus_per_emotion": int(per_emotion.min()) if per_emotion.min() == per_emotion.max() else
        f"{per_emotion.min()} to {per_emotion.max()}",
        "corpus_test": int((corpus["split"] == "test").sum()),
        "corpus_train": int((corpus["split"] == "train").sum()),
    }


def book_facts() -> dict:
    return {**paper_facts(), **corpus_facts()}


def training_settings(cfg: StudyConfig, step: str) -> dict:
    """The settings one training step (``sft`` or ``dpo``) ran with, worded for the methods table."""
    from .training import train_in_bf16

    settings = getattr(cfg, step)
    if settings.max_steps > 0:  # max_steps overrides epochs (smoke runs)
        length = f"{settings.max_steps} step" + ("s" if settings.max_steps != 1 else "")
    else:
        length = f"{settings.epochs:g} epoch" + ("s" if settings.epochs != 1 else "")
    if settings.warmup == 0:
        warmup = "no warmup"
    elif settings.warmup < 1:
        warmup = f"warmup {settings.warmup:.0%} of the steps"
    else:
        warmup = f"warmup {int(settings.warmup)} steps"
    batch = f"{settings.batch_size}"
    if settings.gradient_accumulation_steps > 1:
        batch += f" × {settings.gradient_accumulation_steps} accumulated"
    values = {
        "learning_rate_text": scientific(settings.learning_rate),
        "training_length": length,
        "batch_text": batch,
        "max_length": settings.max_length,
        "schedule_text": f"{settings.lr_scheduler_type}, {warmup}",
        "precision": "bf16 (mixed)" if train_in_bf16(settings.bf16) else "fp32",
    }
    if step == "dpo":
        values["beta_text"] = f"{settings.beta:g}"
        values["loss_text"] = settings.loss_type
    if step == "sft":  # one adapter for both steps: DPO continues the SFT adapter
        lora = cfg.lora
        values.update({"lora_r": lora.r, "lora_alpha": lora.alpha, "lora_dropout_text": f"{lora.dropout:g}",
                       "lora_targets": "all linear layers" if lora.target_modules == "all-linear"
                       else str(lora.target_modules)})
    return values

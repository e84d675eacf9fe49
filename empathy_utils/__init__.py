"""empathy_utils: the tested library behind the empathy-distillation book.

Notebooks hold a parameters cell and a few calls into this package; all logic lives here.
Heavy dependencies (torch, transformers, TRL) are imported lazily, so ``import empathy_utils``
stays fast for the command line.
"""

from __future__ import annotations

from .config import StudyConfig, load_config
from .errors import BackendError, ConfigError, DataError, StudyError
from .lazy import lazy_exports

__version__ = "0.1.0"

# name -> module that defines it (imported on first use)
_LAZY = {
    "RunPaths": "artifacts",
    "build_datasets": "stages",
    "card_table": "presentation",
    "run_facts": "stages",
    "example_rows": "stages",
    "dataset_statistics": "stages",
    "train_sft": "training",
    "train_dpo": "training",
    "generate_replies": "stages",
    "judge_students": "stages",
    "winrate_table": "presentation",
    "validate_judges": "stages",
    "validation_glue_values": "presentation",
    "judge_glue_values": "presentation",
    "emotion_table": "presentation",
    "read_jsonl": "data",
    "load_llms_vs_humans": "data",
    "load_embedded_corpus": "data",
    "selection_counts": "distillation",
    "summarize": "winrate",
    "PairwiseLLMJudge": "judges",
    "LocalBackend": "backends",
    "OpenAIBackend": "backends",
    "CachedBackend": "backends",
    "ResponseCache": "backends",
    "Sampling": "backends",
    "load_prompt": "prompts",
    "all_prompts": "prompts",
    "load_model_and_tokenizer": "models",
    "training_table": "presentation",
    "run_variants": "variants",
    "variants_table": "presentation",
    "variants_heatmap": "plotting",
    "construction_effect": "variants",
    "glue_values": "notebook",
    "setup_notebook": "notebook",
    "winrate_sentences": "presentation",
    "judge_accuracy_sentence": "presentation",
    "make_judge": "judging",
    "glue_winrates": "notebook",
    "show": "notebook",
    "run_pride": "pride",
    "pride_data": "pride",
    "pride_train": "pride",
    "pride_generate": "pride",
    "pride_judge": "pride",
    "pride_card_table": "pride",
    "pride_examples": "pride",
    "pride_training_figure": "pride",
    "pride_ablation_table": "pride",
    "pride_glue_facts": "pride",
    "pride_method": "pride",
    "pride_reply_facts": "pride",
    "pride_training_table": "pride",
    "pride_reply_glue": "pride",
    "load_esconv": "esconv",
    "run_dbt": "dbt",
    "dbt_data": "dbt",
    "dbt_train": "dbt",
    "dbt_generate": "dbt",
    "dbt_evaluate": "dbt",
    "dbt_card_table": "dbt",
    "dbt_agreement_table": "dbt",
    "dbt_rows_table": "dbt",
    "dbt_paper_table": "dbt",
    "dbt_side_by_side": "dbt",
    "dbt_example": "dbt",
    "dbt_glue_facts": "dbt",
    "dbt_describe": "dbt",
    "paper_facts": "dbt.paper",
}

__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = ["StudyConfig", "load_config", "StudyError", "ConfigError", "DataError", "BackendError", *_LAZY]

"""PRIDE: privileged-information distillation into the small student (Wu, Zhu & Wang 2026;
book/pride.md), with its baselines and ablations.

- :mod:`.losses` — reverse KL and multi-bandwidth Gaussian MMD;
- :mod:`.module` — the gated multi-source attention over the PI, the student wrapper, save/load;
- :mod:`.data` — examples with PI (the run's data or ESConv), the reasoning teacher, token alignment;
- :mod:`.train` — the PRIDE trainer (transformers ``Trainer``) and the TRL SFT / SDFT baselines;
- :mod:`.stage` — the stage the notebook ``08_pride`` runs, step by step (its tables and sentences are in
  :mod:`.presenting`);
- :mod:`.settings` — the ``pride`` params section (imported by the config; nothing heavy there).

The names below are what notebooks use (``eu.pride_data(cfg, run_dir)`` …); this ``__init__`` imports
none of them until one is used (:mod:`empathy_utils.lazy`), so the config can import the settings
without a cycle.
"""

from ..lazy import lazy_exports

_EXPORTS = {
    "LABELS": "stage",
    "PridePaths": "stage",
    "comparisons": "stage",
    "example_table": "stage",
    "reply_facts": "stage",
    "run_pride": "stage",
    "training_figure": "stage",
    "pride_generate": "stage:generate_replies",
    "pride_judge": "stage:judge_students",
    "pride_data": "stage:prepare_data",
    "pride_train": "stage:train_students",
    "pride_examples": "stage:example_table",
    "pride_training_figure": "stage:training_figure",
    "pride_reply_facts": "stage:reply_facts",
    "pride_card_table": "presenting",
    "pride_training_table": "presenting",
    "pride_ablation_table": "presenting",
    "pride_glue_facts": "presenting",
    "pride_method": "presenting",
    "pride_reply_glue": "presenting",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)

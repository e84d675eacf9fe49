"""PRIDE: privileged-information distillation into the small student (Wu, Zhu & Wang 2026;
book/pride.md), with its baselines and ablations.

- :mod:`.losses` — reverse KL and multi-bandwidth Gaussian MMD;
- :mod:`.module` — the gated multi-source attention over the PI, the student wrapper, save/load;
- :mod:`.data` — examples with PI (the run's data or ESConv), the reasoning teacher, token alignment;
- :mod:`.train` — the PRIDE trainer (transformers ``Trainer``) and the TRL SFT / SDFT baselines;
- :mod:`.stage` — the stage the notebook ``08_pride`` runs, step by step (its tables and sentences are in
  :mod:`empathy_utils.presentation`).

The names below are what notebooks use (``eu.pride_data(cfg, run_dir)`` …).
"""

from ..presentation import pride_ablation_table, pride_card_table, pride_glue_facts, pride_method, pride_training_table
from .stage import LABELS, PridePaths, comparisons, example_table
from .stage import generate_replies as pride_generate
from .stage import judge_students as pride_judge
from .stage import prepare_data as pride_data
from .stage import reply_facts, run_pride, training_figure
from .stage import train_students as pride_train

pride_examples = example_table
pride_training_figure = training_figure
pride_reply_facts = reply_facts

__all__ = [
    "LABELS", "PridePaths", "comparisons", "run_pride", "pride_data", "pride_train", "pride_generate", "pride_judge",
    "pride_card_table", "pride_examples", "pride_training_figure", "pride_ablation_table", "pride_glue_facts",
    "pride_method", "pride_reply_facts", "pride_training_table",
]

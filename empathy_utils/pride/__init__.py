"""PRIDE: privileged-information distillation into the small student (Wu, Zhu & Wang 2026;
book/pride.md), with its baselines and ablations.

- :mod:`.losses` — reverse KL and multi-bandwidth Gaussian MMD;
- :mod:`.module` — the gated multi-source attention over the PI, the student wrapper, save/load;
- :mod:`.data` — examples with PI (the run's data or ESConv), the reasoning teacher, token alignment;
- :mod:`.train` — the PRIDE trainer (transformers ``Trainer``) and the TRL SFT / SDFT baselines;
- :mod:`.stage` — the stage the notebook ``08_pride`` runs, step by step.

The names below are what notebooks use (``eu.pride_data(cfg, run_dir)`` …).
"""

from .stage import LABELS, PridePaths, ablation_table, card_table, comparisons, describe_method, example_table
from .stage import generate_replies as pride_generate
from .stage import glue_facts, reply_facts, run_pride, training_figure
from .stage import judge_students as pride_judge
from .stage import prepare_data as pride_data
from .stage import train_students as pride_train

pride_card_table = card_table
pride_examples = example_table
pride_training_figure = training_figure
pride_ablation_table = ablation_table
pride_glue_facts = glue_facts
pride_method = describe_method
pride_reply_facts = reply_facts

__all__ = [
    "LABELS", "PridePaths", "comparisons", "run_pride", "pride_data", "pride_train", "pride_generate", "pride_judge",
    "pride_card_table", "pride_examples", "pride_training_figure", "pride_ablation_table", "pride_glue_facts",
    "pride_method", "pride_reply_facts",
]

"""The DBT method (Son & So; methods.md C): SFT on multi-turn support conversations, then DPO on
replies labelled chosen / rejected by how many of four DBT validation stages they meet.

- :mod:`.settings` — the ``dbt`` params section (imported by the config; nothing heavy here);
- :mod:`.conversations` — the embedded multi-turn corpus, ESConv, splits and multi-turn examples;
- :mod:`.labels` — the LLM adherence labeller, the rule-based labeller, their agreement;
- :mod:`.preferences` — teacher candidates and chosen / rejected pairs;
- :mod:`.paper` — the paper's own numbers (its Table 1), kept as facts the book glues;
- :mod:`.stage` — the stage the notebook ``09_dbt`` runs, step by step (its tables, figure and
  sentences are in :mod:`.presenting`).

The names below are what notebooks use (``eu.dbt_data(cfg, run_dir)`` …); this ``__init__`` imports
none of them until one is used (:mod:`empathy_utils.lazy`), so the config can import the settings
without a cycle.
"""

from ..lazy import lazy_exports

_EXPORTS = {
    "ROWS": "stage",
    "LABELS": "stage",
    "DBTPaths": "stage",
    "run_dbt": "stage",
    "dbt_data": "stage:prepare_data",
    "dbt_train": "stage:train_rows",
    "dbt_generate": "stage:generate_replies",
    "dbt_evaluate": "stage:evaluate",
    "dbt_card_table": "presenting:card_table",
    "dbt_agreement_table": "presenting:agreement_table",
    "dbt_rows_table": "presenting:rows_table",
    "dbt_paper_table": "presenting:paper_table",
    "dbt_side_by_side": "presenting:side_by_side",
    "dbt_example": "presenting:example_table",
    "dbt_glue_facts": "presenting:glue_facts",
    "dbt_describe": "presenting:describe",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)

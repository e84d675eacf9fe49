"""The DBT method (Son & So; methods.md C): SFT on multi-turn support conversations, then DPO on
replies labelled chosen / rejected by how many of four DBT validation stages they meet.

- :mod:`.settings` — the ``dbt`` params section (imported by the config; nothing heavy here);
- :mod:`.conversations` — the embedded multi-turn corpus, ESConv, splits and multi-turn examples;
- :mod:`.labels` — the LLM adherence labeller, the rule-based labeller, their agreement;
- :mod:`.preferences` — teacher candidates and chosen / rejected pairs;
- :mod:`.paper` — the paper's own numbers (its Table 1), kept as facts the book glues;
- :mod:`.stage` — the stage the notebook ``09_dbt`` runs, step by step.

This ``__init__`` imports nothing, so that ``empathy_utils.config`` can import the settings without a
cycle; notebooks reach the stage through ``empathy_utils`` (``eu.dbt_data(cfg, run_dir)`` …).
"""

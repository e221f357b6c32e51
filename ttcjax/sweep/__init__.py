"""Sweeps: strategies x hyperparameters x budgets x seeds over a problem set, on the host.

* `runner`: text prompts in, answers out; compiles each strategy setting once.
* `plan`: strategy settings and the units of a sweep.
* `records`: the JSON-lines record of one problem in one unit (`SweepRecord`).
* `run`: runs a plan's units resumably into `results.jsonl`.
* `archive`: finished groups of records as small gzipped summaries.
* `report`: accuracy against budget per selection rule, with FLOPs.
* `select`: step-score aggregation and answer selection.
* `tree`: candidates sharing prefixes, drawn as a tree.
"""

from ttcjax.sweep.plan import (StrategySetting, Unit, check_settings_run, plan_units,
                               planned_runs)
from ttcjax.sweep.records import (SweepRecord, damaged_lines, make_records, read_results,
                                  record_key, recorded_keys, same_answer)
from ttcjax.sweep.run import progress_postfix, run_sweep
from ttcjax.sweep.runner import SearchResult, SearchRunner

__all__ = [
    "SearchResult", "SearchRunner", "StrategySetting", "SweepRecord", "Unit",
    "check_settings_run", "damaged_lines",
    "make_records", "plan_units", "planned_runs", "progress_postfix", "read_results",
    "record_key", "recorded_keys", "run_sweep", "same_answer",
]

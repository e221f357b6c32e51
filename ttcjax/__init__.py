"""ttcjax: composable, batched test-time search and compute-optimal scaling in JAX.

The packages, each of one idea, in layers (each imports only those above it):

* `models`: the Llama-family transformer, KV cache, PRM heads, tokenizers, HF import,
  exported checkpoints.
* `sampling`: prefill and step-level sampling inside jit; `compute`: budgets and FLOPs.
* `search`: the jitted engine and the strategies (best-of-N, beam, lookahead, DVTS,
  REBASE), each a `Strategy` record.
* `sweep`: the host side of searching: a runner over text prompts, resumable sweeps
  with typed JSON-lines records, selection rules, reports, archives.
* `study`: the compute-optimal study from sweep records: outcomes, difficulty bins,
  the held-out solver, allocation, the FLOPs-matched exchange, findings, report.
* `tasks`: plug-ins found by name (`get_task`): the arithmetic testbed, MATH-style data.
* `training`: SFT, Monte Carlo step labels, PRM/ORM training.

A notebook needs little more than this module: load the shipped testbed models
(`tasks.arith.testbed`), run a `SearchRunner`, select answers, run a study.
"""

from ttcjax import compute, metrics, models, parallel, search, study, sweep, tasks
from ttcjax.models import (CharTokenizer, HFTokenizer, KVCache, PrmConfig, StepScores,
                           Tokenizer, TransformerConfig, forward, gather_step_scores,
                           get_config, init_params, init_prm_params, score_steps,
                           token_scores)
from ttcjax.models.export import export_model, load_exported
from ttcjax.models.prm import PrmFn, transformer_prm_fn
from ttcjax.sampling import (DecodeFn, DecodeState, SampleOutput, Sampler, StepDelimiter,
                             append_tokens, prefill, row_keys, sample_steps,
                             transformer_decode_fn)
from ttcjax.search import (STRATEGIES, ComputeRecord, SearchBatch, SearchModels, SearchOutput,
                           SearchSettings, Strategy, get_strategy)
from ttcjax.study import analyse
from ttcjax.sweep import SearchResult, SearchRunner, StrategySetting, SweepRecord
from ttcjax.sweep.select import aggregate, answer_ids, select_answers
from ttcjax.tasks import get_task

__version__ = "0.1.0"

__all__ = [
    "compute", "metrics", "models", "parallel", "search", "study", "sweep", "tasks",
    "CharTokenizer", "ComputeRecord", "DecodeFn", "DecodeState", "HFTokenizer", "KVCache",
    "PrmConfig", "PrmFn", "STRATEGIES", "SampleOutput", "Sampler", "SearchBatch",
    "SearchModels", "SearchOutput", "SearchResult", "SearchRunner", "SearchSettings",
    "StepDelimiter", "StepScores", "Strategy", "StrategySetting", "SweepRecord", "Tokenizer",
    "TransformerConfig", "aggregate", "analyse", "answer_ids", "append_tokens",
    "export_model", "forward", "gather_step_scores", "get_config", "get_strategy", "get_task",
    "init_params", "init_prm_params", "load_exported", "prefill", "row_keys", "sample_steps",
    "score_steps", "select_answers", "token_scores", "transformer_decode_fn",
    "transformer_prm_fn",
]

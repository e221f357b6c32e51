"""ttcjax: composable, batched test-time search and compute-optimal scaling in JAX."""

from ttcjax import allocation, compute, difficulty, metrics, models, parallel, search
from ttcjax.models import (CharTokenizer, HFTokenizer, KVCache, PrmConfig, StepScores,
                           Tokenizer, TransformerConfig, forward, gather_step_scores,
                           get_config, init_params, init_prm_params, score_steps,
                           token_scores)
from ttcjax.sampling import (DecodeFn, DecodeState, SampleOutput, Sampler, StepDelimiter,
                             append_tokens, prefill, row_keys, sample_steps,
                             transformer_decode_fn)

__version__ = "0.1.0"

__all__ = [
    "allocation", "compute", "difficulty", "metrics", "parallel", "search",
    "CharTokenizer", "DecodeFn", "DecodeState", "HFTokenizer", "KVCache", "PrmConfig",
    "SampleOutput", "Sampler", "StepDelimiter", "StepScores", "Tokenizer",
    "TransformerConfig", "append_tokens", "forward", "gather_step_scores", "get_config",
    "init_params", "init_prm_params", "models", "prefill", "row_keys", "sample_steps",
    "score_steps", "token_scores", "transformer_decode_fn",
]

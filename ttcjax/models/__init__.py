"""Models: the Llama-family transformer, its KV cache, PRM heads, tokenizers, HF import,
and exported checkpoints (`export`)."""

from ttcjax.models.cache import KVCache
from ttcjax.models.config import PRESETS, RopeScaling, TransformerConfig, get_config
from ttcjax.models.prm import (PrmConfig, ProcessRewardModel, StepScores, gather_step_scores,
                               init_prm_params, score_steps, token_scores)
from ttcjax.models.tokenizer import CharTokenizer, HFTokenizer, Tokenizer
from ttcjax.models.transformer import ModelOutput, Transformer, forward, init_params

__all__ = [
    "CharTokenizer", "HFTokenizer", "KVCache", "ModelOutput", "PRESETS", "PrmConfig",
    "ProcessRewardModel", "RopeScaling", "StepScores", "Tokenizer", "Transformer",
    "TransformerConfig", "forward", "gather_step_scores", "get_config", "init_params",
    "init_prm_params", "score_steps", "token_scores",
]

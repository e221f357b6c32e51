"""How much device memory a search needs, computed before a run.

Per device, for one `SearchRunner.search` call (B problems per call, N rows each):

* parameters, policy and PRM: every leaf of the model's parameter tree at its dtype,
  split over the mesh's "model" axis as `parallel.param_sharding` splits it (a matrix
  along its largest dimension the axis divides; vectors replicated);
* KV caches, policy and PRM: layers x 2 (keys, values) x kv_heads x head_dim x
  capacity x rows x bytes of the compute dtype. Rows are the device's B / data
  problems times N (the frontier), plus the batch's empty caches (arguments that stay
  alive); the data axis splits rows, the model axis splits KV heads where it divides
  them (replicated over it otherwise: Qwen2.5-Math-1.5B has 2 KV heads, so 2 model
  shards halve its caches and 4 do not). Capacities are the runner's: prompt + T + 1, plus L suffix slots per
  scored step with a PRM adapter (`Strategy.prm_suffixes_per_row`). With shared
  prompts (`share_prompt_cache`) a row holds capacity - P slots and each problem's
  prompt sits twice (the empty argument and the filled cache every row reads). At the
  peak, besides one copy of each: a fork gathers one model's caches at a time into
  new buffers, so the larger model's frontier caches count twice (lookahead: both, its
  rollouts run on copies); best-of-N with shared prompts makes the PRM's rows after
  the policy's died, so only the larger model's count;
* an allowance for activations and logits: the largest of the search's forward
  passes, one layer at a time (inference keeps no earlier layer's activations):
  attention scores [rows, heads, chunk, capacity] in float32 plus, for a bfloat16
  model, their probabilities in bfloat16 (the reference attention materialises the
  scores, a float32 softmax can overwrite them, a bfloat16 one cannot; with cuDNN's
  fused attention the term is an overestimate), the MLP's
  gate, up and product [rows, chunk, intermediate], four [rows, chunk, hidden]
  buffers, and three float32 [rows, vocab] logits buffers per sampled token (logits,
  log-softmax, the sampler's filtered copy). The passes: policy prefill (B rows, the
  prompt), policy decode (B x N rows, one token), PRM prefill, and the PRM's chunk
  (B x N rows, or one slice of them; best-of-N: the whole solution T plus S suffixes;
  step-level searches: one step W plus its suffix; lookahead: k steps). Activations are not divided by
  the model axis (GSPMD may split some; the plan does not count on it).

Checked against `jax.jit(...).lower(...).compile().memory_analysis()` of the real-size
searches (`experiments/memory_check.py`, float32, where XLA:CPU computes what a device
would; in bfloat16 it adds float32 copies of the weights): for both MATH-500 pairs,
best-of-N and beam at N = 16 / 64 / 256, shared prompts, the plan is within 1-8% of
XLA's arguments + temporaries (docs/math500.md has the table), and a test checks the
same on a small model. Earlier checks (a 4-layer model, N = 32, T = 512): the PRM in
row slices (`prm_rows_per_pass`) brings best-of-N's arguments and temporaries down as
planned (456 MiB in one pass, 190 MiB in slices of 16 rows, 155 MiB in slices of 8;
the plan: 602, 266, 209 MiB). Not yet checked on a GPU or TPU.

Not counted: XLA's compiled code and scratch, and the runtime's own reserve (on GPU JAX
takes 75% of the memory unless XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise); compare
against a usable fraction of the device (the launcher's --usable_fraction).

`check_fits(plan, device_bytes)` raises a ValueError naming what dominates and a
concrete change that fits: fewer problems per batch, more model shards, bfloat16,
or, when one problem's N rows alone exceed a device, a smaller budget per call.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import numpy as np

from ttcjax import parallel
from ttcjax.models import paged
from ttcjax.models.config import TransformerConfig, get_config
from ttcjax.models.prm import PrmConfig, init_prm_params
from ttcjax.models.transformer import init_params
from ttcjax.search import get_strategy
from ttcjax.search.base import MAX_PREVIOUS_ATTEMPTS, SearchSettings, prm_cache_capacity
from ttcjax.search.frontier import num_prm_slices

GIB = 2**30
# The share of a device's memory a plan is compared against (the rest: XLA's code and
# scratch, which the plan does not count).
USABLE_FRACTION = 0.9
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

# Published PRMs: (backbone preset, head, suffix tokens L of the family's layout).
# L counts the family's suffix in its own tokenizer: Qwen2.5-Math-PRM "<extra_0>" (1);
# RLHFlow (Llama 3 template) <|eot_id|> <|start_header_id|> "assistant"
# <|end_header_id|> "\n\n" "+" <|eot_id|> <|start_header_id|> "user" <|end_header_id|>
# "\n\n" (11). The "+"/"-" ids (Llama 3's 10 and 12) only shape the plan;
# `load_adapted_prm` reads the real ones.
PUBLISHED_PRMS: dict[str, tuple[str, dict, int]] = {
    "qwen_math_prm": ("qwen2.5-math-7b", dict(kind="value", num_labels=2, head_hidden=3584), 1),
    "rlhflow": ("llama-3.1-8b", dict(kind="token_logit", positive_token_id=10,
                                     negative_token_id=12), 11),
}


def published_prm(family: str, dtype: str = "bfloat16") -> tuple[PrmConfig, int]:
  """(PrmConfig at published shape, suffix length L) of a PRM family in `PUBLISHED_PRMS`."""
  if family not in PUBLISHED_PRMS:
    raise ValueError(f"No published shape for PRM family {family!r}; known: "
                     f"{sorted(PUBLISHED_PRMS)}. Build the PrmConfig yourself.")
  preset, head, suffix = PUBLISHED_PRMS[family]
  backbone = get_config(preset, param_dtype=dtype, dtype=dtype)
  return PrmConfig(backbone, **head), suffix


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
  """Bytes per device of one search call, by part (see the module docstring).

  Attributes:
    policy_params, prm_params: parameter bytes on one device.
    policy_kv, prm_kv: KV cache bytes on one device, one copy of each.
    kv_extra: what else is live at the peak: the copy a fork makes of the larger
      model's caches (lookahead: of both); for best-of-N, minus the smaller model's
      caches (its policy's are dead before the PRM's pass).
    activations: the allowance for the largest forward pass.
    activation_pass: which pass sets the allowance.
    kv_copies: 2 for searches that fork their caches, else 1 (see `kv_extra`).
    rows_per_device: frontier rows (B / data x N) on one device.
    policy_capacity, prm_capacity: positions a row reaches (cache slots per row, with
      a shared prompt the prompt's included).
    kv_row_bytes: what one more row adds to the caches, both models, fork copies included.
    request: the arguments of `plan_search_memory` that made this plan.
  """

  policy_params: int
  prm_params: int
  policy_kv: int
  prm_kv: int
  kv_extra: int
  activations: int
  activation_pass: str
  kv_copies: int
  rows_per_device: int
  policy_capacity: int
  prm_capacity: int
  kv_row_bytes: int
  request: dict[str, Any] = dataclasses.field(repr=False, compare=False)

  @property
  def params(self) -> int:
    return self.policy_params + self.prm_params

  @property
  def kv(self) -> int:
    return self.policy_kv + self.prm_kv + self.kv_extra

  @property
  def total(self) -> int:
    return self.params + self.kv + self.activations

  def describe(self) -> str:
    """A few lines: each part in GiB, and the shapes behind them."""
    r = self.request
    gib = lambda x: f"{x / GIB:8.2f} GiB"
    return "\n".join([
        f"{r['strategy']}, N={r['budget']}, {r['problems_per_batch']} problems per call on a "
        f"{r['data_shards']} (data) x {r['model_shards']} (model) mesh: "
        f"{self.rows_per_device} rows per device",
        f"  parameters   {gib(self.params)}  (policy {self.policy_params / GIB:.2f}, "
        f"PRM {self.prm_params / GIB:.2f})",
        f"  KV caches    {gib(self.kv)}  (policy {self.policy_kv / GIB:.2f} at "
        f"{self.policy_capacity} slots, PRM {self.prm_kv / GIB:.2f} at {self.prm_capacity}; "
        f"{self.kv_copies} {'copies' if self.kv_copies > 1 else 'copy'})",
        f"  activations  {gib(self.activations)}  ({self.activation_pass})",
        f"  total        {gib(self.total)} per device"])


def _bytes(dtype: str) -> int:
  return _DTYPE_BYTES[dtype]


@functools.lru_cache(maxsize=64)
def _param_bytes(init, config, model_shards: int) -> int:
  """Bytes of one device's share of the parameter tree `init(config, key)` makes."""
  shapes = jax.eval_shape(lambda key: init(config, key), jax.random.PRNGKey(0))
  total = 0
  for leaf in jax.tree.leaves(shapes):
    size = int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
    split = parallel.model_split_dim(tuple(leaf.shape), model_shards) is not None
    total += size // model_shards if split else size
  return total


def kv_bytes_per_row(config: TransformerConfig, capacity: int, model_shards: int = 1) -> int:
  """layers x 2 x kv_heads x head_dim x capacity x bytes of the compute dtype, per
  device: heads split over `model_shards` where it divides them (`cache.heads_spec`)."""
  heads = config.num_kv_heads
  if heads % model_shards == 0:
    heads //= model_shards
  return config.num_layers * 2 * heads * config.head_dim * capacity * _bytes(config.dtype)


def pass_bytes(config: TransformerConfig, rows: int, chunk: int, capacity: int,
               logit_rows: int = 0, paged_slots: int = 0) -> int:
  """Activation bytes of one forward pass of `chunk` tokens on `rows` rows (one layer);
  with paged rows of `paged_slots` slots, also the keys and values the layer's
  attention gathers from the pool into a dense block."""
  size = _bytes(config.dtype)
  gathered = rows * 2 * config.num_kv_heads * config.head_dim * paged_slots * size
  # float32 scores, and probabilities beside them unless the softmax overwrites them.
  attention = rows * config.num_heads * chunk * capacity * (4 + (size if size != 4 else 0))
  mlp = rows * chunk * config.intermediate_size * 3 * size
  hidden = rows * chunk * config.hidden_size * 4 * size
  logits = logit_rows * config.vocab_size * 4 * 3
  return attention + mlp + hidden + logits + gathered


def plan_search_memory(policy: TransformerConfig, prm: PrmConfig, *, strategy: str, budget: int,
                       problems_per_batch: int, max_prompt_tokens: int, max_step_tokens: int,
                       max_solution_tokens: int, max_steps: int, max_rounds: int = 40,
                       max_prm_prompt_tokens: int | None = None, prm_suffix_length: int = 0,
                       lookahead_steps: int = 0, data_shards: int = 1,
                       model_shards: int = 1, prm_rows_per_pass: int = 0,
                       chain_length: int = 1, separator_tokens: int = 3,
                       share_prompt_cache: bool = False,
                       prompt_buckets: bool = False, kv_page_size: int = 0) -> MemoryPlan:
  """The per-device memory of one `SearchRunner.search` call.

  Args:
    policy, prm: the models' configs (their dtypes count).
    strategy: a search strategy name ("best_of_n", "beam", "lookahead", "dvts", "rebase").
    budget: N rows per problem.
    problems_per_batch: B problems per call; a multiple of `data_shards`.
    max_prompt_tokens, max_step_tokens, max_solution_tokens, max_steps, max_rounds: the
      runner's caps.
    max_prm_prompt_tokens: the PRM's prompt buffer with an adapter (default the
      policy's).
    prm_suffix_length: L, suffix tokens per step of a PRM adapter (0: no adapter).
    lookahead_steps: k of lookahead search.
    data_shards, model_shards: the mesh.
    prm_rows_per_pass: the runner's row slicing of PRM passes (0: all rows at once).
    chain_length, separator_tokens: sequential revisions' L and the attempt separator's
      tokens: N / L chain rows, each cache holding its kept attempts.
    share_prompt_cache: the runner's cache layout: each problem's prompt once
      (`SharedPrefixCache`; rows hold capacity - P slots) or once per row.
    prompt_buckets: whether the runner pads prompts to the batch's bucket; the plan
      takes the widest (the buffer), which a batch of long prompts reaches.
    kv_page_size: the runner's `kv_page_size` (0: dense rows): rows in a pool of
      pages sized never to run out, and forks that copy no cache.

  Returns:
    A `MemoryPlan`.
  """
  request = {k: v for k, v in locals().items() if k != "request"}
  for name in ("budget", "problems_per_batch", "data_shards", "model_shards"):
    if request[name] < 1:
      raise ValueError(f"{name} must be positive, got {request[name]}.")
  if problems_per_batch % data_shards:
    raise ValueError(f"problems_per_batch ({problems_per_batch}) must be a multiple of "
                     f"data_shards ({data_shards}): each data shard takes whole problems.")
  if kv_page_size and not share_prompt_cache:
    raise ValueError("kv_page_size pages the rows of shared prompt caches: set "
                     "share_prompt_cache=True as well.")
  # Only the caps are read (capacities, chunk widths).
  settings = SearchSettings(eos_id=0, pad_id=0, delimiter=None, max_step_tokens=max_step_tokens,
                            max_solution_tokens=max_solution_tokens, max_steps=max_steps,
                            max_rounds=max_rounds, prm_rows_per_pass=prm_rows_per_pass,
                            attempt_separator=(0,) * separator_tokens).check()
  record = get_strategy(strategy)
  hyper = {"lookahead_steps": lookahead_steps} if lookahead_steps else {}
  if record.revises:
    hyper = {"chain_length": chain_length}
    record.validate(budget, hyper)
  policy_capacity = record.policy_cache_capacity(max_prompt_tokens, settings, hyper)
  prm_prompt = max_prm_prompt_tokens or max_prompt_tokens
  suffixes = record.prm_suffixes_per_row(settings, hyper) if prm_suffix_length else 0
  prm_capacity = prm_cache_capacity(prm_prompt, settings, prm_suffix_length, suffixes)
  problems = problems_per_batch // data_shards
  rows = problems * (budget // chain_length if record.revises else budget)  # revisions: chains
  # Slices are taken over the global rows (strided, so each device holds its share).
  slice_rows = rows // num_prm_slices(problems_per_batch * rows // problems, prm_rows_per_pass)

  suffix_width = prm_suffix_length * record.prm_chunk_steps(settings, hyper)
  if record.whole_solutions:
    prm_chunk = max_solution_tokens + suffix_width
  else:
    prm_chunk = record.prm_chunk_steps(settings, hyper) * max_step_tokens + suffix_width
  backbone = prm.backbone
  own_slots = lambda capacity, prompt: (  # what a paged row's attention gathers
      paged.table_pages(capacity - prompt, kv_page_size) * kv_page_size if kv_page_size else 0)
  passes = {
      "policy prefill": pass_bytes(policy, problems, max_prompt_tokens, policy_capacity, problems),
      "policy decode": pass_bytes(policy, rows, 1, policy_capacity, rows,
                                  own_slots(policy_capacity, max_prompt_tokens)),
      "PRM prefill": pass_bytes(backbone, problems, prm_prompt + suffix_width, prm_capacity),
      f"PRM chunk of {prm_chunk} tokens": pass_bytes(backbone, slice_rows, prm_chunk,
                                                     prm_capacity, 0,
                                                     own_slots(prm_capacity, prm_prompt)),
  }
  if record.revises and chain_length > MAX_PREVIOUS_ATTEMPTS + 1:  # re-read attempt by attempt
    passes["revision re-read"] = pass_bytes(policy, rows, max_solution_tokens + separator_tokens,
                                            policy_capacity, rows)
  activation_pass = max(passes, key=passes.get)
  # Rows hold what follows the prompt when it is shared; the prompts then sit twice (the
  # batch's empty buffers, an argument, and the filled ones every row reads), else the
  # batch's empty B-row caches of full capacity stay alive beside the frontier.
  policy_row = policy_capacity - (max_prompt_tokens if share_prompt_cache else 0)
  prm_row = prm_capacity - (prm_prompt if share_prompt_cache else 0)
  if kv_page_size:  # the default pool: a row's table of whole pages, plus one page
    policy_row = paged.pool_slots_per_row(policy_row, kv_page_size)
    prm_row = paged.pool_slots_per_row(prm_row, kv_page_size)
  if share_prompt_cache:
    prompt_rows, policy_prompt, prm_prompt_slots = 2 * problems, max_prompt_tokens, prm_prompt
  else:
    prompt_rows, policy_prompt, prm_prompt_slots = problems, policy_capacity, prm_capacity
  kv_row = lambda config, slots: kv_bytes_per_row(config, slots, model_shards)
  frontier_policy = rows * kv_row(policy, policy_row)
  frontier_prm = rows * kv_row(backbone, prm_row)
  policy_kv = frontier_policy + prompt_rows * kv_row(policy, policy_prompt)
  prm_kv = frontier_prm + prompt_rows * kv_row(backbone, prm_prompt_slots)
  # What else is live at the peak (XLA's buffer assignment of the compiled searches):
  # a fork gathers one model's caches at a time into new buffers, so the larger one is
  # held twice; lookahead's rollouts run on copies of both. Best-of-N samples, then
  # scores: with shared prompts the PRM's rows start empty and are made when the PRM
  # pass needs them, after the policy's caches died, so only the larger model's rows
  # count; dense PRM rows are copies of the prefilled prompt, which XLA may make
  # before sampling (it does on small models), so both count.
  if record.forks and not hyper.get("lookahead_steps") and kv_page_size:
    kv_copies, kv_extra = 1, 0  # a fork moves table entries; the pools stay
  elif record.forks and not hyper.get("lookahead_steps"):
    kv_copies, kv_extra = 2, max(frontier_policy, frontier_prm)
  elif record.forks:
    kv_copies, kv_extra = 2, frontier_policy + frontier_prm
  elif record.independent_samples and not record.revises and share_prompt_cache:
    kv_copies, kv_extra = 1, -min(frontier_policy, frontier_prm)
  else:
    kv_copies, kv_extra = 1, 0
  return MemoryPlan(
      policy_params=_param_bytes(init_params, policy, model_shards),
      prm_params=_param_bytes(init_prm_params, prm, model_shards),
      policy_kv=policy_kv, prm_kv=prm_kv, kv_extra=kv_extra,
      activations=passes[activation_pass], activation_pass=activation_pass, kv_copies=kv_copies,
      rows_per_device=rows, policy_capacity=policy_capacity, prm_capacity=prm_capacity,
      kv_row_bytes=(frontier_policy + frontier_prm + kv_extra) // rows,
      request=request)


def replan(plan: MemoryPlan, **changes) -> MemoryPlan:
  """`plan`'s request with some arguments changed."""
  return plan_search_memory(**{**plan.request, **changes})


def bfloat16(config):
  """The same model (a `TransformerConfig` or `PrmConfig`) in bfloat16 weights and caches."""
  if isinstance(config, PrmConfig):
    return dataclasses.replace(config, backbone=bfloat16(config.backbone))
  return config.replace(param_dtype="bfloat16", dtype="bfloat16")


def check_fits(plan: MemoryPlan, device_bytes: int) -> MemoryPlan:
  """Returns `plan` when it fits `device_bytes` per device, else raises ValueError.

  The message gives the parts and a concrete change that fits, tried in this order:
  bfloat16 (when a model is float32), fewer problems per batch, more model shards
  (when the parameters alone do not fit), a smaller budget per call (when one
  problem's rows alone do not fit a device: rows of a problem never leave it).
  """
  if plan.total <= device_bytes:
    return plan
  r = plan.request
  gib = lambda x: f"{x / GIB:.2f} GiB"
  suggestions = []
  if "float32" in (r["policy"].param_dtype, r["policy"].dtype, r["prm"].backbone.param_dtype,
                   r["prm"].backbone.dtype):
    bf16 = replan(plan, policy=bfloat16(r["policy"]), prm=bfloat16(r["prm"]))
    suggestions.append(f"bfloat16 weights and caches (param_dtype/dtype 'bfloat16') need "
                       f"{gib(bf16.total)}" + (" and fit" if bf16.total <= device_bytes else ""))
  global_rows = plan.rows_per_device * r["data_shards"]
  sliced = [k for k in (global_rows // 2 ** i for i in range(1, 13)) if 0 < k < global_rows
            and (not r["prm_rows_per_pass"] or k < r["prm_rows_per_pass"])
            and replan(plan, prm_rows_per_pass=k).total <= device_bytes]
  if sliced:
    suggestions.append(f"prm_rows_per_pass={sliced[0]} (the PRM scores rows in slices) fits "
                       f"({gib(replan(plan, prm_rows_per_pass=sliced[0]).total)})")
  step = r["data_shards"]
  fitting = [b for b in range(r["problems_per_batch"] - step, 0, -step)
             if replan(plan, problems_per_batch=b).total <= device_bytes]
  if fitting:
    needs = replan(plan, problems_per_batch=fitting[0]).total
    suggestions.append(f"problems_per_batch={fitting[0]} fits ({gib(needs)})")
  elif plan.params > device_bytes:
    shards = [m for m in (2, 4, 8, 16, 32, 64) if m > r["model_shards"]
              and replan(plan, model_shards=m, problems_per_batch=step).params <= device_bytes]
    if shards:
      suggestions.append(f"the parameters alone need {gib(plan.params)}: split them over "
                         f"model_shards={shards[0]} or more")
    else:
      suggestions.append(f"the parameters alone need {gib(plan.params)} even over 64 model "
                         "shards: use smaller models")
  else:
    one = replan(plan, problems_per_batch=step)
    budgets = [n for n in range(r["budget"] - 1, 0, -1)
               if replan(one, budget=n).total <= device_bytes]
    lengths = [t for t in range(r["max_solution_tokens"] - 128, r["max_step_tokens"] - 1, -128)
               if replan(one, max_solution_tokens=t).total <= device_bytes]
    if not budgets:
      fewer = "no budget fits"
    elif get_strategy(r["strategy"]).independent_samples:
      fewer = (f"at most {budgets[0]} samples per call fit (draw the N samples over several "
               "calls with different rng keys)")
    else:
      fewer = (f"a budget of at most {budgets[0]} fits (a step-level search holds all N rows "
               "at once)")
    suggestions.append(
        f"one problem per device already needs {gib(one.total)}: its {r['budget']} rows stay "
        "on one device, and model shards split only the parameters and the KV heads they "
        "divide; " + fewer
        + (f"; or max_solution_tokens={lengths[0]} fits" if lengths else ""))
  raise ValueError(
      f"The search needs {gib(plan.total)} per device, more than the {gib(device_bytes)} "
      f"available: parameters {gib(plan.params)}, KV caches {gib(plan.kv)}, activations "
      f"{gib(plan.activations)} ({plan.activation_pass}). Try: " + "; ".join(suggestions) + ".")


def max_problems_per_batch(plan: MemoryPlan, device_bytes: int, limit: int = 4096) -> int:
  """The most problems per call (a multiple of the data shards) that fit; 0 if none."""
  step = plan.request["data_shards"]
  low, high = 0, limit // step  # in units of `step`; memory grows with problems
  while low < high:
    mid = (low + high + 1) // 2
    if replan(plan, problems_per_batch=mid * step).total <= device_bytes:
      low = mid
    else:
      high = mid - 1
  return low * step


__all__ = ["GIB", "USABLE_FRACTION", "MemoryPlan", "PUBLISHED_PRMS", "bfloat16", "check_fits",
           "kv_bytes_per_row", "max_problems_per_batch", "pass_bytes", "plan_search_memory", "published_prm",
           "replan"]

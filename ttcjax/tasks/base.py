"""What a task plugs into ttcjax: its sweep, its study stages, and its mesh.

A task owns its problems and grading, how its models load, and how a config of its
own shape becomes a sweep or a study. The launchers never test task names: they
look a task up by the config's `task` field (`ttcjax.tasks.task_of`) and call it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import ml_collections
from jax.sharding import Mesh

from ttcjax.compute import ModelCost
from ttcjax.study.runner import StudyTask, run_study


@dataclasses.dataclass(frozen=True)
class Task:
  """One task's entry points.

  Attributes:
    name: what configs call it (`config.task`).
    run_sweep: (config, workdir, *, mesh=None, progress=None, stop_after_units=None,
      archive_dir=None) -> the sweep's totals (`ttcjax.sweep.run_sweep`'s, with
      "units_total", "uids" and "skipped"); runs or resumes the sweep of a config.
    make_mesh: (config, data_shards, model_shards) -> the mesh a sweep of this config
      runs on (None: one device); 0 shards means the task's default.
    model_costs: a sweep's config (a dict, e.g. its recorded `run_config.json`) -> (the
      policy's, the PRM's) `ModelCost`, read from the checkpoints' configs.
    study: how the study runs its stages (`ttcjax.study.runner.StudyTask`).
    search_problem: (recorded sweep config, problem uid, StrategySetting, budget, seed)
      -> `ttcjax.sweep.view.ProblemSearch`: one problem searched again as that sweep
      unit searched it, traced (`experiments.view_tree`).
  """

  name: str
  run_sweep: Callable[..., dict]
  make_mesh: Callable[[ml_collections.ConfigDict, int, int], Mesh | None]
  model_costs: Callable[[Mapping[str, Any]], tuple[ModelCost, ModelCost]]
  study: StudyTask
  search_problem: Callable[..., Any]

  def run_study(self, config: ml_collections.ConfigDict, workdir: str,
                progress: Callable[[str, dict], None] | None = None) -> dict:
    """Runs (or resumes) this task's study of `config`; returns `summary.json`'s dict."""
    return run_study(self.study, config, workdir, progress)

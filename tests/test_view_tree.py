"""Looking at one search: the round trace, the tree built from it, the page
`experiments.view_tree` writes, and that page in a real headless browser."""

import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests import search_fakes as fakes
from tests.test_sweep import tiny_models, tiny_sweep_config  # noqa: F401 (a fixture)
from ttcjax import search
from ttcjax.sampling import Sampler
from ttcjax.sweep import tree
from ttcjax.tasks.arith import task as arith_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(strategy, settings, **hyper):
  fn = jax.jit(lambda batch, rng, sampler, s: search.get_strategy(strategy).fn(
      fakes.MODELS, batch, rng, sampler, s, **hyper))
  return jax.device_get(fn(fakes.batch(2), jax.random.PRNGKey(3), Sampler(), settings))


def _paths(node, prefix=()):
  """{candidate: token path} from the tree's candidate marks."""
  out = {}
  for child in node.children:
    path = prefix + (child.step,)
    out.update({n: path for n in child.candidates})
    out.update(_paths(child, path))
  return out


@pytest.mark.parametrize("strategy,hyper", [("beam", dict(budget=8, beam_width=4)),
                                            ("dvts", dict(budget=8, beam_width=2)),
                                            ("rebase", dict(budget=8, temperature=0.1))])
def test_a_traced_search_is_the_same_search_and_its_tree_rebuilds_every_candidate(strategy,
                                                                                  hyper):
  plain = _run(strategy, fakes.settings(), **hyper)
  traced = _run(strategy, fakes.settings().replace(trace_rounds=True), **hyper)
  assert plain.trace is None and traced.trace is not None
  np.testing.assert_array_equal(plain.tokens, traced.tokens)
  np.testing.assert_array_equal(plain.step_scores, traced.step_scores)
  budget, trace = hyper["budget"], traced.trace
  rounds = int(trace.rounds)
  assert rounds == fakes.STEPS  # three steps, then every row has ended
  for b in range(2):
    decode = lambda ids: ",".join(str(int(i)) for i in ids)  # exact token ids as text
    root = tree.search_tree(trace, b, budget, decode)
    nodes = list(root.walk())[1:]
    assert len(nodes) == int(trace.grew[:rounds, b * budget:(b + 1) * budget].sum())
    assert root.count == budget and len(root.children) == budget  # round 0: every row
    # Each candidate's path through the tree spells its final tokens.
    for n, path in _paths(root).items():
      tokens = traced.tokens[b, n, :traced.lengths[b, n]]
      assert ",".join(p for p in path if p) == decode(tokens)
    assert sorted(_paths(root)) == list(range(budget))
    # Every kept step of a round before the last has children; pruned ones have none.
    for node in nodes:
      if node.round < rounds - 1 and not node.ended:
        assert bool(node.children) == node.kept, (node.round, node.row)
  if strategy == "beam":  # round 0 keeps N / M = 2 rows of each problem
    root = tree.search_tree(trace, 0, budget, lambda ids: str(list(ids)))
    assert sum(c.kept for c in root.children) == 2


def test_whole_solution_strategies_return_no_trace():
  out = _run("best_of_n", fakes.settings().replace(trace_rounds=True), budget=4)
  assert out.trace is None


# ---------------------------------------------------------------------- the page


@pytest.fixture(scope="module")
def sweep_dir(tiny_models, tmp_path_factory):  # noqa: F811 (the imported fixture)
  workdir = tmp_path_factory.mktemp("viewed")
  config = tiny_sweep_config(tiny_models)
  config.budgets = (4,)
  arith_task.run_search_sweep(config, str(workdir))
  return workdir


def _view(workdir, *args):
  return subprocess.run([sys.executable, "-m", "experiments.view_tree", "--workdir",
                         str(workdir), *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)


@pytest.fixture(scope="module")
def pages(sweep_dir):
  """{label: (page path, the launcher's output)} for the tiny sweep's problem test-L3-0."""
  out = {}
  for label in ("beam_m2", "best_of_n"):
    done = _view(sweep_dir, "--problem", "test-L3-0", "--strategy", label)
    assert done.returncode == 0, done.stderr[-2000:]
    out[label] = (done.stdout.strip().splitlines()[-1], done.stdout)
  return out


def test_view_tree_writes_the_recorded_search_as_a_page(pages, sweep_dir):
  for label, (path, stdout) in pages.items():
    assert path == str(sweep_dir / "trees" / f"test-L3-0-{label}-n4-s0.html")
    assert "note:" not in stdout  # the rerun is the recorded search
    with open(path) as f:
      page = f.read()
    assert page.startswith("<!doctype html>") and "<script src" not in page  # self-contained
    assert page.count('class="sample"') == 4 and "<table id=\"answers\">" in page
  with open(pages["beam_m2"][0]) as f:
    beam = f.read()
  nodes = int(re.search(r'data-nodes="(\d+)"', beam).group(1))
  assert beam.count('<li class="node') == nodes > 4
  assert "pruned" in beam
  with open(pages["best_of_n"][0]) as f:
    assert 'class="node' not in f.read()  # no rounds, no tree


@pytest.mark.parametrize("args,message", [
    (["--problem", "test-L9-9", "--strategy", "beam_m2", "--budget", "4", "--seed", "0"],
     "not among this sweep's"),
    (["--problem", "test-L3-0", "--strategy", "beam_m9"], "no strategy setting 'beam_m9'"),
    (["--problem", "test-L3-0", "--strategy", "beam_m2", "--budget", "3"], "does not run at budget 3"),
])
def test_view_tree_refuses_bad_input_clearly(sweep_dir, args, message):
  done = _view(sweep_dir, *args)
  assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr


def test_view_tree_names_a_directory_that_is_no_sweep(tmp_path):
  done = _view(tmp_path, "--problem", "x")
  assert done.returncode != 0 and "not a sweep's run directory" in done.stderr


# ----------------------------------------------------------- in a real browser

_CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                   "--no-first-run", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync", "--enable-logging=stderr",
                   "--v=0"]


@pytest.fixture(scope="session")
def chromium():
  """Debian's Chromium: found, else installed with apt-get (as root), else skipped."""
  found = shutil.which("chromium")
  if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
      subprocess.run(command, env=env, capture_output=True, timeout=600)
    found = shutil.which("chromium")
  if found is None:
    pytest.skip("Chromium is not installed and cannot be (apt-get install chromium needs root "
                "and Debian's package archive).")
  return found


def _browse(chromium_path, tmp_path, url, *args):
  """(stdout, the console messages) of one headless Chromium run."""
  done = subprocess.run([chromium_path, *_CHROMIUM_FLAGS, f"--user-data-dir={tmp_path}/profile",
                         *args, url], capture_output=True, text=True, timeout=120)
  return done.stdout, [l for l in done.stderr.splitlines() if ":CONSOLE" in l]


def test_the_browser_reports_console_errors(chromium, tmp_path):
  # The check below can fail: a page with a script error shows up in the console lines.
  bad = tmp_path / "bad.html"
  bad.write_text("<!doctype html><html><body><script>undefinedFunction();</script></body></html>")
  _, console = _browse(chromium, tmp_path, f"file://{bad}", "--dump-dom")
  assert any("undefinedFunction" in line for line in console)


def test_the_tree_page_loads_without_errors_and_draws_every_node(chromium, pages, tmp_path):
  path = pages["beam_m2"][0]
  with open(path) as f:
    nodes = int(re.search(r'data-nodes="(\d+)"', f.read()).group(1))
  dom, console = _browse(chromium, tmp_path, f"file://{path}", "--dump-dom")
  assert console == []
  # The page's script counted the drawn nodes into the page: it ran, and found them all.
  assert re.search(r'<span id="shown-nodes">(\d+)</span>', dom).group(1) == str(nodes)
  assert dom.count('<li class="node') == nodes
  shot = tmp_path / "tree.png"
  _, console = _browse(chromium, tmp_path, f"file://{path}", f"--screenshot={shot}",
                       "--window-size=1000,800")
  assert console == []
  with open(shot, "rb") as f:
    png = f.read()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

"""The quickstart notebook runs top to bottom on the shipped testbed (its default sizes)."""

import os

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_notebook_executes():
  path = os.path.join(ROOT, "notebooks", "quickstart.ipynb")
  notebook = nbformat.read(path, as_version=4)
  client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": ROOT}})
  client.execute()  # raises CellExecutionError when a cell fails
  outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                    for o in cell.get("outputs", []))
  assert "weighted (last)" in outputs and "x" in outputs


# The install cell as Colab runs it: "google.colab" imported (a stand-in with the one
# submodule JAX's debugger imports on Colab), REPO_URL set. Its clone
# and `pip install -e` go to a new virtual environment that sees this one's packages
# (a .pth line), so nothing is downloaded and this environment is left as it was.
_COLAB_PRELUDE = r"""
import sys, types
colab = sys.modules["google.colab"] = types.ModuleType("google.colab")
colab.output = sys.modules["google.colab.output"] = types.ModuleType("google.colab.output")
"""
_AFTER_INSTALL = r"""
import os
import ttcjax
clone = os.path.join(os.environ["WHERE"], "ttcjax")
assert os.getcwd() == clone, os.getcwd()
assert ttcjax.__file__.startswith(clone), ("not the clone", ttcjax.__file__)
from ttcjax.tasks.arith import testbed
path = testbed.shipped_checkpoint("policy_small")
assert os.path.realpath(path).startswith(clone), path
config, params, _ = testbed.load_policy(path)
print("ok", config.num_layers)
"""


def test_the_colab_install_cell_installs_from_a_clone_by_url(tmp_path):
  import subprocess
  import sys
  import sysconfig
  notebook = nbformat.read(os.path.join(ROOT, "notebooks", "quickstart.ipynb"), as_version=4)
  install_cell = next(c.source for c in notebook.cells
                      if c.cell_type == "code" and "IN_COLAB" in c.source)
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
  python = venv / "bin" / "python"
  site = subprocess.run(
      [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
      check=True, capture_output=True, text=True).stdout.strip()
  with open(os.path.join(site, "outer.pth"), "w") as f:
    f.write(sysconfig.get_paths()["purelib"] + "\n")
  where = tmp_path / "colab"
  where.mkdir()
  env = dict(os.environ, TTCJAX_REPO=f"file://{ROOT}", WHERE=str(where),
             PIP_NO_BUILD_ISOLATION="0", PIP_DISABLE_PIP_VERSION_CHECK="1")
  env.pop("PYTHONPATH", None)
  done = subprocess.run([str(python), "-c", _COLAB_PRELUDE + install_cell + _AFTER_INSTALL],
                        cwd=where, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
  assert done.stdout.strip().splitlines()[-1].startswith("ok")

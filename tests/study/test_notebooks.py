"""The Colab notebooks: the quickstart's code cells run on CPU; the TPU notebook is well-formed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

COLAB = Path(__file__).resolve().parents[2] / "colab"


def _code(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text())
    assert nb["nbformat"] == 4
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    # shell (!pip) and magic (%) lines are Colab set-up; the package is already installed here
    return "\n\n".join("\n".join(line for line in cell.splitlines() if not line.lstrip().startswith(("!", "%")))
                       for cell in cells)


def test_quickstart_code_cells_run(reduced_study, tmp_path):
    """Executes every code cell in one Python process with the CI config; the study resumes from the
    reduced-study fixture's run directory (same config), so this checks the notebook's code, not speed."""
    from tests.study.conftest import CI_CONFIG

    _, out, results = reduced_study
    script = tmp_path / "quickstart.py"
    script.write_text(_code(COLAB / "quickstart.ipynb"))
    env = dict(os.environ, JAXDELTA_QUICKSTART_CONFIG=str(CI_CONFIG), JAXDELTA_QUICKSTART_OUT=str(out))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "the attack raised ASR by" in r.stdout
    assert f"{results['attacks']['harmful']['asr_increase_points']:+.1f} points" in r.stdout
    assert "# Study: ci_reduced" in r.stdout


def test_tpu_notebook_is_valid_and_says_it_is_not_run_in_ci():
    nb = json.loads((COLAB / "llama2_7b_chat_tpu.ipynb").read_text())
    assert nb["nbformat"] == 4
    text = "".join("".join(c["source"]) for c in nb["cells"])
    assert "NOT executed in CI" in text
    code = _code(COLAB / "llama2_7b_chat_tpu.ipynb")
    compile(code, "llama2_7b_chat_tpu.ipynb", "exec")  # every code cell is valid Python

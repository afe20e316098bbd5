"""The documentation's examples run: every ```python block of docs/kernels.md,
docs/models.md (in order, in one namespace, in a temporary folder) and of the
README's "Python API" section is executed."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def python_blocks(text):
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("index", range(len(python_blocks((REPO / "docs" / "kernels.md").read_text()))))
def test_kernel_guide_examples_run(index):
    code = python_blocks((REPO / "docs" / "kernels.md").read_text())[index]
    exec(compile(code, f"docs/kernels.md block {index}", "exec"), {})


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = python_blocks(section)
    assert blocks, "README has no Python API example"
    monkeypatch.chdir(tmp_path)
    for i, code in enumerate(blocks):
        exec(compile(code, f"README Python API block {i}", "exec"), {})


def test_models_guide_runs_in_order(tmp_path, monkeypatch):
    text = (REPO / "docs" / "models.md").read_text()
    blocks = python_blocks(text)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/models.md block {i}", "exec"), namespace)
    assert (tmp_path / "runs" / "cli-again" / "model.json").is_file()

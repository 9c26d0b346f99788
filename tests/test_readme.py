"""README's Python examples run as written (README must stay true)."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_examples_of_both_faces():
    text = "\n".join(BLOCKS)
    assert "import gradxform" in text and "import torch_compat" in text


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, capsys):
    code = BLOCKS[index]
    if "optax." in code and "import optax" not in code:
        code = "import optax, gradxform\n" + code
    exec(compile(code, f"README.md block {index}", "exec"), {})
    out = capsys.readouterr().out
    for line in code.splitlines():
        match = re.match(r"\s*print\(.*\)\s*#\s*(\S+)$", line)
        if match:
            assert match.group(1) in out

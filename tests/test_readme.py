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


def test_ci_runs_readme_commands_before_torch():
    """.ci/run runs README's install-and-test commands, as written, before installing torch."""
    commands = re.search(r"## Install and test.*?```bash\n(.*?)```", README.read_text(), re.S).group(1)
    ci = (README.parent / ".ci" / "run").read_text()
    torch_at = ci.index("pip install --quiet torch==2.13.0")
    for command in filter(None, (c.strip() for c in commands.splitlines())):
        script = command.split()[-1] if command.startswith("python examples/") else command
        assert script in ci[:torch_at], f"README's {command!r} is not run by .ci/run before torch"

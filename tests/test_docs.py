"""The documentation: its code runs, and every public name is in it.

* Each ```python block of the pages in docs/ runs, in order, the blocks of a page
  sharing one namespace (as a reader follows a page); a ``print(...)  # text`` line must
  print ``text``.
* Every optimizer has its page and appears in the migration tables; every schedule and
  lr_scheduler class is in the schedules page and the torch migration guide.
* With the ``docs`` extra installed, the site builds with ``mkdocs build --strict``, and
  the API reference has an entry for every name in ``gradxform.__all__``,
  ``torch_compat.__all__``, ``torch_compat.optim.__all__``,
  ``torch_compat.optim.lr_scheduler.__all__`` and every other public module they
  name (so a new public name cannot be left out). CI builds the site once and points
  ``GRADXFORM_DOCS_SITE`` at it; otherwise the test builds it in a temporary directory.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import types

import pytest

import gradxform
import torch_compat
from gradxform import schedules
from gradxform.registry import FIRST_ORDER, SPECS
from torch_compat import optim
from torch_compat.optim import lr_scheduler

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "placeholder: replaced on merge" not in p.read_text())
OPTIMIZERS = list(FIRST_ORDER)
CLASSES = {alias: spec.torch_name for alias, spec in SPECS.items()}


def python_blocks(page: pathlib.Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M)


PAGES_WITH_CODE = [p for p in PAGES if python_blocks(p)]


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_code_runs(page, capsys):
    namespace: dict = {"__name__": "docs"}
    for index, code in enumerate(python_blocks(page)):
        exec(compile(code, f"{page.relative_to(ROOT)} block {index}", "exec"), namespace)
        out = capsys.readouterr().out
        for line in code.splitlines():
            match = re.match(r"\s*print\(.*\)\s*#\s*(\S+)", line)
            if match:
                assert match.group(1) in out, (line, out)


def test_every_optimizer_has_a_page():
    table = (DOCS / "optimizers" / "index.md").read_text()
    migration = (DOCS / "migration-torch.md").read_text()
    for name, klass in CLASSES.items():
        page = (DOCS / "optimizers" / f"{name}.md").read_text()
        assert f"torch.optim.{klass}" in page and f"torch_compat.optim.{klass}" in page, name
        assert "## Update rule" in page and "## Options" in page and "```python" in page, name
        assert f"({name}.md)" in table, name
        assert f"| `{klass}` |" in migration, name
    for name in OPTIMIZERS:
        assert f"`gradxform.{name}`" in (DOCS / "optimizers" / f"{name}.md").read_text()
        assert callable(getattr(gradxform, name)) and name in gradxform.__all__


def test_every_option_is_in_the_optimizer_pages():
    """Each keyword of each alias is in its page's options table (``learning_rate`` as lr)."""
    import inspect

    for name in OPTIMIZERS:
        page = (DOCS / "optimizers" / f"{name}.md").read_text()
        options = [p for p in inspect.signature(getattr(gradxform, name)).parameters if p != "state_dtype"]
        for option in options:
            assert f"| `{option}`" in page or (option == "learning_rate" and "`learning_rate`" in page), (name, option)


def test_every_scheduler_is_documented():
    migration = (DOCS / "migration-torch.md").read_text()
    gallery = (DOCS / "schedules.md").read_text()
    for name in lr_scheduler.__all__:
        if isinstance(getattr(lr_scheduler, name), type):
            assert f"| `{name}" in migration, name
    for name in schedules.__all__:
        if name != "sample":
            assert f"`{name}(" in gallery or f"`{name}`" in gallery, name
            assert f"schedules.{name}(" in migration, name


def test_placeholders_are_only_the_other_branches_pages():
    placeholders = {p.name for p in DOCS.rglob("*.md") if "placeholder: replaced on merge" in p.read_text()}
    assert placeholders <= {"sharding.md", "checkpoints.md", "reliability.md"}


# -- the built site -------------------------------------------------------------------------


def public_modules() -> dict[str, list[str]]:
    """``{module: its public non-module names}``, walking ``__all__`` from both packages."""
    found, todo = {}, [gradxform, torch_compat]
    while todo:
        module = todo.pop(0)
        names = getattr(module, "__all__", None)
        if names is None:
            names = [n for n, v in vars(module).items()
                     if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__]
        members = []
        for name in names:
            value = getattr(module, name)
            if isinstance(value, types.ModuleType):
                todo.append(value)
            else:
                members.append(name)
        found[module.__name__] = members
    return found


def test_the_walk_reaches_the_public_modules():
    modules = public_modules()
    for name in ("gradxform", "gradxform.schedules", "gradxform.checkpoint", "torch_compat",
                 "torch_compat.optim", "torch_compat.optim.lr_scheduler"):
        assert name in modules
    assert "adam" in modules["gradxform"] and "StepLR" in modules["torch_compat.optim.lr_scheduler"]
    assert set(optim.__all__) - {"lr_scheduler", "swa_utils"} == set(modules["torch_compat.optim"])
    assert "AveragedModel" in modules["torch_compat.optim.swa_utils"]


@pytest.fixture(scope="module")
def site() -> pathlib.Path:
    given = os.environ.get("GRADXFORM_DOCS_SITE")
    if given:
        return pathlib.Path(given)
    pytest.importorskip("mkdocs", reason="the docs extra is not installed")
    pytest.importorskip("mkdocstrings")
    import tempfile

    out = pathlib.Path(tempfile.mkdtemp(prefix="gradxform-site-"))
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return out


def test_api_reference_covers_every_public_name(site):
    for module, members in public_modules().items():
        page = site / "api" / module / "index.html"
        assert page.is_file(), f"no API page for {module}"
        html = page.read_text()
        missing = []
        for name in members:
            if f'id="{module}.{name}"' not in html:
                missing.append(name)
        assert not missing, f"{module}: {missing} missing from the API reference"


def test_site_has_the_pages_and_the_gallery(site):
    for page in PAGES:
        rel = page.relative_to(DOCS).with_suffix("")
        built = site / ("index.html" if rel.name == "index" and rel.parent == pathlib.Path(".") else
                        (rel.parent / "index.html" if rel.name == "index" else rel / "index.html"))
        assert built.is_file(), built
    png = site / "img" / "schedules_gallery.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    assert "arithmatex" in (site / "optimizers" / "adam" / "index.html").read_text()


def test_not_here_table_names_tests_that_exist():
    """Each row of docs/migration-torch.md's "What is not here, and why" table names tests
    (as docs/reliability.md's tables do, tests/test_bad_input.py); they must exist."""
    text = (DOCS / "migration-torch.md").read_text()
    section = text.split("## What is not here, and why", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| torch |")]
    assert len(rows) >= 10
    for row in rows:
        refs = re.findall(r"`(tests/[\w/]+\.py)?::(\w+)`", row.split(" | ")[-1])
        assert refs, row
        current = None
        for path, name in refs:
            current = path or current
            assert current, row
            assert f"def {name}(" in (ROOT / current).read_text(), (current, name)

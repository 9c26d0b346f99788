"""MkDocs hooks: the API reference pages and the schedules gallery, made at build time.

* API reference: one page per public module, found by walking ``__all__`` from the two
  packages (``gradxform``, ``torch_compat``) into every submodule it names. Each page
  renders, with mkdocstrings, exactly the names of that module's ``__all__``; a page and
  a nav entry appear by themselves when a module is added to an ``__all__``, so a new
  public name cannot be left out of the reference (``tests/test_docs.py`` checks the
  built site).
* Schedules gallery: ``examples/schedules_gallery.py`` draws ``schedules_gallery.png``
  into the site, so the picture always matches the code (no binary file in git).
"""

from __future__ import annotations

import importlib
import os
import pathlib
import subprocess
import sys
import tempfile
import types

from mkdocs.structure.files import File

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("gradxform", "torch_compat")
API_SECTION = "API reference"
GALLERY = "img/schedules_gallery.png"


def public_names(module: types.ModuleType) -> list[str]:
    """``__all__``, or else the public functions and classes the module defines itself."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return sorted(
        name for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    )


def public_modules() -> dict[str, list[str]]:
    """``{module name: its public names that are not modules}``, packages first."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    found: dict[str, list[str]] = {}
    todo = list(PACKAGES)
    while todo:
        name = todo.pop(0)
        module = importlib.import_module(name)
        members = []
        for public in public_names(module):
            value = getattr(module, public)
            if isinstance(value, types.ModuleType):
                todo.append(value.__name__)
            else:
                members.append(public)
        found[name] = members
    return found


def api_page(module: str, members: list[str]) -> str:
    listed = "\n".join(f"        - {name}" for name in members)
    page = (
        f"# `{module}`\n\n"
        f"::: {module}\n"
        "    options:\n"
        "      show_root_heading: false\n"
        "      members:\n"
        f"{listed}\n"
    )
    return page


def api_path(module: str) -> str:
    return f"api/{module}.md"


def on_config(config, **kwargs):
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    entries = [{module: api_path(module)} for module in sorted(public_modules())]
    for item in config["nav"]:
        if isinstance(item, dict) and API_SECTION in item:
            item[API_SECTION] = entries
            break
    else:
        config["nav"].append({API_SECTION: entries})
    return config


def on_files(files, config, **kwargs):
    for module, members in public_modules().items():
        files.append(File.generated(config, api_path(module), content=api_page(module, members)))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "gallery.png")
        env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        subprocess.run(
            [sys.executable, str(ROOT / "examples" / "schedules_gallery.py"), "--out", out],
            check=True, env=env, cwd=tmp, stdout=subprocess.DEVNULL,
        )
        files.append(File.generated(config, GALLERY, content=pathlib.Path(out).read_bytes()))
    return files

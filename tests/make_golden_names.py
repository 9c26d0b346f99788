"""Writes ``tests/golden/torch_optim_names.json``: the public names of torch 2.13's optimizer API.

Usage (from the repository root)::

    python tests/make_golden_names.py

A module's public names are its ``__all__`` and every name its source defines at top
level (classes, functions, assignments such as the type aliases of
``torch.optim.optimizer``) that does not start with ``_``. A class's public names are
its attributes that do not start with ``_``. ``test_public_names.py`` checks that each
exists in ``torch_compat`` (without torch, from this file; with torch, also that this file
is torch's current list).
"""

from __future__ import annotations

import ast
import inspect
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN_PATH = os.path.join(HERE, "golden", "torch_optim_names.json")

MODULES = ["torch.optim", "torch.optim.optimizer", "torch.optim.lr_scheduler", "torch.optim.swa_utils"]
CLASSES = ["torch.optim.Optimizer", "torch.optim.lr_scheduler.LRScheduler", "torch.optim.lr_scheduler.ReduceLROnPlateau"]


def module_names(module) -> list[str]:
    names = set(getattr(module, "__all__", []))
    tree = ast.parse(inspect.getsource(module))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            names.add(node.target.id)
    return sorted(n for n in names if not n.startswith("_"))


def torch_names() -> dict:
    import importlib

    import torch

    out: dict = {"torch_version": torch.__version__, "modules": {}, "classes": {}}
    for name in MODULES:
        out["modules"][name] = module_names(importlib.import_module(name))
    for path in CLASSES:
        module, _, cls = path.rpartition(".")
        klass = getattr(importlib.import_module(module), cls)
        out["classes"][path] = sorted(n for n in dir(klass) if not n.startswith("_"))
    return out


def main() -> None:
    with open(GOLDEN_PATH, "w") as f:
        json.dump(torch_names(), f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {GOLDEN_PATH}")


if __name__ == "__main__":
    main()

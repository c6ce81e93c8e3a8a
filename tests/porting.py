"""Shared pieces for tests that port a small source: a tiny model, and port-then-import."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import textwrap
from pathlib import Path
from types import ModuleType

from porter.pipeline import PortResult, port

# A small nn.Module most CLI tests port: one Linear, tanh, unsqueeze.
GATE = """\
import torch
from torch import nn


class Gate(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        return torch.tanh(self.proj(x)).unsqueeze(1)
"""


def port_and_import(
    tmp_path: Path, name: str, text: str, findings: bool = False
) -> tuple[ModuleType, ModuleType, PortResult]:
    """Port ``text`` into ``tmp_path/name`` and import both sides: (torch module, MLX module,
    port result). Unless ``findings`` is set, the port must leave nothing unported."""
    src = tmp_path / f"{name}_src.py"
    src.write_text(textwrap.dedent(text))
    result = port(str(src), tmp_path / name, command="test")
    if not findings:
        assert result.ctx.findings == [], result.ctx.findings
    spec = importlib.util.spec_from_file_location(f"{name}_torch", src)
    torch_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(torch_mod)
    for stale in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[stale]  # a package of the same name from another test's folder
    sys.path.insert(0, str(tmp_path))
    try:
        mlx_mod = importlib.import_module(f"{name}.{name}_src")
    finally:
        sys.path.remove(str(tmp_path))
    return torch_mod, mlx_mod, result

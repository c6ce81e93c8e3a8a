"""The port report: JSON that follows the documented schema, Markdown, and the printed summary
as its short form."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import jsonschema
import pytest

from porter.cli import main
from porter.report import load_schema

# One construct of each confidence class, and one library name of each resolution.
ODD = """\
import math

import torch
from torch import nn
from diffusers.models.normalization import RMSNorm
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import logging


class Odd(ModelMixin):
    def __init__(self, dim):
        super().__init__()
        self.norm = RMSNorm(dim, eps=1e-6)

    def forward(self, x, y, where):
        z = torch.view_as_complex(x)
        w = torch.view_as_complex(y)
        q = torch.view_as_real(z / w)
        h = self.norm(q.flatten(-2)).to(where)
        return torch.special.erfcx(h) * math.pi
"""


def port_with_report(tmp_path: Path, capsys, suffix: str) -> tuple[int, str, Path]:
    src = tmp_path / "odd.py"
    src.write_text(ODD)
    report = tmp_path / f"report{suffix}"
    code = main(["port", str(src), "-o", str(tmp_path / "out"), "--report", str(report)])
    return code, capsys.readouterr().err, report


def test_json_report_follows_the_schema_and_classifies_every_finding(tmp_path, capsys) -> None:
    code, err, path = port_with_report(tmp_path, capsys, ".json")
    assert code == 0, err
    report = json.loads(path.read_text())
    jsonschema.validate(report, load_schema())

    src = str(tmp_path / "odd.py")
    found = {(u["line"], u["rule"], u["confidence"]) for u in report["unported"]}
    assert found == {
        (18, "rewrite-complex-rope", "blocker"),
        (19, "rewrite-casts-and-moves", "needs review"),
        (20, "mark-unported", "mechanical"),
    }
    assert all(u["file"] == src for u in report["unported"])
    assert report["totals"] == {
        "rules_applied": sum(r["count"] for r in report["rules"]),
        "unported": 3,
        "unported_mechanical": 1,
        "unported_needs_review": 1,
        "unported_blocker": 1,
    }

    names = {n["name"]: n for n in report["names"]}
    assert names["math"]["resolution"] == "kept"
    assert names["diffusers.models.normalization.RMSNorm"]["resolution"] == "mapped"
    assert names["diffusers.models.normalization.RMSNorm"]["via"] == "support: rms_norm.RMSNorm"
    assert names["diffusers.models.modeling_utils.ModelMixin"]["resolution"] == "dropped"
    assert (
        "unused" in names["diffusers.utils.logging"]["reason"]
        or "not used" in (names["diffusers.utils.logging"]["reason"])
    )
    assert "unported: torch.special.erfcx" in names["torch"]["reason"]
    # Every import in the source is listed, in source order.
    imports = [
        n.lineno for n in ast.walk(ast.parse(ODD)) if isinstance(n, ast.Import | ast.ImportFrom)
    ]
    assert [n["line"] for n in report["names"]] == sorted(imports)

    # The printed summary is the short form of the same report.
    for u in report["unported"]:
        assert f"{src}:{u['line']}: [{u['rule']}, {u['confidence']}] {u['reason']}" in err
    for rule in report["rules"]:
        if rule["count"]:
            assert rule["id"] in err


def test_markdown_report_has_every_section(tmp_path, capsys) -> None:
    code, err, path = port_with_report(tmp_path, capsys, ".md")
    assert code == 0, err
    text = path.read_text()
    for heading in ("# Port report", "## Rules applied", "## Unported (3)", "## Names imported"):
        assert heading in text
    assert f"| `{tmp_path / 'odd.py'}:18` | `rewrite-complex-rope` | blocker |" in text
    assert "| `diffusers.models.modeling_utils.ModelMixin` | 6 | dropped |" in text


def test_report_with_another_suffix_is_a_one_line_error(tmp_path, capsys) -> None:
    code, err, path = port_with_report(tmp_path, capsys, ".txt")
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        f"porter: error: {path}: --report wants a .md or .json file"
    )
    assert not path.exists()


def test_schema_is_strict_about_confidence_classes() -> None:
    schema = load_schema()
    bad = {
        "file": "x.py",
        "line": 1,
        "rule": "map-ops",
        "reason": "r",
        "confidence": "maybe",
        "code": "c",
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema["properties"]["unported"]["items"])


USED_IMPORTS = """\
import numpy as np
import torch
from diffusers.utils import logging

logger = logging.get_logger(__name__)


def scale(x):
    return x * float(np.sqrt(2.0)) + torch.ones(1)
"""


def test_numpy_and_mapped_module_attributes_are_not_reported_dropped(tmp_path, capsys) -> None:
    src = tmp_path / "used.py"
    src.write_text(USED_IMPORTS)
    report = tmp_path / "report.json"
    assert main(["port", str(src), "-o", str(tmp_path / "out"), "--report", str(report)]) == 0
    names = {n["name"]: n for n in json.loads(report.read_text())["names"]}
    assert names["numpy"]["resolution"] == "kept"
    assert names["diffusers.utils.logging"]["resolution"] == "mapped"
    assert "logging.getLogger" in names["diffusers.utils.logging"]["reason"]
    assert "import numpy as np" in (tmp_path / "out" / "used.py").read_text()

"""`porter coverage` over every diffusers transformer and the transformers model files.

By default a sample of files (every kind: the package __init__, the ported family, a large
joint-attention model, Llama) is ported twice at once in two processes with different hash
seeds: nothing may crash, every output must compile, and the two runs must agree byte for
byte. With PORTER_FULL_COVERAGE=1 the whole coverage runs the same way (about 15 minutes on
two cores), and the figures committed in docs/coverage.md and README.md must be what porter
produces now.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from porter.cli import main
from porter.coverage import (
    DEFAULT_PACKAGES,
    README_END,
    README_START,
    Coverage,
    FileResult,
    Unported,
    construct_key,
    port_one,
    targets,
    without_times,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "coverage.md"
README = ROOT / "README.md"
REGENERATE = "porter coverage --markdown docs/coverage.md --readme README.md"


def test_the_default_packages_are_every_transformer_and_the_model_files() -> None:
    pytest.importorskip("transformers")
    files = [t.file for t in targets(list(DEFAULT_PACKAGES))]
    diffusers = [f for f in files if f.startswith("diffusers/")]
    folder = Path(targets(["diffusers.models.transformers"])[0].path).parent
    assert len(diffusers) == len(list(folder.glob("*.py")))
    assert "diffusers/models/transformers/__init__.py" in files
    others = [f.rsplit("/", 1)[1] for f in files if f.startswith("transformers/")]
    assert others and all(f.startswith(("modeling_", "modular_")) for f in others)
    assert "transformers/models/llama/modeling_llama.py" in files


@pytest.mark.parametrize(
    ("rule", "message", "key"),
    [
        pytest.param("map-ops", "torch.nn.functional.unfold has no MLX mapping",
                     "torch.nn.functional.unfold", id="qualified-name"),
        pytest.param("rewrite-complex-rope", "complex division has no real-pair form yet",
                     "rewrite-complex-rope: complex division has no real-pair form yet",
                     id="rule-and-message"),
    ],
)  # fmt: skip
def test_findings_group_by_construct(rule: str, message: str, key: str) -> None:
    assert construct_key(rule, message) == key


def test_a_crash_is_recorded_with_its_innermost_porter_frame(monkeypatch) -> None:
    import inspect

    import porter.engine

    def broken(module):  # type: ignore[no-untyped-def]
        return {}["no such key"]

    monkeypatch.setattr(porter.engine, "fix_precedence", broken)
    lines, first = inspect.getsourcelines(porter.engine.run_rules)
    line = first + next(i for i, text in enumerate(lines) if "fix_precedence(" in text)
    result = port_one(targets(["diffusers.models.transformers"])[0], None)
    assert result.status == "crash"
    assert result.crash == {
        "type": "KeyError",
        "message": "'no such key'",
        "where": f"porter/engine.py:{line}",
    }


def test_top_ten_counts_occurrences_and_files() -> None:
    def unported(name: str) -> Unported:
        return Unported("", 1, "mark-unported", "mechanical", f"{name} has no MLX mapping", name)

    results = [
        FileResult("a.py", "a", 3, 0.1, "ok", "0", unported=[unported("torch.x")] * 3),
        FileResult("b.py", "b", 3, 0.1, "ok", "0", unported=[unported("torch.y")]),
        FileResult("c.py", "c", 3, 0.1, "ok", "0", unported=[unported("torch.y")]),
        FileResult("d.py", "d", 3, 0.1, "ok", "0"),
    ]
    coverage = Coverage(["p"], {"p": "1"}, results, 1.0)
    top = [(t["construct"], t["count"], t["files"]) for t in coverage.top()]
    assert top == [("torch.x", 3, 1), ("torch.y", 2, 2)]
    assert coverage.clean == 1 and "**1 of 4**" in coverage.figure()


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        pytest.param(["nosuchpackage.models"], "package 'nosuchpackage' is not installed",
                     id="not-installed"),
        pytest.param(["diffusers.models.nosuch"], "no package 'diffusers.models.nosuch'",
                     id="no-such-subpackage"),
        pytest.param(["not a name"], "not a dotted package name", id="not-a-name"),
        pytest.param(["--jobs", "0"], "--jobs wants a positive number", id="no-jobs"),
        pytest.param(["--markdown", "x.txt"], "--markdown wants a .md file", id="markdown-suffix"),
        pytest.param(["--readme", "README.md"], "--readme links to the full table",
                     id="readme-without-table"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(capsys, argv: list[str], expect: str) -> None:
    assert main(["coverage", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expect in err


def test_help_has_an_example(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["coverage", "--help"])
    out = capsys.readouterr().out
    assert "example" in out and "porter coverage --markdown docs/coverage.md" in out


# -- the whole coverage, twice --------------------------------------------------------------------


# The whole run takes about 15 minutes on two cores, so the suite runs it only when asked
# (`PORTER_FULL_COVERAGE=1 pytest tests/test_coverage.py`); by default it runs a sample of
# files of every kind twice, which checks crashes, compiling and determinism in a minute.
FULL = os.environ.get("PORTER_FULL_COVERAGE") == "1"
SAMPLE = (
    "diffusers/models/transformers/__init__.py",
    "diffusers/models/transformers/transformer_z_image.py",
    "diffusers/models/transformers/transformer_lumina2.py",
    "diffusers/models/transformers/transformer_qwenimage.py",
    "diffusers/models/transformers/transformer_flux.py",
    "diffusers/models/transformers/transformer_sd3.py",
    "diffusers/models/transformers/dit_transformer_2d.py",
    "transformers/models/llama/modeling_llama.py",
)
_SAMPLE_RUN = """
import json, sys
from porter.coverage import DEFAULT_PACKAGES, port_one, targets
wanted = set(json.loads(sys.argv[1]))
for target in targets(list(DEFAULT_PACKAGES)):
    if target.file in wanted:
        r = port_one(target, None)
        print(json.dumps([r.file, r.status, r.digest, r.crash, r.error, r.not_compiling]))
"""


@pytest.fixture(scope="module")
def sample_twice() -> dict[str, list]:
    """The sample ported in two processes at once, with PYTHONHASHSEED 1 and 2."""
    pytest.importorskip("transformers")
    procs = {}
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        argv = [sys.executable, "-c", _SAMPLE_RUN, json.dumps(SAMPLE)]
        procs[seed] = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    runs = {}
    for seed, proc in procs.items():
        out, err = proc.communicate(timeout=1500)
        assert proc.returncode == 0, err
        runs[seed] = [json.loads(line) for line in out.splitlines()]
    return runs


def test_sample_ports_without_crash_compiles_and_is_deterministic(sample_twice) -> None:
    one, two = sample_twice["1"], sample_twice["2"]
    assert sorted(r[0] for r in one) == sorted(SAMPLE)
    failed = [f"{file}: {status} {crash or error or bad}" for file, status, _, crash, error, bad
              in one if status != "ok" or bad]  # fmt: skip
    assert failed == [], "\n".join(failed)
    assert [(r[0], r[2]) for r in one] == [(r[0], r[2]) for r in two]


@pytest.fixture(scope="module")
def twice(tmp_path_factory) -> dict[str, dict]:
    """Run the regenerate command in two scratch folders at once, with PYTHONHASHSEED 1 and 2,
    each on a copy of README.md."""
    if not FULL:
        pytest.skip("the full coverage run takes ~15 min; set PORTER_FULL_COVERAGE=1 to run it")
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    procs = {}
    start = time.perf_counter()
    for seed in ("1", "2"):
        folder = tmp_path_factory.mktemp(f"seed{seed}")
        (folder / "docs").mkdir()
        shutil.copy(README, folder / "README.md")
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        argv = [sys.executable, "-m", "porter", *REGENERATE.split()[1:]]
        argv += ["--jobs", "1", "--quiet", "--digest", "--json", "coverage.json"]
        procs[seed] = (
            folder,
            subprocess.Popen(
                argv, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            ),
        )
    runs = {}
    for seed, (folder, proc) in procs.items():
        out, err = proc.communicate()
        runs[seed] = {
            "rc": proc.returncode,
            "digest": out,
            "stderr": err,
            "json": json.loads((folder / "coverage.json").read_text()),
            "markdown": (folder / "docs" / "coverage.md").read_text(),
            "readme": (folder / "README.md").read_text(),
        }
    print(f"two coverage runs at once: {time.perf_counter() - start:.0f} s wall")
    return runs


def test_two_hash_seeds_give_identical_outputs(twice) -> None:
    one, two = twice["1"], twice["2"]
    assert one["digest"] == two["digest"]
    assert len(one["digest"].splitlines()) == one["json"]["totals"]["files"] + 1
    assert without_times(one["markdown"]) == without_times(two["markdown"])
    assert one["readme"] == two["readme"]


def test_no_file_crashes_and_every_output_compiles(twice) -> None:
    run = twice["1"]
    failed = [
        f"{f['file']}: {f['crash'] or f['error'] or f['not_compiling']}"
        for f in run["json"]["files"]
        if f["status"] != "ok" or f["not_compiling"]
    ]
    assert failed == [], "\n".join(failed)
    assert run["rc"] == 0, run["stderr"]


def test_docs_and_readme_show_what_porter_produces_now(twice) -> None:
    run = twice["1"]
    stale = f"stale: regenerate with `{REGENERATE}`"
    assert without_times(DOCS.read_text()) == without_times(run["markdown"]), stale
    assert README.read_text() == run["readme"], stale
    block = run["readme"][run["readme"].index(README_START) :]
    assert "(docs/coverage.md)" in block[: block.index(README_END)]

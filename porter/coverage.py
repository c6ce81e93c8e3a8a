"""`porter coverage`: port every model file of installed libraries in memory and count what is
left.

By default it runs over every ``*.py`` in ``diffusers/models/transformers/`` and the model files
(``modeling_*.py`` and ``modular_*.py``) of ``transformers/models/{llama,mistral,qwen2,gemma}``.
Each file goes through the same ``rewrite`` and ``render_files`` as ``porter port``; nothing is
written unless ``-o DIR`` asks for the outputs. For each file it records whether porter
crashed (an exception other than a one-line ``PorterError``: a porter bug, with its innermost
porter frame), whether every output compiles, and the constructs left unported by confidence
class. The table it writes (``--markdown``, ``--json``) gives the coverage figure, files with
nothing unported out of files run, and the constructs most often left unported.

The run is deterministic: ``--digest`` prints a sha256 of each file's outputs and of all of
them, so two runs (say with different ``PYTHONHASHSEED``) can be compared. The exit status is
0 when every file ported without a crash and every output compiles, 1 otherwise, 2 on bad
input.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import itertools
import json
import os
import re
import shlex
import signal
import sys
import time
import traceback
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from porter.engine import CONFIDENCE_CLASSES
from porter.errors import PorterError

# What `porter coverage` runs over when given no PACKAGE.
DEFAULT_PACKAGES = (
    "diffusers.models.transformers",
    "transformers.models.llama",
    "transformers.models.mistral",
    "transformers.models.qwen2",
    "transformers.models.gemma",
)
# In a transformers model package only these files hold model code; the rest are configuration
# classes and tokenizers.
_TRANSFORMERS_MODEL_FILES = ("modeling_*.py", "modular_*.py")
TOP = 10
# Marks around the block of README.md that `--readme` rewrites.
README_START = "<!-- porter coverage: start -->"
README_END = "<!-- porter coverage: end -->"
_NO_MAPPING = re.compile(r"^([\w.]+) has no MLX mapping$")


@dataclass(frozen=True)
class Target:
    """One file to port: ``spec`` is its dotted module name, ``file`` its path as listed."""

    spec: str
    file: str
    path: str


@dataclass(frozen=True)
class Unported:
    """A construct left unported; ``module`` names the library module it is in when it was
    ported with the file (transitively), else it is empty."""

    module: str
    line: int
    rule: str
    confidence: str
    message: str
    key: str


@dataclass
class FileResult:
    file: str
    module: str
    lines: int
    seconds: float
    status: str  # "ok", "crash" (a porter bug) or "error" (porter refused the file)
    digest: str
    outputs: list[str] = field(default_factory=list)
    unported: list[Unported] = field(default_factory=list)
    not_compiling: list[str] = field(default_factory=list)
    crash: dict[str, str] | None = None
    error: str | None = None

    def by_class(self) -> dict[str, int]:
        counts = Counter(u.confidence for u in self.unported)
        return {c: counts[c] for c in CONFIDENCE_CLASSES}

    @property
    def clean(self) -> bool:
        """Ported with nothing left: no crash or error, every output compiles, nothing unported."""
        return self.status == "ok" and not self.not_compiling and not self.unported


@dataclass
class Coverage:
    packages: list[str]
    versions: dict[str, str]
    results: list[FileResult]
    seconds: float

    @property
    def clean(self) -> int:
        return sum(r.clean for r in self.results)

    @property
    def failed(self) -> list[FileResult]:
        """Files that make the command fail: crashes, refusals, outputs that do not compile."""
        return [r for r in self.results if r.status != "ok" or r.not_compiling]

    def digest(self) -> str:
        lines = "".join(f"{r.digest}  {r.file}\n" for r in self.results)
        return hashlib.sha256(lines.encode("utf-8")).hexdigest()

    def totals(self) -> dict[str, int]:
        counts = Counter(u.confidence for r in self.results for u in r.unported)
        return {
            "files": len(self.results),
            "clean": self.clean,
            "crashes": sum(r.status == "crash" for r in self.results),
            "errors": sum(r.status == "error" for r in self.results),
            "not_compiling": sum(bool(r.not_compiling) for r in self.results),
            "lines": sum(r.lines for r in self.results),
            "unported": sum(counts.values()),
            **{c: counts[c] for c in CONFIDENCE_CLASSES},
        }

    def top(self, n: int = TOP) -> list[dict[str, Any]]:
        """The ``n`` constructs left unported most often, with the number of files each is in."""
        count: Counter[str] = Counter()
        files: dict[str, set[str]] = {}
        about: dict[str, Unported] = {}
        for r in self.results:
            for u in r.unported:
                count[u.key] += 1
                files.setdefault(u.key, set()).add(r.file)
                about.setdefault(u.key, u)
        ranked = sorted(count, key=lambda k: (-count[k], -len(files[k]), k))[:n]
        return [
            {
                "construct": k,
                "rule": about[k].rule,
                "confidence": about[k].confidence,
                "count": count[k],
                "files": len(files[k]),
            }
            for k in ranked
        ]

    def to_json(self) -> str:
        data = {
            "porter_coverage": 1,
            "packages": self.packages,
            "versions": self.versions,
            "totals": self.totals(),
            "coverage": {"clean": self.clean, "files": len(self.results)},
            "seconds": round(self.seconds, 1),
            "digest": self.digest(),
            "top": self.top(),
            "files": [asdict(r) | {"unported_by_class": r.by_class()} for r in self.results],
        }
        return json.dumps(data, indent=2) + "\n"

    def figure(self) -> str:
        t = self.totals()
        return (
            f"**{t['clean']} of {t['files']}** files port with nothing left unported "
            f"({self.versions_text()}; {t['lines']} source lines). "
            f"{t['crashes']} crashed, {t['errors']} were refused, "
            f"{t['not_compiling']} have outputs that do not compile. "
            f"{t['unported']} constructs are left unported: "
            + ", ".join(f"{t[c]} {c}" for c in CONFIDENCE_CLASSES)
            + "."
        )

    def versions_text(self) -> str:
        return ", ".join(f"{name} {v}" for name, v in self.versions.items())

    def top_table(self) -> list[str]:
        out = ["| construct | rule | class | count | files |", "|---|---|---|---:|---:|"]
        out += [
            f"| `{_cell(t['construct'])}` | `{t['rule']}` | {t['confidence']} | {t['count']} | "
            f"{t['files']} |"
            for t in self.top()
        ]
        return out

    def to_markdown(self, command: str) -> str:
        t = self.totals()
        out = ["# Porter coverage", ""]
        out.append(f"Generated by `{command}`; regenerate it with the same command.")
        out += ["", self.figure(), ""]
        out.append(
            f"Wall time {self.seconds:.1f} s; the seconds column is each file's port "
            "(rules, templates, black), which varies from machine to machine. A file's counts "
            "include the library modules ported with it (transitively)."
        )
        out += ["", f"## The {TOP} constructs left unported most often", ""]
        out += self.top_table()
        out += ["", "## Every file", ""]
        classes = " | ".join(CONFIDENCE_CLASSES)
        out.append(f"| file | lines | status | {classes} | seconds |")
        out.append("|---|---:|---|" + "---:|" * len(CONFIDENCE_CLASSES) + "---:|")
        for r in self.results:
            status = _status_text(r)
            counts = " | ".join(str(n) for n in r.by_class().values())
            out.append(f"| `{r.file}` | {r.lines} | {status} | {counts} | {r.seconds:.1f} s |")
        counts = " | ".join(str(t[c]) for c in CONFIDENCE_CLASSES)
        out.append(
            f"| **total: {t['files']} files** | {t['lines']} | {t['clean']} clean | {counts} | "
            f"{sum(r.seconds for r in self.results):.1f} s |"
        )
        problems = [r for r in self.results if r.status != "ok" or r.not_compiling]
        if problems:
            out += ["", "## Crashes, refusals and outputs that do not compile", ""]
            for r in problems:
                if r.crash:
                    c = r.crash
                    out.append(
                        f"- `{r.file}`: crash, {c['type']}: {_cell(c['message'])} "
                        f"(at `{c['where']}`)"
                    )
                if r.error:
                    out.append(f"- `{r.file}`: refused: {_cell(r.error)}")
                out += [f"- `{r.file}`: {_cell(p)}" for p in r.not_compiling]
        return "\n".join(out) + "\n"

    def readme_block(self, table: str) -> str:
        """The block between the README's coverage marks."""
        out = [README_START, self.figure(), "", f"The {TOP} constructs left unported most often:"]
        out += ["", *self.top_table(), ""]
        out.append(f"Every file, with its counts: [{table}]({table}).")
        out.append(README_END)
        return "\n".join(out)


def _status_text(r: FileResult) -> str:
    if r.status == "crash":
        return "**crash**"
    if r.status == "error":
        return "**refused**"
    if r.not_compiling:
        return "**does not compile**"
    return "clean" if r.clean else "unported"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").replace("`", "'")


def without_times(markdown: str) -> str:
    """``markdown`` with its timings blanked: what two runs of the same porter agree on."""
    text = re.sub(r"\| [\d.]+ s \|$", "| |", markdown, flags=re.MULTILINE)
    return re.sub(r"^Wall time [\d.]+ s;", "Wall time ;", text, flags=re.MULTILINE)


# -- finding the files --------------------------------------------------------------------------


def targets(packages: list[str]) -> list[Target]:
    """The files of each package, by dotted module name, without importing any of them."""
    found: list[Target] = []
    for package in packages:
        folder, root = _package_folder(package)
        patterns = ("*.py",)
        if re.fullmatch(r"transformers\.models\.\w+", package):
            patterns = _TRANSFORMERS_MODEL_FILES
        paths = sorted({p for pattern in patterns for p in folder.glob(pattern)})
        if not paths:
            raise PorterError("no Python files to port in this package", package)
        for path in paths:
            spec = package if path.name == "__init__.py" else f"{package}.{path.stem}"
            found.append(Target(spec, path.relative_to(root).as_posix(), str(path)))
    return found


def _package_folder(package: str) -> tuple[Path, Path]:
    """The folder of ``package`` and the folder its top-level package sits in."""
    parts = package.split(".")
    if not all(p.isidentifier() for p in parts):
        raise PorterError(
            "not a dotted package name (for example transformers.models.llama)", package
        )
    try:
        top = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        top = None
    if top is None or not top.submodule_search_locations:
        raise PorterError(f"package {parts[0]!r} is not installed; pip install it first", package)
    base = Path(next(iter(top.submodule_search_locations)))
    folder = base.joinpath(*parts[1:])
    if not (folder / "__init__.py").is_file():
        raise PorterError(f"no package {package!r} in the installed {parts[0]}", package)
    return folder, base.parent


def _versions(packages: list[str]) -> dict[str, str]:
    versions = {}
    for top in sorted({p.split(".")[0] for p in packages}):
        try:
            versions[top] = importlib.metadata.version(top)
        except importlib.metadata.PackageNotFoundError:
            versions[top] = "unknown version"
    return versions


# -- porting one file ---------------------------------------------------------------------------


def _warm_up() -> None:
    """Load the rules and templates once per worker, so no file's time includes it."""
    from porter.engine import discover_rules

    discover_rules()


class PortTimeout(Exception):
    """A port that ran past ``--timeout``: recorded as a crash where porter was at the time."""


def _alarm(signum: int, frame: object) -> None:
    raise PortTimeout("the port ran past --timeout")


def port_one(target: Target, outdir: str | None, timeout: int = 0) -> FileResult:
    """Port ``target`` in memory as ``porter port`` does (the library code it needs included),
    write it into ``outdir``/<module> if given, and check the outputs."""
    from porter.locate import locate
    from porter.pipeline import generate
    from porter.write import write_files

    start = time.perf_counter()
    lines = 0
    result = FileResult(target.file, target.spec, 0, 0.0, "ok", "")
    if timeout:
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(timeout)
    try:
        source = locate(target.spec)
        lines = len(source.text.splitlines())
        folder = Path(outdir or "coverage") / target.spec
        command = shlex.join(["porter", "port", target.spec, "-o", str(folder)])
        files, ctx, library = generate(source, command)
        result.outputs = sorted(files)
        result.unported = [
            Unported(
                c.source.display if c is not ctx else "",
                f.line,
                f.rule,
                f.confidence,
                f.message,
                construct_key(f.rule, f.message),
            )
            for c in [ctx, *library]
            for f in sorted(c.findings, key=lambda f: (f.line, f.rule, f.message))
        ]
        result.not_compiling = _compile_all(files)
        result.digest = _digest(files)
        if outdir is not None:
            write_files(folder, files)
    except PorterError as err:
        result.status, result.error = "error", str(err)
    # Any other exception is a porter bug; it is recorded with where it happened, and the
    # command fails once every file has run.
    except Exception as err:  # noqa: BLE001
        result.status = "crash"
        message = str(err).splitlines()[0] if str(err) else ""
        result.crash = {"type": type(err).__name__, "message": message, "where": _where(err)}
    finally:
        signal.alarm(0)
    if result.status != "ok":
        text = f"{result.status}: {result.error or result.crash}"
        result.digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    result.lines = lines
    result.seconds = round(time.perf_counter() - start, 2)
    return result


def construct_key(rule: str, message: str) -> str:
    """What groups findings into one construct: the qualified name a rule had no mapping for,
    else the rule and its message."""
    match = _NO_MAPPING.match(message)
    return match.group(1) if match else f"{rule}: {message}"


def _compile_all(files: dict[str, str]) -> list[str]:
    problems = []
    for name in sorted(files):
        try:
            compile(files[name], name, "exec")
        except SyntaxError as err:
            problems.append(f"{name}:{err.lineno}: does not compile: {err.msg}")
    return problems


def _digest(files: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode("utf-8") + b"\0" + files[name].encode("utf-8") + b"\0")
    return h.hexdigest()


def _where(err: BaseException) -> str:
    """file:line of the innermost frame in porter's own code: porter/, rules/ or templates/."""
    import porter.rules
    import porter.templates

    folders = [Path(__file__).resolve().parent]
    folders += [Path(p).resolve() for p in (*porter.rules.__path__, *porter.templates.__path__)]
    # An error LibCST raises about what a rule returned surfaces in the engine's loop over the
    # rules: name the rule that was running.
    rule = ""
    frames = [frame for frame, _ in traceback.walk_tb(err.__traceback__)]
    for frame, inner in itertools.pairwise(frames):
        rule_cls = frame.f_locals.get("rule_cls")
        in_libcst = "libcst" in Path(inner.f_code.co_filename).parts
        if in_libcst and isinstance(getattr(rule_cls, "id", None), str):
            rule = f" (rule {rule_cls.id})"
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        path = Path(frame.filename).resolve()
        for folder in folders:
            if path.is_relative_to(folder):
                return f"{path.relative_to(folder.parent).as_posix()}:{frame.lineno}{rule}"
    return "outside porter"


# -- running all of them ------------------------------------------------------------------------


def run_coverage(
    packages: list[str],
    jobs: int = 2,
    outdir: str | None = None,
    progress: bool = False,
    timeout: int = 0,
) -> Coverage:
    """Port every file of ``packages`` with ``jobs`` worker processes; a file that takes more
    than ``timeout`` seconds (0: no limit) is recorded as a crash."""
    todo = targets(packages)
    start = time.perf_counter()
    # Largest files first, so a long port does not start last and hold up the end.
    order = sorted(todo, key=lambda t: -Path(t.path).stat().st_size)
    results: dict[str, FileResult] = {}
    with ProcessPoolExecutor(max_workers=jobs, initializer=_warm_up) as pool:
        futures = {t.spec: pool.submit(port_one, t, outdir, timeout) for t in order}
        for n, target in enumerate(order, start=1):
            try:
                results[target.spec] = futures[target.spec].result()
            except BrokenProcessPool:
                results[target.spec] = _died(target)
            if progress:
                r = results[target.spec]
                print(
                    f"[{n}/{len(order)}] {r.file}: {_status_text(r)}, "
                    f"{len(r.unported)} unported, {r.seconds:.1f} s",
                    file=sys.stderr,
                )
    elapsed = time.perf_counter() - start
    ordered = [results[t.spec] for t in todo]
    return Coverage(packages, _versions(packages), ordered, elapsed)


def _died(target: Target) -> FileResult:
    """A file whose worker process died (killed, out of memory, or a crash in C code)."""
    why = "a worker process died; this file and the ones after it did not finish"
    crash = {"type": "BrokenProcessPool", "message": why, "where": "outside porter"}
    digest = hashlib.sha256(f"crash: {crash}".encode()).hexdigest()
    return FileResult(target.file, target.spec, 0, 0.0, "crash", digest, crash=crash)


def write_readme(readme: Path, block: str) -> None:
    from porter.write import write_text_atomic

    try:
        text = readme.read_text(encoding="utf-8")
    except OSError as err:
        raise PorterError(f"cannot read: {err.strerror}", str(readme)) from None
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise PorterError(
            f"no coverage block to replace; add the lines {README_START} and {README_END}",
            str(readme),
        )
    write_text_atomic(readme, text[:start] + block + text[end + len(README_END) :])


def run(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise PorterError("--jobs wants a positive number of worker processes")
    if args.timeout < 0:
        raise PorterError("--timeout wants a number of seconds (0: no limit)")
    for option, suffix in (("markdown", ".md"), ("json", ".json")):
        value = getattr(args, option)
        if value is not None and not value.endswith(suffix):
            raise PorterError(f"--{option} wants a {suffix} file", value)
    if args.readme and not args.markdown:
        raise PorterError("--readme links to the full table: give --markdown FILE too")
    packages = args.packages or list(DEFAULT_PACKAGES)
    coverage = run_coverage(packages, args.jobs, args.output, not args.quiet, args.timeout)
    command = shlex.join(_command(args))
    if args.markdown:
        from porter.write import write_text_atomic

        write_text_atomic(Path(args.markdown), coverage.to_markdown(command))
    if args.json:
        from porter.write import write_text_atomic

        write_text_atomic(Path(args.json), coverage.to_json())
    if args.readme:
        readme = Path(args.readme).resolve()
        link = Path(os.path.relpath(Path(args.markdown).resolve(), readme.parent)).as_posix()
        write_readme(Path(args.readme), coverage.readme_block(link))
    if args.digest:
        for r in coverage.results:
            print(f"{r.digest}  {r.file}")
        print(f"{coverage.digest()}  (all {len(coverage.results)} files)")
    t = coverage.totals()
    print(
        f"porter coverage: {t['clean']} of {t['files']} files with nothing unported; "
        f"{t['unported']} constructs unported; {t['crashes']} crashes, {t['errors']} refused, "
        f"{t['not_compiling']} not compiling; {coverage.seconds:.1f} s",
        file=sys.stderr,
    )
    for r in coverage.failed:
        why = r.crash and f"{r.crash['type']}: {r.crash['message']} at {r.crash['where']}"
        print(
            f"porter: error: {r.file}: {why or r.error or '; '.join(r.not_compiling)}",
            file=sys.stderr,
        )
    return 1 if coverage.failed else 0


def _command(args: argparse.Namespace) -> list[str]:
    """The command line to record in the table: the options that shape what it says."""
    argv = ["porter", "coverage", *args.packages]
    for option in ("markdown", "readme"):
        if getattr(args, option):
            argv += [f"--{option}", getattr(args, option)]
    return argv


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "coverage",
        help="port every model file of installed libraries in memory and tabulate what is left",
        description=(
            "Port every file of each PACKAGE in memory (nothing is written unless -o is given)\n"
            "and report, per file, whether porter crashed, whether every output compiles, and\n"
            "the constructs left unported by confidence class. PACKAGE defaults to\n  "
            + "\n  ".join(DEFAULT_PACKAGES)
            + "\na transformers.models.NAME package contributes its modeling_*.py and\n"
            "modular_*.py files, any other package every *.py. Exits 1 if any file crashed, was\n"
            "refused or has an output that does not compile, 2 on bad input.\n\n"
            "examples:\n"
            "  porter coverage --markdown docs/coverage.md --readme README.md\n"
            "  PYTHONHASHSEED=1 porter coverage --digest > a.txt  # compare two runs\n"
            "  porter coverage transformers.models.llama --json llama.json -o out/llama"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "packages", nargs="*", metavar="PACKAGE", help="dotted package names (default: see above)"
    )
    parser.add_argument("--jobs", "-j", type=int, default=2, help="worker processes (default: 2)")
    parser.add_argument(
        "--timeout",
        type=int,
        default=600,
        metavar="S",
        help="record a file that takes more than S seconds as a crash (default: 600; 0: none)",
    )
    parser.add_argument("--markdown", metavar="FILE.md", help="write the table as Markdown")
    parser.add_argument("--json", metavar="FILE.json", help="write the table as JSON")
    parser.add_argument(
        "--readme",
        metavar="README.md",
        help=f"rewrite the block between {README_START} and {README_END} (needs --markdown)",
    )
    parser.add_argument(
        "--digest",
        action="store_true",
        help="print the sha256 of each file's outputs and of all of them",
    )
    parser.add_argument(
        "-o", "--output", metavar="DIR", help="also write each port into DIR/<module>/"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-file progress")
    parser.set_defaults(func=run)

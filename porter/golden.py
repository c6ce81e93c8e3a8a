"""Golden tests: a ported MLX model against the PyTorch model it came from.

This module needs torch (porter's `test` extra); the generated code never imports it. A golden
test gives the torch model seeded non-trivial weights (`randomize_`), moves them to
MLX, feeds both sides the same inputs (`to_mx` converts nested lists of tensors) and compares
the outputs with `assert_close`, which prints the error it saw and puts it in the assertion
message, so a passing run still shows how close the port is. `run_golden` strings these together for one
`GoldenCase` the way a user ports a model: save_pretrained, `porter convert-weights`, the
package's strict `load_model`, identical inputs. The golden tests that porter renders from a
recipe (`templates/golden_test.py.j2`) call it.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import torch

from porter.bisect import bisect

__all__ = [
    "Error",
    "GoldenCase",
    "assert_close",
    "build_pair",
    "build_torch",
    "case_inputs",
    "compare",
    "randomize_",
    "run_golden",
    "run_pair",
    "state_dict_to_mx",
    "to_mx",
    "to_np",
]

# Norm layers whose weight multiplies a normalized input: a weight near 0 would hide the
# input, so these get 1 + std * noise instead of std * noise.
_NORM_CLASS_MARKERS = ("Norm",)


def randomize_(module: torch.nn.Module, seed: int, std: float = 0.1) -> torch.nn.Module:
    """Overwrites every parameter and persistent floating buffer of `module` with seeded noise,
    in place.

    Norm weights become ``1 + std * randn`` and everything else ``std * randn``, so zero-initialised
    parameters (pad tokens, biases, adaLN projections) take part in the comparison too. Raises if
    a parameter ends up all zeros. Non-persistent buffers (tables computed from the config, out
    of the state dict) keep their values: no checkpoint carries them to the port, which computes
    them itself. Returns `module`.
    """
    gen = torch.Generator().manual_seed(seed)
    norm_weights = {
        f"{name}.weight" if name else "weight"
        for name, sub in module.named_modules()
        if any(marker in type(sub).__name__ for marker in _NORM_CLASS_MARKERS)
    }
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=gen, dtype=torch.float32) * std
            if name in norm_weights:
                noise += 1.0
            param.copy_(noise.to(param.dtype))
            if not torch.count_nonzero(param):
                raise AssertionError(f"randomize_: parameter {name} is all zeros")
        persistent = set(module.state_dict())
        for name, buf in module.named_buffers():
            if buf.is_floating_point() and name in persistent:
                buf.copy_(torch.randn(buf.shape, generator=gen).to(buf.dtype) * std)
    return module


def state_dict_to_mx(module: torch.nn.Module) -> list[tuple[str, mx.array]]:
    """The module's state dict as (key, array) pairs for `mlx.nn.Module.load_weights`."""
    return [(key, to_mx(value)) for key, value in module.state_dict().items()]


def to_mx(obj: Any) -> Any:
    """Torch tensors, alone or nested in lists, tuples and dicts, as MLX arrays.

    None, bools, numbers and strings pass through unchanged (flags such as return_dict=False).
    """
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        return mx.array(obj.detach().cpu().numpy())
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_mx(item) for item in obj)
    if isinstance(obj, dict):
        return {key: to_mx(value) for key, value in obj.items()}
    raise TypeError(f"to_mx: cannot convert {type(obj).__name__}")


def to_np(obj: Any) -> np.ndarray:
    """One torch tensor (complex ones through view_as_real) or MLX array as a float64 array."""
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu()
        if obj.is_complex():
            obj = torch.view_as_real(obj)
        return obj.to(torch.float64).numpy()
    if isinstance(obj, mx.array):
        return np.array(obj.astype(mx.float32), dtype=np.float64)
    raise TypeError(f"to_np: cannot convert {type(obj).__name__}")


def _leaves(reference: Any, candidate: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    """Pairs up the arrays of two nested structures, failing on any difference in structure."""
    if isinstance(reference, (list, tuple)):
        assert isinstance(candidate, (list, tuple)), f"{path}: list vs {type(candidate).__name__}"
        assert len(reference) == len(candidate), (
            f"{path}: {len(reference)} items vs {len(candidate)}"
        )
        for i, (ref, cand) in enumerate(zip(reference, candidate)):
            yield from _leaves(ref, cand, f"{path}[{i}]")
    elif isinstance(reference, Mapping):  # a transformers ModelOutput: its fields set
        fields = _fields(candidate)
        assert fields is not None, f"{path}: fields vs {type(candidate).__name__}"
        assert set(reference) == set(fields), (
            f"{path}: fields {sorted(reference)} vs {sorted(fields)}"
        )
        for key in reference:
            yield from _leaves(reference[key], fields[key], f"{path}.{key}")
    elif reference is None:
        assert candidate is None, f"{path}: None vs {type(candidate).__name__}"
    else:
        yield path, reference, candidate


def _fields(output: Any) -> dict[str, Any] | None:
    """The fields of a mapping or a dataclass output that are not None."""
    if isinstance(output, Mapping):
        return dict(output)
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        values = {f.name: getattr(output, f.name) for f in dataclasses.fields(output)}
        return {key: value for key, value in values.items() if value is not None}
    return None


@dataclass(frozen=True)
class Error:
    """The largest absolute difference seen, and the largest |reference| value it is judged by."""

    max_abs: float
    ref_max: float
    where: str

    def relative_bound(self, rel: float) -> float:
        """rel × max(1, max |reference|): a float32 budget that scales with the output."""
        return rel * max(1.0, self.ref_max)


def compare(reference: Any, candidate: Any) -> Error:
    """Max abs error between two equally nested structures of tensors or arrays.

    Shapes must match exactly; NaN or inf anywhere counts as an infinite error.
    """
    worst, ref_max, where = 0.0, 0.0, "-"
    for path, ref, cand in _leaves(reference, candidate, "out"):
        ref_np, cand_np = to_np(ref), to_np(cand)
        assert ref_np.shape == cand_np.shape, f"{path}: shape {ref_np.shape} vs {cand_np.shape}"
        if ref_np.size == 0:
            continue
        finite = np.isfinite(ref_np).all() and np.isfinite(cand_np).all()
        err = float(np.max(np.abs(ref_np - cand_np))) if finite else math.inf
        ref_max = max(ref_max, float(np.max(np.abs(ref_np))))
        if where == "-" or err > worst:
            worst, where = err, path
    return Error(worst, ref_max, where)


def assert_close(
    reference: Any,
    candidate: Any,
    *,
    label: str,
    rel: float | None = None,
    atol: float | None = None,
) -> Error:
    """Compares, prints the error, and fails if it exceeds the bound.

    Exactly one of `rel` (bound = rel × max(1, max |reference|)) or `atol` (a fixed bound) is
    given. The printed line and the assertion message carry the same numbers.
    """
    if (rel is None) == (atol is None):
        raise ValueError("assert_close: give exactly one of rel and atol")
    err = compare(reference, candidate)
    bound = err.relative_bound(rel) if rel is not None else atol
    kind = f"rel {rel:g} x max(1, |ref|)" if rel is not None else f"atol {atol:g}"
    line = (
        f"{label}: max abs err {err.max_abs:.3g} at {err.where}, max |ref| {err.ref_max:.3g}, "
        f"bound {bound:.3g} ({kind})"
    )
    print(line)
    assert err.max_abs <= bound, line
    return err


@dataclass(frozen=True)
class GoldenCase:
    """One golden comparison: a small config, an input builder, a seed and a tolerance.

    ``inputs(gen)`` returns ``(args, kwargs)`` of torch tensors (nested in lists where the model
    takes lists) built from the seeded generator; the MLX side gets the same values through
    `to_mx`. ``rel`` is the bound relative to the output scale, see `Error.relative_bound`.

    Without ``config_class`` the model takes the config as keyword arguments (diffusers);
    with it, one config object, ``config_class(**config)`` (transformers). ``model_class``
    names the class when a recipe's cases build more than one.
    """

    name: str
    config: dict[str, Any]
    inputs: Callable[[torch.Generator], tuple[tuple[Any, ...], dict[str, Any]]]
    seed: int = 0
    rel: float = 1e-4
    config_class: Callable[..., Any] | None = None
    model_class: str | None = None


def build_torch(torch_class: type[torch.nn.Module], case: GoldenCase) -> torch.nn.Module:
    """The torch model at the case's config: keyword arguments, or one config object."""
    if case.config_class is None:
        return torch_class(**case.config)
    return torch_class(case.config_class(**case.config))


def build_pair(
    torch_class: type[torch.nn.Module],
    load_model: Callable[[Path, Path], Any],
    case: GoldenCase,
    folder: Path,
    port: Path | None = None,
) -> tuple[torch.nn.Module, Any]:
    """The torch model with seeded weights and its MLX port, loaded the way a user loads it.

    The torch model is saved with ``save_pretrained`` into ``folder/torch``, converted with
    ``porter convert-weights --port PORT`` (whose ``LAYOUT_PLAN`` transposes conv weights;
    by default the package whose ``weights.py`` defines ``load_model``) and loaded by
    ``load_model`` (strict).
    """
    from porter.cli import main as porter_main

    torch.manual_seed(case.seed)
    torch_model = build_torch(torch_class, case).eval()
    randomize_(torch_model, case.seed)
    checkpoint = folder / "torch"
    torch_model.save_pretrained(checkpoint)
    weights = folder / "mlx.safetensors"
    port = port or _port_of(load_model)
    plan = ["--port", str(port)] if port is not None else []
    code = porter_main(["convert-weights", str(checkpoint), "-o", str(weights), *plan])
    if code != 0:
        raise AssertionError(f"porter convert-weights {checkpoint} exited with {code}")
    return torch_model, load_model(checkpoint / "config.json", weights)


def _port_of(load_model: Callable[..., Any]) -> Path | None:
    """The generated package whose weights module defines ``load_model`` (it declares the
    port's ``LAYOUT_PLAN``), or None for a loader defined elsewhere."""
    module = inspect.getmodule(load_model)
    if module is None or not hasattr(module, "LAYOUT_PLAN") or module.__file__ is None:
        return None
    return Path(module.__file__).parent


def case_inputs(case: GoldenCase) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The case's (args, kwargs) as torch tensors, from a generator seeded with seed + 1."""
    return case.inputs(torch.Generator().manual_seed(case.seed + 1))


def run_pair(torch_model: torch.nn.Module, mlx_model: Any, case: GoldenCase) -> tuple[Any, Any]:
    """Both models on the case's inputs: (torch reference, MLX output)."""
    args, kwargs = case_inputs(case)
    with torch.no_grad():
        reference = torch_model(*args, **kwargs)
    output = mlx_model(*to_mx(args), **to_mx(kwargs))
    mx.eval(output)
    return reference, output


def run_golden(
    torch_class: type[torch.nn.Module],
    load_model: Callable[[Path, Path], Any],
    case: GoldenCase,
    folder: Path,
) -> Error:
    """The whole golden comparison for one case; fails (after printing) above the bound.

    On failure it first prints the `porter.bisect` table of the same pair: every module call
    in execution order with its error, and the first one above the bound.
    """
    torch_model, mlx_model = build_pair(torch_class, load_model, case, folder)
    reference, output = run_pair(torch_model, mlx_model, case)
    label = f"{torch_class.__name__} {case.name}"
    try:
        return assert_close(reference, output, rel=case.rel, label=label)
    except AssertionError:
        report = bisect(torch_model, mlx_model, *case_inputs(case), rel=case.rel, label=label)
        print(report.table())
        raise

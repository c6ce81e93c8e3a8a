"""Regenerate rules/tensor_methods.toml: torch.Tensor methods that MLX arrays lack.

porter's mark_unported rule flags a call of one of these methods that no rule rewrote, so a
port never keeps `x.masked_fill(...)` silently. Run with torch and mlx installed:

    python scripts/tensor_methods.py > rules/tensor_methods.toml
"""

import mlx.core as mx
import torch

PYTHON_TYPES = (list, dict, str, bytes, set, tuple, int, float, complex, object)


def main() -> None:
    mlx_names = set(dir(mx.array))
    python_names = {name for t in PYTHON_TYPES for name in dir(t)}
    names = sorted(
        name
        for name in dir(torch.Tensor)
        if not name.startswith("_")
        and callable(getattr(torch.Tensor, name, None))
        and name not in mlx_names
        and name not in python_names
    )
    print("# torch.Tensor methods with no method of the same name on mx.array; see")
    print(f"# scripts/tensor_methods.py (torch {torch.__version__}, mlx {mx.__version__}).")
    print("methods = [")
    for name in names:
        print(f'  "{name}",')
    print("]")


if __name__ == "__main__":
    main()

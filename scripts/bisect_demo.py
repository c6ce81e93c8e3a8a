"""Regenerates docs/bisect_half_split_rope.png, the `porter bisect` plot in the README.

It copies generated/z_image, plants a half-split RoPE in the copy (pairs x[i] with x[i + d/2]
instead of x[2i] with x[2i+1]) and runs `porter bisect z-image --port COPY --plot ...` on the
basic_batch2 golden case, printing the table it shows. Needs the `test` extra (torch, diffusers,
matplotlib). Run it from the repository root:

    python scripts/bisect_demo.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLOT = ROOT / "docs" / "bisect_half_split_rope.png"

# The planted bug: each (old, new) must occur exactly once in transformer_z_image.py.
HALF_SPLIT_ROPE = [
    (
        "x = x_in.astype(mx.float32).reshape(*x_in.shape[:-1], -1, 2)",
        "x = mx.stack(mx.split(x_in.astype(mx.float32), 2, axis=-1), axis=-1)",
    ),
    (
        "x_out = mx.flatten(complex_mul(x, freqs_cis), 3)",
        "x_out = mx.concatenate(unbind(complex_mul(x, freqs_cis), axis=-1), axis=-1)",
    ),
]


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from porter.cli import main as porter_main

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "half_split_rope"
        shutil.copytree(ROOT / "generated" / "z_image", copy)
        model = copy / "transformer_z_image.py"
        text = model.read_text()
        for old, new in HALF_SPLIT_ROPE:
            if text.count(old) != 1:
                raise SystemExit(f"{model.name}: expected one {old!r}; update the planted bug")
            text = text.replace(old, new)
        model.write_text(text)

        # From inside the temporary folder, so that the plot's title names the copy briefly.
        os.chdir(tmp)
        code = porter_main(["bisect", "z-image", "--port", copy.name, "--plot", str(PLOT)])
    return 0 if code == 1 else 1  # the planted bug must diverge


if __name__ == "__main__":
    sys.exit(main())

# SPDX-License-Identifier: MIT
"""docs/python.md's snippets run as written: the ```python cells in order, as one notebook, and the
```python dump program on a store written by `shapebias dump`."""
import os
import re
import subprocess
import sys

from conftest import SOURCE


def blocks(tag):
    text = open(os.path.join(SOURCE, "docs", "python.md")).read()
    return re.findall(rf"```{tag}\n(.*?)```", text, re.S)


def run(code, *args):
    p = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_notebook_cells():
    cells = blocks("python")
    assert len(cells) == 3
    out = run("\n".join(cells))
    assert "mean TV per channel:" in out and "maps per channel: [32 32]" in out
    assert "TypeError: total_variation: x [..., H, W]: expected float32 or float64, got float16" in out
    assert "unit 0: best label 1, IoU 0." in out and "unit 1: best label 2" in out


def test_reading_a_dump(store):
    [program] = blocks("python dump")
    out = run(program, store, "features.3")
    assert out.startswith("100 rows; unit 0's top inputs: [")

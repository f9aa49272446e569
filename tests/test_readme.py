"""The README's system example runs and prints what it says it prints."""

import contextlib
import io
import pathlib
import re


def test_readme_example_runs_as_documented():
  text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
  block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "osys.System(" in b)
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(block, "README.md", "exec"), {})
  lines = out.getvalue().splitlines()
  assert lines == ["[1. 0.]", "[0. 1.]", "2"], lines

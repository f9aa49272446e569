"""Python source as data: what a file defines, what kind of tests it holds, and the code in
a model's reply. Pure functions over text and `ast`; nothing here runs code."""

from __future__ import annotations

import ast
import re
import textwrap

# A fenced block; an unterminated last block (a reply cut by its token budget) counts too.
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:\n[ \t]*```|\Z)", re.DOTALL)
_CODE_LANGS = ("", "python", "py", "python3")
MAX_CUTS = 80                          # trailing lines dropped at most while looking for a parse


def parse(text: str) -> ast.Module | None:
  try:
    return ast.parse(text)
  except (SyntaxError, ValueError, RecursionError, MemoryError):   # ValueError: NUL bytes
    return None


def syntax_error(text: str) -> str | None:
  """"line N: message" when `text` does not compile (a parse, plus the compiler's checks such
  as `return` outside a function), else None. Compiling runs nothing."""
  try:
    compile(text, "<code>", "exec", dont_inherit=True)
  except SyntaxError as e:
    return f"line {e.lineno}: {e.msg}"
  except (ValueError, RecursionError, MemoryError) as e:
    return f"{type(e).__name__}: {e}"
  return None


def defines(tree: ast.Module, name: str) -> bool:
  """Whether the module's top level binds `name` (def, class, assignment or import)."""
  for node in tree.body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      if node.name == name:
        return True
    elif isinstance(node, (ast.Assign, ast.AnnAssign)):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      if any(isinstance(t, ast.Name) and t.id == name for t in targets):
        return True
    elif isinstance(node, (ast.Import, ast.ImportFrom)) and any(
        (a.asname or a.name.split(".")[0]) == name for a in node.names):
      return True
  return False


def tests_kind(tree: ast.Module) -> str | None:
  """How a test file tests: "check" (HumanEval's check(candidate)), "unittest" (a TestCase
  class, BigCodeBench), "asserts" (top-level assert statements), or None (no tests)."""
  if any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in tree.body):
    return "check"
  for node in tree.body:
    if isinstance(node, ast.ClassDef) and any("TestCase" in ast.unparse(b) for b in node.bases):
      return "unittest"
  if any(isinstance(n, ast.Assert) for n in tree.body):
    return "asserts"
  return None


def signature_head(prompt: str, entry_point: str) -> str:
  """The prompt up to the entry point's docstring: imports, helpers and its `def` line(s),
  which a completion that writes only the body continues."""
  tree = parse(prompt)
  fn = None if tree is None else next(
      (n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
       and n.name == entry_point), None)
  if fn is None or not fn.body:
    return prompt
  first = fn.body[0]
  if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
          and isinstance(first.value.value, str)):
    return prompt
  lines = prompt.splitlines(keepends=True)
  return "".join(lines[:first.lineno - 1])


def longest_parsing_prefix(text: str) -> str | None:
  """`text` without the fewest trailing lines that make it parse (a reply cut mid-line)."""
  lines = text.rstrip().splitlines()
  for keep in range(len(lines), max(0, len(lines) - MAX_CUTS) - 1, -1):
    candidate = "\n".join(lines[:keep])
    if keep and candidate.strip() and parse(candidate) is not None:
      return candidate + "\n"
  return None


def code_blocks(reply: str) -> list[str]:
  """The Python (or unlabelled) fenced blocks of a reply, in order."""
  return [body for lang, body in _FENCE.findall(reply) if lang.lower() in _CODE_LANGS]


def _missing_imports(code: str, head: str) -> str:
  """The head's import lines that `code` lacks (a reply that dropped `from typing import List`)."""
  lines = [line for line in head.splitlines() if line.startswith(("import ", "from "))
           and isinstance(getattr(parse(line), "body", [None])[0], (ast.Import, ast.ImportFrom))]
  return "".join(f"{line}\n" for line in lines if line not in code)


def extract_code(reply: str, code_prompt: str, entry_point: str) -> str:
  """The program a reply means: a fenced block or the raw text, either whole or as the body
  that continues `code_prompt`, cut to the longest prefix that parses; the first reading
  that defines `entry_point` wins. Otherwise the reply's code as it is (the executor then
  counts a syntax error or a missing entry point)."""
  blocks = code_blocks(reply) or [reply]
  readings = []
  for block in blocks:
    block = block.strip("\n")
    dedented = textwrap.dedent(block)
    readings += [dedented, code_prompt + block, code_prompt + textwrap.indent(dedented, "    ")]
  for text in readings:
    code = longest_parsing_prefix(text)
    tree = None if code is None else parse(code)
    if tree is not None and defines(tree, entry_point):
      return _missing_imports(code, code_prompt) + code
  fallback = textwrap.dedent(blocks[0].strip("\n"))
  return (longest_parsing_prefix(fallback) or fallback).strip("\n") + "\n"


def extract_tests(reply: str, entry_point: str) -> str:
  """Test code from a reply: its fenced blocks (or the raw text) cut to a parsing prefix,
  without any redefinition of the entry point; else its `assert` lines one by one."""
  blocks = code_blocks(reply) or [reply]
  text = "\n".join(textwrap.dedent(b.strip("\n")) for b in blocks)
  code = longest_parsing_prefix(text)
  tree = None if code is None else parse(code)
  if tree is not None and tests_kind(tree) is not None:
    kept = [n for n in tree.body if not (isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                                         and n.name == entry_point)]
    return "\n".join(ast.unparse(n) for n in kept) + "\n"
  asserts = [line.strip() for line in reply.splitlines() if line.strip().startswith("assert ")]
  asserts = [a for a in asserts if parse(a) is not None]
  return "".join(f"{a}\n" for a in asserts)

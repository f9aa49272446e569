"""Code generation (the paper's BigCodeBench system): code and unit-test generators, a
sandboxed executor, a final code generator; pass rate on hidden tests."""

"""Contracts every layer shares: seeds, billing context, keys, pairs, the mesh.

The bottom of the import graph: `core` imports nothing from optimas_jax, and
`system`, `llm`, `models`, `tasks`, `lrf`, `rl` and the loop all read the
same definitions from here.
"""

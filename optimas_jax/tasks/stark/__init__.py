"""STaRK: relational + textual reranking of candidate entities (the paper's STaRK-Prime system)."""

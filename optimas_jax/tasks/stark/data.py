"""The offline STaRK variant's examples: GeoNames questions with first-stage candidates.

The first stage is MiniLM cosine similarity between the question and every
node's document (the reference's `emb_scores`, there from
text-embedding-ada-002 over STaRK-Prime's nodes). Its top `num_candidates`
nodes, best first, are what the system reranks; the gold answer is among
them often but not always (`first_stage_recall` says how often), because
the reference's step that swaps a gold answer into every candidate list is
off unless `force_gold` asks for it. The first stage's top `depth` ids stay
with each example (`retrieved_ids`), so Recall@20 is measured on the full
ranking: the reranked candidates, then the rest of the first stage.
"""

from __future__ import annotations

import numpy as np

from optimas_jax.tasks.stark import kb as kb_lib
from optimas_jax.tasks.stark import questions

RECALL_DEPTH = 20


def attach_candidates(examples: list[dict], kb: kb_lib.KnowledgeBase, embedder,
                      num_candidates: int, force_gold: bool = False,
                      depth: int = RECALL_DEPTH) -> list[dict]:
  """Each example plus candidate_ids, emb_scores, relation_info, text_info, retrieved_ids."""
  if num_candidates < 2:
    raise ValueError(f"num_candidates={num_candidates}: a ranking needs at least 2")
  docs = [kb.document(n.id) for n in kb.nodes]
  # Encoded shortest first: batches of similar length pad (and compile) less.
  embedder.preload(sorted(docs, key=len), "stark-geonames-nodes")
  doc_vecs = embedder.embed(docs)
  q_vecs = embedder.embed([ex["question"] for ex in examples])
  sims = q_vecs @ doc_vecs.T
  out = []
  for ex, row in zip(examples, sims):
    order = np.argsort(-row, kind="stable")
    top = [int(i) for i in order[:max(depth, num_candidates)]]
    cands = top[:num_candidates]
    if force_gold and not set(cands) & set(ex["answer_ids"]):
      # The reference's filter_candidates: a gold answer always takes a slot.
      best_gold = max(ex["answer_ids"], key=lambda i: row[i])
      cands = sorted(cands[:-1] + [best_gold], key=lambda i: -row[i])
    out.append({**ex, "candidate_ids": cands,
                "emb_scores": [round(float(row[i]), 4) for i in cands],
                "relation_info": [kb.relation_info(i) for i in cands],
                "text_info": [kb.text_info(i) for i in cands],
                "retrieved_ids": top[:depth]})
  return out


def geonames_splits(sizes: dict[str, int], seed: int, num_candidates: int, embedder,
                    force_gold: bool = False) -> dict[str, list[dict]]:
  kb = kb_lib.geonames_kb()
  splits = questions.make_splits(kb, sizes, seed)
  return {name: attach_candidates(rows, kb, embedder, num_candidates, force_gold)
          for name, rows in splits.items()}

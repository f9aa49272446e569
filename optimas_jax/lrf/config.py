"""Default LRF config and the one validator every entry point calls."""

from __future__ import annotations

import ml_collections

from optimas_jax.core.pairs import MIN_GAP

DEFAULT_TEMPLATE = (
    "You are an evaluator for a module.\n"
    "Module task: {description}\n\n"
    "Given the inputs:\n{inputs}\n"
    "Evaluate its outputs:\n{outputs}"
)
# One line per field inside {inputs} / {outputs}.
DEFAULT_FIELD_TEMPLATE = "- {field}: {value}\n"

TRAINABLE_SETS = ("heads", "top", "lora", "full")
POOLINGS = ("mean", "cls", "last")
DTYPES = ("float32", "bfloat16")


def default_lrf_config() -> ml_collections.ConfigDict:
  """The `lrf` block: model, text, loss, optimizer, batching."""
  c = ml_collections.ConfigDict()
  c.backbone = "minilm"          # models.registry name
  c.dtype = "float32"            # the backbone's parameters (float32 | bfloat16)
  c.compute_dtype = ""           # its products: "" as dtype; bfloat16 over float32: mixed
  c.pooling = "mean"             # mean | cls (encoders), last (decoders)
  c.trainable = "top"            # heads | top | lora | full
  c.top_layers = 1               # for trainable="top"
  c.lora = ml_collections.ConfigDict(
      dict(rank=8, alpha=16.0, targets=("query", "value")))
  c.cache_frozen = True          # reuse frozen lower-layer activations
  c.cache_mb = 1024              # ... at most this much of them (least recently used out)
  c.fsdp = 1                     # split parameters and optimizer state over this many devices

  c.template = DEFAULT_TEMPLATE
  c.field_template = DEFAULT_FIELD_TEMPLATE
  c.max_len = 128
  c.buckets = (32, 64, 128)      # padded lengths; last must equal max_len

  c.loss = ml_collections.ConfigDict(
      dict(min_gap=MIN_GAP, margin=0.0, gap_weighting=False, min_weight=0.1))

  c.optim = ml_collections.ConfigDict(
      dict(lr=1e-4, weight_decay=0.01, warmup_steps=10, schedule="cosine",
           clip_norm=1.0, b1=0.9, b2=0.999))
  c.groups_per_batch = 8         # groups per micro-batch (x devices)
  c.max_candidates = 4           # candidates per group, padded
  c.accum_steps = 1
  c.epochs = 5
  c.seed = 0
  c.log_every = 10               # steps between train metric lines
  c.checkpoint_every = 50        # steps between checkpoints (and at the end)
  return c


def validate_lrf_config(c: ml_collections.ConfigDict, num_devices: int | None = None):
  """Raise ValueError naming the bad field and how to fix it (`num_devices`: None at
  start-up, before the devices are known; the device checks then run at build time)."""
  def bad(field, msg):
    raise ValueError(f"config.lrf.{field}: {msg}")

  for field in ("dtype", "compute_dtype"):
    allowed = DTYPES if field == "dtype" else ("",) + DTYPES
    if c.get(field, "") not in allowed:
      bad(field, f"got {c.get(field)!r}; use one of {allowed}")
  if c.get("compute_dtype") == "float32" and c.dtype == "bfloat16":
    bad("compute_dtype", "float32 products over bfloat16 parameters gain no precision; "
        "use '' (bfloat16 throughout) or set dtype='float32'")
  if c.trainable not in TRAINABLE_SETS:
    bad("trainable", f"got {c.trainable!r}; use one of {TRAINABLE_SETS}")
  if c.pooling not in POOLINGS:
    bad("pooling", f"got {c.pooling!r}; use one of {POOLINGS}")
  if c.trainable == "top" and c.top_layers < 1:
    bad("top_layers", f"got {c.top_layers}; use >= 1 or trainable='heads'")
  if c.trainable == "lora":
    if c.lora.rank < 1:
      bad("lora.rank", f"got {c.lora.rank}; use >= 1")
    if not c.lora.targets:
      bad("lora.targets", "empty; name modules such as ('query', 'value')")
  if c.cache_mb <= 0:
    bad("cache_mb", f"got {c.cache_mb}; use > 0 (megabytes of cached activations)")
  buckets = tuple(c.buckets)
  if not buckets or list(buckets) != sorted(set(buckets)):
    bad("buckets", f"got {buckets}; use strictly increasing lengths")
  if buckets[-1] != c.max_len:
    bad("buckets", f"last bucket {buckets[-1]} != max_len {c.max_len}; "
        "make the largest bucket equal max_len")
  if c.fsdp < 1 or (num_devices and num_devices % c.fsdp):
    bad("fsdp", f"got {c.fsdp}; use a divisor of the {num_devices} devices (1: replicated)")
  if num_devices and c.groups_per_batch % num_devices:
    bad("groups_per_batch", f"{c.groups_per_batch} is not divisible by the "
        f"{num_devices} devices; use a multiple of {num_devices}")
  if c.max_candidates < 2:
    bad("max_candidates", "a group needs >= 2 candidates to form a pair")
  if c.accum_steps < 1:
    bad("accum_steps", f"got {c.accum_steps}; use >= 1")
  if c.loss.min_weight <= 0 or c.loss.min_weight > 1:
    bad("loss.min_weight", f"got {c.loss.min_weight}; use a value in (0, 1]")
  if c.log_every < 1 or c.checkpoint_every < 1:
    bad("log_every/checkpoint_every", "use >= 1")
  if c.optim.schedule not in ("cosine", "constant"):
    bad("optim.schedule", f"got {c.optim.schedule!r}; use cosine|constant")
  for key in ("{description}", "{inputs}", "{outputs}"):
    if key not in c.template:
      bad("template", f"missing placeholder {key}")

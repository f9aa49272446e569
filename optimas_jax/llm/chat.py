"""One-line chat with a local model.

  python -m optimas_jax.llm.chat "What is the capital of France?"
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description="Chat once with a local JAX model.")
  parser.add_argument("message", help="the user message")
  parser.add_argument("--model", default="smollm2-135m-instruct")
  parser.add_argument("--system", default=None, help="system prompt (default: the model's)")
  parser.add_argument("--max-new-tokens", type=int, default=128)
  parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
  parser.add_argument("--top-p", type=float, default=1.0)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  args = parser.parse_args(argv)

  import jax  # after argparse: --help stays fast
  from optimas_jax.llm.base import SamplingParams
  from optimas_jax.llm.local import load_local_llm
  from optimas_jax.runtime import configure_process
  configure_process()

  llm = load_local_llm(args.model, dtype=args.dtype)
  messages = ([{"role": "system", "content": args.system}] if args.system else [])
  messages.append({"role": "user", "content": args.message})
  params = SamplingParams(temperature=args.temperature, top_p=args.top_p,
                          max_new_tokens=args.max_new_tokens)
  (answer,) = llm.generate([messages], params, rng=jax.random.PRNGKey(args.seed))
  print(answer.text)
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""LoRA adapters served hot-swapped, as vLLM does: listed, selected by name,
loaded at run time, and refused when trained on other base weights."""

import jax
import numpy as np

from optimas_jax.llm import SamplingParams
from optimas_jax.models import llama
from optimas_jax.models import lora
from tests.llm.test_serve import call

CONFIG = lora.LoraConfig(rank=4, alpha=8.0, targets=("q_proj", "v_proj", "down_proj"))


def _adapter(base, seed):
  """An adapter that changes the model (B != 0, unlike a fresh one)."""
  adapter = lora.init_adapter(CONFIG, base, seed)
  rng = np.random.default_rng(seed)
  for modules in adapter["layers"].values():
    for ab in modules.values():
      ab["b"] = rng.normal(0, 2.0, np.shape(ab["b"])).astype(np.float32)
  return adapter


def _chat(server, model):
  status, body = call(server.url + "/chat/completions", {
      "model": model, "messages": [{"role": "user", "content": "Name a colour."}],
      "max_tokens": 8, "temperature": 0})
  return status, body


def test_adapters_are_listed_selected_and_swapped_at_run_time(make_server, tiny_llm, tmp_path):
  server = make_server(adapter_root=str(tmp_path))
  base = tiny_llm.generator.params
  first, second = _adapter(base, 1), _adapter(base, 2)
  lora.save_adapter(tmp_path / "first", first, CONFIG)
  lora.save_adapter(tmp_path / "second", second, CONFIG)
  status, base_answer = _chat(server, "tiny-llama")
  assert status == 200

  status, body = call(server.url + "/load_lora_adapter",
                      {"lora_name": "writer", "lora_path": str(tmp_path / "first")})
  assert status == 200 and body["loaded"]
  _, models = call(server.url + "/models")
  assert [(m["id"], m["parent"]) for m in models["data"]] == [("tiny-llama", None),
                                                             ("writer", "tiny-llama")]
  status, with_first = _chat(server, "writer")
  assert status == 200 and with_first["model"] == "writer"
  text = lambda body: body["choices"][0]["message"]["content"]
  assert text(with_first) != text(base_answer)
  # What the server answers is what the local backend gives with the same adapter.
  request = [[{"role": "user", "content": "Name a colour."}]]
  local = tiny_llm.generate(request, SamplingParams(max_new_tokens=8), adapter=first)
  assert text(with_first) == local[0].text

  # Hot swap: the same name now serves the second adapter, no restart.
  status, _ = call(server.url + "/load_lora_adapter",
                   {"lora_name": "writer", "lora_path": str(tmp_path / "second")})
  assert status == 200
  local = tiny_llm.generate(request, SamplingParams(max_new_tokens=8), adapter=second)
  assert text(_chat(server, "writer")[1]) == local[0].text
  assert text(_chat(server, "tiny-llama")[1]) == text(base_answer)   # the base is untouched

  status, _ = call(server.url + "/unload_lora_adapter", {"lora_name": "writer"})
  assert status == 200
  status, body = _chat(server, "writer")
  assert status == 404 and "not served here" in body["error"]["message"]


def test_an_adapter_for_other_base_weights_is_refused(make_server, tiny_llm, tmp_path):
  server = make_server(adapter_root=str(tmp_path))
  other = llama.LlamaDecoder(tiny_llm.generator.module.config).init(
      jax.random.key(99), np.zeros((1, 4), np.int32), np.ones((1, 4), np.int32))
  lora.save_adapter(tmp_path / "foreign", _adapter(other, 3), CONFIG)
  status, body = call(server.url + "/load_lora_adapter",
                      {"lora_name": "foreign", "lora_path": str(tmp_path / "foreign")})
  assert status == 400 and body["error"]["param"] == "lora_path"
  assert "digest" in body["error"]["message"]
  status, body = call(server.url + "/load_lora_adapter",
                      {"lora_name": "x", "lora_path": str(tmp_path / "missing")})
  assert status == 400 and "cannot load adapter" in body["error"]["message"]
  _, models = call(server.url + "/models")
  assert [m["id"] for m in models["data"]] == ["tiny-llama"]


def test_adapters_load_at_run_time_only_from_the_adapter_root(make_server, tiny_llm, tmp_path):
  root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
  lora.save_adapter(elsewhere / "a", _adapter(tiny_llm.generator.params, 1), CONFIG)
  closed = make_server()                       # no --adapter_root: run-time loading is off
  status, body = call(closed.url + "/load_lora_adapter",
                      {"lora_name": "a", "lora_path": str(elsewhere / "a")})
  assert status == 403 and "adapter_root" in body["error"]["message"]
  server = make_server(adapter_root=str(root))
  for path in (elsewhere / "a", root / ".." / "elsewhere" / "a"):
    status, body = call(server.url + "/load_lora_adapter", {"lora_name": "a",
                                                             "lora_path": str(path)})
    assert status == 403 and "outside the adapter root" in body["error"]["message"]
  _, models = call(server.url + "/models")
  assert [m["id"] for m in models["data"]] == ["tiny-llama"]


def test_the_client_cache_misses_when_an_adapter_is_swapped_under_its_name(
    make_server, make_client, tiny_llm, tmp_path):
  base = tiny_llm.generator.params
  first, second = _adapter(base, 1), _adapter(base, 2)
  lora.save_adapter(tmp_path / "first", first, CONFIG)
  lora.save_adapter(tmp_path / "second", second, CONFIG)
  server = make_server(adapter_root=str(tmp_path))
  server.load_adapter("writer", str(tmp_path / "first"))
  client = make_client(server)
  client.model = "writer"
  request = [[{"role": "user", "content": "Name a colour."}]]
  greedy = SamplingParams(max_new_tokens=8)
  want = lambda adapter: tiny_llm.generate(request, greedy, adapter=adapter)[0].text
  assert client.generate(request, greedy)[0].text == want(first)
  assert client.generate(request, greedy)[0].text == want(first)      # a cache hit
  hits = client.ledger.as_dict()["default"]["cache_hits"]
  assert hits == 1
  status, _ = call(server.url + "/load_lora_adapter",
                   {"lora_name": "writer", "lora_path": str(tmp_path / "second")})
  assert status == 200
  assert want(second) != want(first)
  assert client.generate(request, greedy)[0].text == want(second)     # not the old answer
  _, models = call(server.url + "/models")
  fingerprints = {m["id"]: m["fingerprint"] for m in models["data"]}
  assert len(set(fingerprints.values())) == 2

"""host_memory.reuse_freed_memory: a program whose buffers glibc would map and unmap per
call runs without faulting them in again, and the setting stays off where it cannot help."""

import json
import os
import platform
import subprocess
import sys

import pytest

from optimas_jax import host_memory

# A 128 MB product between two products: XLA:CPU allocates it per call.
_PROBE = """
import json, resource, sys
from optimas_jax import host_memory
how = host_memory.reuse_freed_memory()
import jax, jax.numpy as jnp
f = jax.jit(lambda a, b: ((a @ b) @ b.T).sum())
a, b = jnp.ones((8192, 64)), jnp.ones((64, 4096))
f(a, b).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
  f(a, b).block_until_ready()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
print(json.dumps({"how": how, "faults_per_call": faults}))
"""


def _probe(**env):
  proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                        timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu", **env})
  assert proc.returncode == 0, proc.stderr[-2000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc settings only")
def test_freed_buffers_are_reused_instead_of_faulted_in_again():
  reused, default = _probe(), _probe(OPTIMAS_JAX_HOST_MALLOC="default")
  assert reused["how"] == "reuse"
  assert default["how"] == "default: $OPTIMAS_JAX_HOST_MALLOC=default"
  # 128 MB is 32,768 pages: without the setting each call faults them in again.
  assert default["faults_per_call"] > 30_000, default
  assert reused["faults_per_call"] < 1_000, reused


@pytest.mark.parametrize("env, why", [
    ({"OPTIMAS_JAX_HOST_MALLOC": "default"}, "default: $OPTIMAS_JAX_HOST_MALLOC=default"),
    ({"JAX_PLATFORMS": "cuda"}, "default: an accelerator backend"),
    ({"JAX_PLATFORMS": "tpu,cpu"}, "default: an accelerator backend"),
])
def test_left_off_where_it_cannot_help(monkeypatch, env, why):
  monkeypatch.setattr(host_memory, "_applied", None)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  assert host_memory.reuse_freed_memory() == why


def test_too_late_once_the_backend_has_started():
  script = ("import jax, jax.numpy as jnp; jnp.ones(3).block_until_ready()\n"
            "from optimas_jax import host_memory; print(host_memory.reuse_freed_memory())")
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.stdout.strip() == "default: the backend started before the settings", proc.stderr

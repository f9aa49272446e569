"""config.init_from accepts the run folder, DIR/<step> and DIR/checkpoints/<step>."""

import pytest

from optimas_jax.checkpoint import resolve_init_from


def test_init_from_forms(tmp_path):
  for step in (2, 5):
    (tmp_path / "checkpoints" / str(step)).mkdir(parents=True)
  ck = tmp_path / "checkpoints"
  assert resolve_init_from(str(tmp_path)) == (ck, 5)
  assert resolve_init_from(str(tmp_path / "2")) == (ck, 2)
  assert resolve_init_from(str(ck / "2")) == (ck, 2)
  assert resolve_init_from(str(ck)) == (ck, 5)
  with pytest.raises(FileNotFoundError, match="config.init_from"):
    resolve_init_from(str(tmp_path / "nothing"))

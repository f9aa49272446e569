"""Defaults shared by every experiment (one place, not scattered .get() calls)."""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.job = ""
  config.seed = 0
  return config

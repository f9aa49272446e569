"""Preference data: candidate sampling, Monte-Carlo rollouts, caches, replay."""

"""Workflows: deterministic orchestration only."""

"""Tests of `dash-stream publish`, `tail` and `token`, run as subprocesses against real servers."""

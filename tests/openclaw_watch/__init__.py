"""Tests of the OpenClaw watcher (dash_stream/openclaw): pure translation and against a real gateway."""

"""Tests that drive a real `dash-stream serve` over WebSocket."""

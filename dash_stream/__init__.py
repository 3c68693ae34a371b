"""dash-stream: WebSocket-first real-time event streaming for OpenClaw agent swarms."""

__version__ = "0.1.0"

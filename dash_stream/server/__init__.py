"""The server: ASGI app, transports, auth and rate limits."""

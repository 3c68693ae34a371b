"""Black-box tests of the HTTP API, SSE, auth and rate limits against a real `dash-stream serve`."""

"""Tests of the Python SDK (`dash_stream.client`) against real `dash-stream serve` processes."""

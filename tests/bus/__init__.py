"""Tests of the event buses (one conformance suite run against every Bus)."""

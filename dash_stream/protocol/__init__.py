"""The wire: frames, codecs, errors and close codes (PROTOCOL.md)."""

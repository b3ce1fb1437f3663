"""Connector plugins of the tests' own, registered for a test through the real entry-point registry."""

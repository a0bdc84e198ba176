"""Builders and launchers shared by the tests (not tests themselves)."""

"""Helpers the test suites share (the project's own contract, read from the repository)."""

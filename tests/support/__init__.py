"""Helpers the tests share beside their fixtures."""

"""Hemascope tests (a regular package, so torchstain's top-level ``tests`` package cannot shadow it)."""

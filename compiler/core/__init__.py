"""Shared machinery of every stage: source files and spans, the node base, diagnostics and their registry."""

"""Orchestration layer: matrix -> scheduler -> scenario pipeline -> report and store."""

"""Experiments built on the harness: the main comparison, FluoHair and the demo."""

"""Robostral Agent: a VLM that plans robot goals, gated by an independent safety supervisor."""

__version__ = '0.1.0'

"""Noise Conditional Score Networks."""

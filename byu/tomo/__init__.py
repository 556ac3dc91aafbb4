"""Tomogram I/O and preprocessing."""

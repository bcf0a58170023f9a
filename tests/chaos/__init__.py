"""Chaos and soak runs of the whole pipeline: ``make chaos``, ``make soak``."""

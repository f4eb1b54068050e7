"""mbrec: multi-behavior recommendation (COPF, MBSSL and baselines) under one protocol."""

__version__ = "0.1.0"

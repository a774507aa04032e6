"""ckalab: a laboratory for studying feature learning through kernel alignment."""

__version__ = "0.1.0"

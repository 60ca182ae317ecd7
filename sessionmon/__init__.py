"""sessionmon: watch and control JWT login sessions."""

__version__ = "0.1.0"

"""exchange: secure dataset exchange between partner organisations."""

__version__ = "0.1.0"

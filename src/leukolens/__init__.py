"""leukolens: reads peripheral blood smear images the way a hematologist does."""

__version__ = "0.1.0"

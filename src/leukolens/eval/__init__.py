"""Pure metric functions and evaluation protocols."""

"""Losses live outside the models; each returns a dict of named parts so that multi-task weighting is visible."""

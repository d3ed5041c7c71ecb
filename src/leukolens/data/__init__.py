"""Model inputs from records: crops, caches, batch transforms, stain normalisation."""

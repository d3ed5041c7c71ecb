"""Model families, one file each: backbones, the cell model, the atypicality scorer."""

"""The only code in geoseg that opens files: rasters, checkpoints, previews."""

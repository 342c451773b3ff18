"""Label rasters to polygons: chunked polygonization, seam dissolve, attributes, cleaning."""

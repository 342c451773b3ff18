"""Rows of an instance raster's polygon layer: one feature per object, with its score.

``geoseg vectorize`` on an instance (or panoptic) COG writes one feature per
object: the pieces a stitched object can fall into become one MultiPolygon, and
the detection score stored in the raster's tag rides along. A panoptic map's stuff
regions (instance id 0) are features too, with a missing (NULL) ``instance_id``.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from geoseg.io.instances import read_instance_scores
from geoseg.vector.attributes import sort_table

__all__ = ["one_row_per_instance", "stuff_without_instance_id", "with_scores"]


def one_row_per_instance(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """One row per object: the pieces of one (class, instance id > 0) as a MultiPolygon.

    A stitched object can be in pieces that do not touch (its windows trimmed it
    apart); users count objects, so its pieces become one feature. Areas and
    perimeters are summed, ``conf_mean`` is area-weighted. Rows with instance id 0
    (no object) stay as they are.
    """
    if len(frame) == 0 or "instance_id" not in frame:
        return frame
    key = frame["class_id"].astype(np.int64) * (1 << 32) + frame["instance_id"].astype(np.int64)
    pieces = frame["instance_id"].to_numpy() > 0
    dup = pieces & key.duplicated(keep=False).to_numpy()
    if not dup.any():
        return frame
    many = frame[dup]
    groups = many.groupby(key[dup], sort=False)
    rows = []
    for _, part in groups:
        row = part.iloc[0].copy()
        for col in ("area_m2", "area_ha", "area_ac", "perim_m"):
            row[col] = float(part[col].sum())
        if "conf_mean" in part:
            w = part["area_m2"].to_numpy()
            c = part["conf_mean"].to_numpy(float)
            ok = ~np.isnan(c)
            row["conf_mean"] = float(np.sum(c[ok] * w[ok]) / np.sum(w[ok])) if ok.any() else np.nan
        row["geometry"] = shapely.multipolygons(shapely.get_parts(part.geometry.values))
        rows.append(row)
    joined = gpd.GeoDataFrame(rows, columns=frame.columns, geometry="geometry", crs=frame.crs)
    out = pd.concat([frame[~dup], joined], ignore_index=True)
    return sort_table(gpd.GeoDataFrame(out, geometry="geometry", crs=frame.crs))


def with_scores(frame: gpd.GeoDataFrame, path: str) -> gpd.GeoDataFrame:
    """Add ``score`` (the object's detection score, 0-1) from an instance COG's tag."""
    scores = read_instance_scores(path)
    if scores is None or "instance_id" not in frame:
        return frame
    ids = frame["instance_id"].to_numpy(np.int64)
    inside = (ids > 0) & (ids < scores.size)
    frame = frame.copy()
    frame.insert(frame.columns.get_loc("instance_id") + 1, "score",
                 np.where(inside, scores[np.where(inside, ids, 0)], np.nan))  # fmt: skip
    return frame


def stuff_without_instance_id(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """``instance_id`` NULL (missing) on the rows that are no object (id 0: panoptic stuff).

    In the raster 0 means "no object"; in a GIS table a 0 reads as an object
    numbered 0, which a count or join by id would take for one. Every writer
    (GPKG, GeoParquet, FlatGeobuf, GeoJSON, Shapefile) keeps the column an integer
    field with nulls.
    """
    if "instance_id" not in frame:
        return frame
    ids = frame["instance_id"].to_numpy(np.int64)
    frame = frame.copy()
    frame["instance_id"] = pd.array(np.where(ids > 0, ids, 0), dtype="Int64")
    frame.loc[ids == 0, "instance_id"] = pd.NA
    return frame

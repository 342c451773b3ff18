"""Write polygon layers: GeoPackage, Shapefile, GeoParquet, FlatGeobuf, GeoJSON; atomically.

The format comes from the output's extension (or is given): ``.gpkg`` (default
when the extension says nothing), ``.shp``, ``.parquet``, ``.fgb``, ``.geojson``.

* The CRS is always written (a frame without one is refused).
* Shapefile: field names are mapped deliberately to at most 10 characters
  (:data:`SHAPEFILE_FIELDS`), ``.prj`` and ``.cpg`` (UTF-8) are written, and a
  warning is logged when the ``.shp`` or ``.dbf`` would pass 2 GB.
* GeoJSON is reprojected to EPSG:4326 and written as RFC 7946.
* GeoParquet (1.1) is written by pyarrow with a ``bbox`` covering column.
* Layers are written batch by batch (:func:`open_vector_writer`), so a layer of
  any size is never held in memory whole.
* Layer name (GeoPackage, FlatGeobuf, GeoJSON, Shapefile inside): ``layer``.

Each output is written under a temporary name beside the target (a Shapefile
into a temporary folder) and renamed when complete; an existing output,
including any Shapefile sidecar, is refused unless ``overwrite``.

This module streams and writes layers; it re-exports the format table and output
checks (:mod:`geoseg.io.vectors_formats`) and :func:`read_vectors`
(:mod:`geoseg.io.vectors_read`). Shapefile and GeoParquet details are in
:mod:`geoseg.io.vectors_shapefile` and :mod:`geoseg.io.vectors_geoparquet`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import secrets
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyogrio
import pyproj
import shapely

from geoseg.errors import DiskFullError, GeosegError
from geoseg.io.atomic import atomic_output
from geoseg.io.gdal_errors import quiet_gdal_errors
from geoseg.io.outputs import disk_full, no_space_message
from geoseg.io.vectors_formats import (
    FORMATS,
    GEOMETRY,
    SHAPEFILE_FIELDS,
    check_vector_output,
    vector_files,
    vector_format,
)
from geoseg.io.vectors_geoparquet import geo_metadata, with_bbox
from geoseg.io.vectors_read import read_vectors
from geoseg.io.vectors_shapefile import replace_shapefile, shapefile_bytes

__all__ = [
    "FORMATS",
    "GEOMETRY",
    "SHAPEFILE_FIELDS",
    "VectorWriter",
    "check_vector_output",
    "frame_batches",
    "geometry_type",
    "open_vector_writer",
    "read_vectors",
    "vector_files",
    "vector_format",
    "write_vectors",
]

log = logging.getLogger(__name__)

_SHAPEFILE_LIMIT = 2**31
#: Features per batch when a GeoDataFrame is written.
_BATCH = 100_000
_DONE, _ABORT = object(), object()


def geometry_type(geoms: np.ndarray) -> str:
    """The layer geometry type for ``geoms``: one type, ``MultiPolygon`` for polygons
    mixed with multipolygons (polygons are promoted), else ``Unknown``."""
    kinds = set(shapely.get_type_id(np.asarray(geoms, dtype=object)).tolist()) - {-1}
    names = {1: "LineString", 0: "Point", 3: "Polygon", 4: "MultiPoint",
             5: "MultiLineString", 6: "MultiPolygon"}  # fmt: skip
    if kinds <= {3, 6} and 6 in kinds:
        return "MultiPolygon"
    if len(kinds) == 1 and (kind := kinds.pop()) in names:
        return names[kind]
    return "Polygon" if not kinds else "Unknown"


def attribute_schema(attrs: pd.DataFrame) -> pa.Schema:
    """The Arrow types of a frame's attribute columns, taken from the whole frame (not
    batch by batch, so every batch has the same schema); a column holding no value at
    all (all None: e.g. an empty field of a Shapefile read in) is typed string, as OGR
    formats have no field of Arrow's null type."""
    schema = pa.Schema.from_pandas(attrs, preserve_index=False)
    for i, f in enumerate(schema):
        if pa.types.is_null(f.type):
            schema = schema.set(i, pa.field(f.name, pa.string()))
    return schema


def frame_batches(frame: gpd.GeoDataFrame, size: int | None = None) -> Iterator[pa.RecordBatch]:
    """A GeoDataFrame as record batches of :func:`VectorWriter.write`'s form (WKB geometry)."""
    size = size or _BATCH
    geoms = np.asarray(frame.geometry.values, dtype=object)
    attrs = pd.DataFrame(frame.drop(columns=frame.geometry.name))
    schema = attribute_schema(attrs)
    for start in range(0, max(len(frame), 1), size):
        part = attrs.iloc[start : start + size]
        table = pa.Table.from_pandas(part, schema=schema, preserve_index=False)
        columns = [column.combine_chunks() for column in table.columns]
        wkb = pa.array(shapely.to_wkb(geoms[start : start + size]), pa.binary())
        yield pa.RecordBatch.from_arrays([*columns, wkb], names=[*table.column_names, GEOMETRY])


class VectorWriter:
    """Streams record batches into one layer; see :func:`open_vector_writer`.

    OGR formats are written by one ``pyogrio.write_arrow`` call in a background
    thread that pulls batches from a short queue (so a layer of any size is
    never held in memory); GeoParquet by a ``pyarrow.parquet.ParquetWriter``.
    """

    def __init__(
        self, path: Path, fmt: str, layer: str, crs: Any, geometry_type: str, target: Path
    ) -> None:
        self.path, self.fmt, self.layer, self.target = path, fmt, layer, target
        self.crs = pyproj.CRS.from_user_input(crs)
        self.geometry_type = geometry_type
        self.features = 0
        self._schema: pa.Schema | None = None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=4)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._parquet: Any = None
        self._shp_bytes = np.zeros(2, np.int64)
        self._warned = False
        self._to_wgs84 = (
            pyproj.Transformer.from_crs(self.crs, 4326, always_xy=True)
            if fmt == "geojson"
            else None
        )

    def write(self, batch: pa.RecordBatch) -> None:
        """Append features: a batch with a ``geometry`` column of WKB in the layer's CRS."""
        if batch.num_rows == 0 and self._schema is not None:
            return
        batch = self._prepare(batch)
        self.features += batch.num_rows
        if self.fmt == "parquet":
            self._write_parquet(batch)
            return
        if self._thread is None:
            self._start(batch.schema)
        while True:
            if self._error is not None or self._thread is None or not self._thread.is_alive():
                raise self._failure()
            try:
                self._queue.put(batch, timeout=0.2)
                return
            except queue.Full:
                continue

    def _prepare(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        needs_geometry = self.fmt in ("shp", "parquet", "geojson") or (
            self.geometry_type == "MultiPolygon"
        )
        if not needs_geometry:
            return batch
        geoms = np.asarray(shapely.from_wkb(batch.column(GEOMETRY).to_numpy(False)), dtype=object)
        changed = False
        if self.geometry_type == "MultiPolygon":
            single = shapely.get_type_id(geoms) == 3
            if single.any():
                geoms[single] = shapely.multipolygons(
                    geoms[single], indices=np.arange(int(single.sum()))
                )
                changed = True
        if self._to_wgs84 is not None:
            geoms = shapely.transform(geoms, self._reproject)
            changed = True
        if self.fmt == "shp":
            self._shp_bytes += np.asarray(shapefile_bytes(batch, geoms))
            if self._shp_bytes.max() + 100 > _SHAPEFILE_LIMIT and not self._warned:
                self._warned = True
                log.warning(
                    "%s: the Shapefile passes 2 GB (.shp or .dbf); files over 2 GB are not "
                    "read by many programs, write .gpkg or .parquet instead", self.path,
                )  # fmt: skip
            batch = batch.rename_columns([SHAPEFILE_FIELDS.get(n, n) for n in batch.schema.names])
        if self.fmt == "parquet":
            batch = with_bbox(batch, geoms)
        if changed:
            index = batch.schema.get_field_index(GEOMETRY)
            batch = batch.set_column(index, GEOMETRY, pa.array(shapely.to_wkb(geoms), pa.binary()))
        return batch

    def _reproject(self, xy: np.ndarray) -> np.ndarray:
        assert self._to_wgs84 is not None
        lon, lat = self._to_wgs84.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([lon, lat])

    def _start(self, schema: pa.Schema) -> None:
        self._schema = schema
        driver = str(FORMATS[self.fmt][1])
        crs = pyproj.CRS.from_epsg(4326) if self.fmt == "geojson" else self.crs
        options: dict[str, Any] = {}
        if self.fmt == "geojson":
            options["layer_options"] = {"RFC7946": "YES"}
        if self.fmt == "shp":
            options["encoding"] = "UTF-8"

        def batches() -> Iterator[pa.RecordBatch]:
            while (item := self._queue.get()) is not _DONE:
                if item is _ABORT:
                    raise GeosegError("writing was stopped")
                yield item

        def run() -> None:
            try:
                reader = pa.RecordBatchReader.from_batches(schema, batches())
                with quiet_gdal_errors():
                    pyogrio.write_arrow(
                        reader, self.path, layer=self.layer, driver=driver,
                        geometry_name=GEOMETRY, geometry_type=self.geometry_type,
                        crs=crs.to_wkt(), **options,
                    )  # fmt: skip
            except BaseException as exc:  # handed to the producer thread
                self._error = exc

        self._thread = threading.Thread(target=run, name="geoseg-vector-writer", daemon=True)
        self._thread.start()

    def _write_parquet(self, batch: pa.RecordBatch) -> None:
        import pyarrow.parquet as pq

        geo = {b"geo": json.dumps(geo_metadata(self.crs, self.geometry_type)).encode()}
        if self._parquet is None:
            self._schema = batch.schema.with_metadata(geo)
            self._parquet = pq.ParquetWriter(self.path, self._schema, compression="snappy")
        batch = batch.replace_schema_metadata(geo)
        self._parquet.write_batch(batch)

    def _close(self, ok: bool) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._thread is not None:
            self._queue.put(_DONE if ok else _ABORT)
            self._thread.join()
            if ok and self._error is not None:
                raise self._failure()

    def _failure(self) -> GeosegError:
        # asked while the temporary still fills the disk
        if disk_full(sorted(self.path.parent.glob(f"{self.path.stem}.*"))):
            error: GeosegError = DiskFullError(no_space_message(self.target))
        else:
            error = GeosegError(f"{self.target}: could not write the layer: {self._error}")
        error.__cause__ = self._error
        return error


@contextlib.contextmanager
def open_vector_writer(
    path: str | os.PathLike[str],
    crs: Any,
    geometry_type: str = "Polygon",
    fmt: str | None = None,
    layer: str | None = None,
    overwrite: bool = False,
) -> Iterator[VectorWriter]:
    """Write a layer batch by batch; it appears at ``path`` only when the block succeeds.

    Args:
        path: output file; its extension picks the format unless ``fmt`` is given.
        crs: the CRS of the geometries written (GeoJSON is reprojected to EPSG:4326).
        geometry_type: layer type (``Polygon``, ``MultiPolygon`` - polygons written to
            it are promoted -, ``Point``, ..., ``Unknown``).
        fmt: ``gpkg``, ``shp``, ``parquet``, ``fgb`` or ``geojson``.
        layer: layer name (default: the output's stem).
        overwrite: replace an existing output.

    Yields:
        A :class:`VectorWriter`: ``writer.write(batch)`` with ``pyarrow`` record
        batches whose last column is ``geometry`` (WKB) and whose columns are the
        same in every batch.

    Raises:
        GeosegError: unknown format, no CRS, or the output exists (no ``overwrite``).
    """
    out = Path(path)
    key = check_vector_output(out, fmt, overwrite)
    if crs is None:
        raise GeosegError(f"{out}: the polygons have no CRS; geoseg writes no layer without one")
    name = layer or out.stem
    if key == "shp":
        stage = out.with_name(f".{out.stem}.{secrets.token_hex(4)}.tmp")
        stage.mkdir()
        try:
            with _closing(VectorWriter(stage / out.name, key, name, crs, geometry_type, out)) as w:
                yield w
            replace_shapefile(stage / out.name, out, overwrite)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        return
    with atomic_output(out, overwrite) as tmp:
        tmp.unlink()  # the drivers create the file themselves
        with _closing(VectorWriter(tmp, key, name, crs, geometry_type, out)) as w:
            yield w


@contextlib.contextmanager
def _closing(writer: VectorWriter) -> Iterator[VectorWriter]:
    """Finish ``writer`` when the block succeeds; stop it (nothing kept) when it fails."""
    try:
        yield writer
    except BaseException:
        writer._close(ok=False)
        raise
    writer._close(ok=True)


def write_vectors(
    frame: gpd.GeoDataFrame,
    path: str | os.PathLike[str],
    fmt: str | None = None,
    layer: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``frame`` to ``path`` atomically (see module doc); returns ``path``.

    Args:
        frame: features with a CRS.
        path: output file; its extension picks the format unless ``fmt`` is given.
        fmt: ``gpkg``, ``shp``, ``parquet``, ``fgb`` or ``geojson``.
        layer: layer name (default: the output's stem).
        overwrite: replace an existing output.

    Raises:
        GeosegError: unknown format, no CRS, or the output exists (no ``overwrite``).
    """
    kind = geometry_type(np.asarray(frame.geometry.values))
    with open_vector_writer(path, frame.crs, kind, fmt, layer, overwrite) as writer:
        for batch in frame_batches(frame):
            writer.write(batch)
    return Path(path)

"""Tests for the shared value objects (geoseg/types.py)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from geoseg.errors import ConfigError, GeosegError
from geoseg.types import (
    NODATA_LABEL,
    ClassInfo,
    ClassSchema,
    ModelMeta,
    Normalization,
    TileSpec,
    parse_band_list,
)

SCHEMA = ClassSchema(
    (
        ClassInfo(0, "water", (31, 120, 180)),
        ClassInfo(3, "forest", (51, 160, 44)),
        ClassInfo(254, "building", (227, 26, 28), is_thing=True),
    )
)


def json_round_trip(value: Any) -> Any:
    return json.loads(json.dumps(value))


# --- ClassSchema -----------------------------------------------------------------------


def test_schema_ids_names_and_length() -> None:
    assert SCHEMA.ids == (0, 3, 254)
    assert SCHEMA.names == ("water", "forest", "building")
    assert len(SCHEMA) == 3


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ((1, 2, 1), "unique"),
        ((0, NODATA_LABEL), "255 is nodata"),
        ((-1, 0), "0-254"),
        ((300,), "0-254"),
        ((), "at least one class"),
    ],
    ids=["duplicate", "nodata-id", "negative", "too-big", "empty"],
)
def test_schema_validation(ids: tuple[int, ...], message: str) -> None:
    classes = tuple(ClassInfo(i, f"c{i}", (0, 0, 0)) for i in ids)
    with pytest.raises(GeosegError, match=message):
        ClassSchema(classes)


def test_schema_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SCHEMA.classes = ()  # type: ignore[misc]


def test_colormap_has_every_class_opaque_and_nodata_transparent() -> None:
    assert SCHEMA.colormap() == {
        0: (31, 120, 180, 255),
        3: (51, 160, 44, 255),
        254: (227, 26, 28, 255),
        NODATA_LABEL: (0, 0, 0, 0),
    }


def test_schema_json_round_trip() -> None:
    data = json_round_trip(SCHEMA.to_json())
    assert data[2] == {"id": 254, "name": "building", "colour": [227, 26, 28], "is_thing": True}
    assert ClassSchema.from_json(data) == SCHEMA


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([{"id": 0, "name": "a", "colour": [0, 0, 0]}, {"id": 1, "name": "b"}],
         "class entry 2 (id 1, name 'b') has no colour; each class needs an id, a name and a "
         "colour (required, [r, g, b] 0-255), e.g. {id: 2, name: forest, colour: [27, 120, 55]}"),
        ([{"id": 1, "name": "b", "color": [1, 2, 3]}],
         "class entry 1 (id 1, name 'b') has no colour (spelled 'colour'); each class needs"),
        ([{"colour": [1, 2, 3]}], "class entry 1 has no id and no name; each class needs"),
        ([{"id": 1, "name": "a", "colour": [1, 2]}],
         "class entry 1 (id 1, name 'a'): colour must be [r, g, b], each 0-255, got [1, 2]"),
        ([{"id": 1, "name": "a", "colour": [1, 2, 300]}],
         "class entry 1 (id 1, name 'a'): colour must be [r, g, b], each 0-255, got [1, 2, 300]"),
        ([{"id": "x", "name": "a", "colour": [1, 2, 3]}],
         "class entry 1 (id 'x', name 'a'): id must be a whole number 0-254, got 'x'"),
        (["forest"], "class entry 1: expected a mapping like {id: 2, name: forest"),
    ],
    ids=["no-colour", "color", "no-id-no-name", "short-colour", "colour-range", "id-text", "text"],
)  # fmt: skip
def test_schema_from_json_names_the_entry_and_the_field(items: list[Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ClassSchema.from_json(items)
    assert str(caught.value).startswith(message)


def test_schema_from_json_defaults_is_thing_to_false() -> None:
    schema = ClassSchema.from_json([{"id": 4, "name": "crop", "colour": [1, 2, 3]}])
    assert schema.classes == (ClassInfo(4, "crop", (1, 2, 3), is_thing=False),)


@pytest.mark.parametrize(
    "items",
    [
        [{"name": "a", "colour": [1, 2, 3]}],  # no id
        [{"id": 1, "name": "a", "colour": [1, 2]}],  # short colour
        [{"id": "x", "name": "a", "colour": [1, 2, 3]}],  # id not a number
        [{"id": 1, "name": "a", "colour": None}],
        [{"id": 1, "name": "a", "colour": [1, 2, 3]}, {"id": 1, "name": "b", "colour": [4, 5, 6]}],
    ],
    ids=["no-id", "short-colour", "bad-id", "no-colour", "duplicate"],
)
def test_schema_from_malformed_json_is_a_geoseg_error(items: list[dict[str, Any]]) -> None:
    with pytest.raises(GeosegError):
        ClassSchema.from_json(items)


# --- Normalization and ModelMeta ---------------------------------------------------------


def test_normalization_validation() -> None:
    with pytest.raises(GeosegError, match="one value per band"):
        Normalization(mean=(0.0, 0.0), std=(1.0,))
    with pytest.raises(GeosegError, match="> 0"):
        Normalization(mean=(0.0, 0.0), std=(1.0, 0.0))
    with pytest.raises(GeosegError, match="> 0"):
        Normalization(mean=(0.0,), std=(-1.0,))
    assert Normalization(mean=(0.5,), std=(2.0,)).scale == 1.0


def full_meta() -> ModelMeta:
    return ModelMeta(
        task="semantic",
        arch="deeplabv3plus",
        encoder="efficientnet-b0",
        bands=("B02", "B03", "B04", "B08"),
        normalization=Normalization(
            mean=(0.1, 0.2, 0.3, 0.4), std=(1.0, 2.0, 3.0, 4.0), scale=1e-4
        ),
        schema=SCHEMA,
        window=512,
        margin=64,
        gsd_m=0.5,
        provenance={"data": "tiles", "epochs": 3, "nested": {"a": [1, 2]}},
        metrics={"miou": 0.5},
        options={"encoder_depth": 4},
    )


def test_model_meta_json_round_trip() -> None:
    meta = full_meta()
    data = json_round_trip(meta.to_json())
    assert data["normalization"] == {
        "mean": [0.1, 0.2, 0.3, 0.4],
        "std": [1, 2, 3, 4],
        "scale": 1e-4,
    }
    assert data["classes"] == SCHEMA.to_json()
    assert ModelMeta.from_json(data) == meta


def test_model_meta_json_round_trip_with_defaults() -> None:
    meta = ModelMeta(
        task="semantic",
        arch="fcn",
        encoder=None,
        bands=("red",),
        normalization=Normalization(mean=(0.0,), std=(1.0,)),
        schema=SCHEMA,
    )
    restored = ModelMeta.from_json(json_round_trip(meta.to_json()))
    assert restored == meta
    assert restored.encoder is None
    assert restored.gsd_m is None
    assert (restored.window, restored.margin) == (256, 32)


def test_model_meta_from_minimal_json_uses_defaults() -> None:
    meta = ModelMeta.from_json(
        {
            "task": "semantic",
            "arch": "unet",
            "bands": ["1", "2"],
            "normalization": {"mean": [0, 0], "std": [1, 1]},
            "classes": [{"id": 0, "name": "a", "colour": [0, 0, 0]}],
        }
    )
    assert meta.encoder is None
    assert meta.normalization.scale == 1.0
    assert (meta.window, meta.margin, meta.gsd_m) == (256, 32, None)
    assert (dict(meta.provenance), dict(meta.metrics), dict(meta.options)) == ({}, {}, {})


def test_model_meta_from_json_missing_key_raises_key_error() -> None:
    data = full_meta().to_json()
    del data["bands"]
    with pytest.raises(KeyError):
        ModelMeta.from_json(data)


# --- TileSpec ----------------------------------------------------------------------------


def test_tile_spec_defaults() -> None:
    spec = TileSpec()
    assert (spec.window, spec.margin, spec.stride) == (256, 32, 192)
    assert spec.halo == 32
    assert spec.chunk == 4 * 192


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 64, "margin": 17}, "window/4 = 16"),
        ({"window": 64, "margin": -1}, "margin"),
        ({"window": 4, "margin": 0}, "at least 8"),
        ({"chunk_windows": 0}, "at least one stride"),
        ({"blend": "max"}, "'trim' or 'hann'"),
        ({"batch_size": 0}, "batch size"),
    ],
)
def test_tile_spec_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(GeosegError, match=message):
        TileSpec(**kwargs)


def test_margin_of_exactly_a_quarter_window_is_allowed() -> None:
    spec = TileSpec(window=64, margin=16)
    assert spec.stride == 32


@pytest.mark.parametrize(("window", "margin", "stride"), [(64, 0, 64), (64, 8, 48), (100, 25, 50)])
def test_stride_is_window_minus_two_margins(window: int, margin: int, stride: int) -> None:
    assert TileSpec(window=window, margin=margin).stride == stride


def test_halo_is_the_margin_for_trim_and_stride_plus_margin_for_hann() -> None:
    assert TileSpec(window=64, margin=8, blend="trim").halo == 8
    assert TileSpec(window=64, margin=8, blend="hann").halo == 48 + 8


@pytest.mark.parametrize(
    ("blend", "chunk_windows", "chunk"),
    [("trim", 1, 48), ("trim", 3, 144), ("hann", 1, 96), ("hann", 2, 96), ("hann", 5, 240)],
)
def test_chunk_is_a_multiple_of_the_stride(blend: str, chunk_windows: int, chunk: int) -> None:
    spec = TileSpec(window=64, margin=8, chunk_windows=chunk_windows, blend=blend)
    assert spec.chunk == chunk
    assert spec.chunk % spec.stride == 0
    if blend == "hann":
        assert spec.chunk >= 2 * spec.stride
        assert spec.chunk >= spec.halo  # the halo fits in one neighbouring chunk


# --- parse_band_list ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("1,2,B04", ("1", "2", "B04")),
        (" 3 , b08 ,", ("3", "b08")),
        (["B02", " B03 "], ("B02", "B03")),
        ("", ()),
    ],
)
def test_parse_band_list(text: Any, expected: tuple[str, ...] | None) -> None:
    assert parse_band_list(text) == expected

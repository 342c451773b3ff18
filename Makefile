# geoseg developer commands. Each target creates/uses .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.geoseg-installed
DEMO_OUT ?= demo_out

.PHONY: demo test test-slow test-gpu lint bench bench-gpu sample-data clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

sample-data: $(STAMP)
	$(BIN)/python -m geoseg.synthetic sample_data --overwrite

MODEL := sample_data/models/landcover_s2.safetensors

demo: sample-data
	mkdir -p $(DEMO_OUT)
	$(BIN)/geoseg models $(MODEL)
	$(BIN)/geoseg predict sample_data/scene_before.tif -m $(MODEL) -o $(DEMO_OUT)/landcover_before.tif \
		--confidence --overwrite --preview $(DEMO_OUT)/landcover_before.png --progress
	$(BIN)/geoseg predict sample_data/scene_before.tif -m spectral -o $(DEMO_OUT)/spectral_before.tif \
		--overwrite --preview $(DEMO_OUT)/spectral_before.png --progress
	$(BIN)/geoseg predict sample_data/scene_after.tif -m sample_data/models/water_s2.safetensors \
		-o $(DEMO_OUT)/water_after.tif --overwrite --preview $(DEMO_OUT)/water_after.png --progress
	$(BIN)/geoseg info $(DEMO_OUT)/landcover_before.tif
	@echo "demo outputs are in $(DEMO_OUT)/"

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

test-gpu: $(STAMP)
	$(BIN)/python -m pytest -m gpu

lint: $(STAMP)
	$(BIN)/ruff check geoseg tests benchmarks sample_data
	$(BIN)/ruff format --check geoseg tests benchmarks sample_data
	$(BIN)/mypy geoseg

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_predict.py
	$(BIN)/python benchmarks/bench_memory.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_host.py

bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/bench_gpu.py --precision fp16,bf16,fp32

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache

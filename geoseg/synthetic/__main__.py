"""``python -m geoseg.synthetic``: write the sample data (see :func:`geoseg.synthetic.main`)."""

from geoseg.synthetic.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m geoseg``: the same command line as the ``geoseg`` console script."""

from geoseg.cli import main

if __name__ == "__main__":
    main()

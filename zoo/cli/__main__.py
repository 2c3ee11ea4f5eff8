"""`python -m zoo.cli ...`, as the `zoo` console script."""

from zoo.cli import main

if __name__ == "__main__":  # importing this module (e.g. a sweep worker's preload) runs nothing
    main()

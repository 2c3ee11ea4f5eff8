"""`python -m zoo.cli ...`, as the `zoo` console script."""

from zoo.cli import main

main()

"""``python -m camlens.cli``."""

from camlens.cli import main

main()

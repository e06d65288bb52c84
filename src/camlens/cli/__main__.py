"""``python -m camlens.cli``."""

import os
import sys

# `python -m` puts the current folder first on the path, where a file named like a framework
# (torch.py) would be imported instead of it. The frameworks are imported later, lazily: taking
# the folder off the path here keeps them out of its reach (`-P` does the same for everything).
if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from camlens.cli import main

main()

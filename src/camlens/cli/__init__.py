"""The ``camlens`` command. It uses the public API only, and is the one place that prints."""

from __future__ import annotations

import os
import sys

import click

import camlens
from camlens.cli._cohort import cohort_command
from camlens.cli._compare import compare_command
from camlens.cli._demo import demo_command
from camlens.cli._explain import explain_command
from camlens.cli._layers import layers_command
from camlens.cli._methods import methods_command
from camlens.cli._report import report_command
from camlens.cli._serve import serve_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(camlens.__version__, prog_name="camlens")
def main() -> None:
    """See where a convolutional network looks: Grad-CAM and the CAM family."""
    # TensorFlow 2.21 crashes in some conv backward passes on common CPUs unless oneDNN's custom
    # ops are off; it only takes effect if set before TensorFlow is imported. A user's own
    # setting wins.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


main.add_command(methods_command)
main.add_command(demo_command)
main.add_command(layers_command)
main.add_command(explain_command)
main.add_command(compare_command)
main.add_command(serve_command)
main.add_command(cohort_command)
main.add_command(report_command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""What `camlens explain` and `camlens compare` share: model and preprocessing options, targets,
progress and the closing summary."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

import camlens
from camlens.cli._options import parse_size
from camlens.io import PRESETS, ImageList, LoadedModel, Preprocess, load_model

F = TypeVar("F", bound=Callable[..., Any])

#: Exit status when the run finished but some images failed (their list is printed).
EXIT_SOME_FAILED = 3

LAYER_HELP = "Layer to explain: a name or nested path (see `camlens layers MODEL`), or auto."
TARGET_HELP = (
    "What to explain: top1, topk:K (K maps per image), class:I, output:I (a regressor's output "
    "I), output:I:down (what pushes it down)."
)

# soft_wrap: a line longer than the terminal (a path, an error) stays one line when piped.
_stderr = Console(stderr=True, highlight=False, soft_wrap=True)


LAYOUT_HELP = (
    "How the layer's output lies on the image grid: nchw, nhwc, tokens ((N, L, C): prefix "
    "tokens, then the patches row by row), or auto (told from the layer; an ambiguous one is an "
    "error that names this option)."
)
GRID_HELP = "A token layer's patch grid HxW (e.g. 14x14), where the token count does not tell it."


def layout_options(fn: F) -> F:
    """Add --layer-layout and --grid (how a token or channels-last layer lies on the grid; the
    layer's own layout, not the input's, which --layout gives)."""
    fn = click.option("--grid", default=None, metavar="HxW", help=GRID_HELP)(fn)
    return click.option(
        "--layer-layout",
        "layer_layout",
        type=click.Choice(["auto", "nchw", "nhwc", "tokens"]),
        default="auto",
        show_default=True,
        help=LAYOUT_HELP,
    )(fn)


def _option_value(text: str) -> bool | int | float | str:
    """Read a --method-option value: true/false, an int, a float, else the word itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def method_arguments(
    methods: Sequence[str], options: Sequence[str]
) -> dict[str, dict[str, bool | int | float | str]]:
    """Return each method's hyper-parameters from ``METHOD.KEY=VALUE`` texts (--method-option).

    Raises:
        click.BadParameter: A text not of that form, or for a method not asked for.
    """
    chosen: dict[str, dict[str, bool | int | float | str]] = {name: {} for name in methods}
    for text in options:
        match = re.fullmatch(r"\s*([^.=\s]+)\.([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)", text)
        if match is None:
            raise click.BadParameter(
                f"{text!r} is not METHOD.KEY=VALUE, e.g. polycam.variant=minus",
                param_hint="--method-option",
            )
        name, key, value = match[1], match[2], match[3]
        if name not in chosen:
            raise click.BadParameter(
                f"{text!r} is for {name!r}, which is not among the methods asked for "
                f"({', '.join(methods)}); add -m {name}",
                param_hint="--method-option",
            )
        chosen[name][key] = _option_value(value)
    return chosen


def layout_arguments(layer_layout: str, grid: str | None) -> dict[str, Any]:
    """Return the ``layout=``/``grid=`` keywords for --layer-layout and --grid (none when auto)."""
    chosen: dict[str, Any] = {}
    if layer_layout != "auto":
        chosen["layout"] = layer_layout
    if grid is not None:
        parts = grid.lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
            raise click.BadParameter(
                f"{grid!r} is not a grid; write it as HxW, e.g. 14x14", param_hint="--grid"
            )
        chosen["grid"] = (int(parts[0]), int(parts[1]))
    return chosen


def run_arguments(
    out_help: str, methods: tuple[str, ...], *, out_type: click.ParamType[Any] | None = None
) -> Callable[[F], F]:
    """Add MODEL, IMAGES..., --out, -m/--method, -o/--method-option, --aug-smooth,
    --eigen-smooth, --layer, --layer-layout, --grid, --target."""

    def decorate(fn: F) -> F:
        fn = click.option("--target", default="top1", show_default=True, help=TARGET_HELP)(fn)
        fn = layout_options(fn)
        fn = click.option("--layer", default="auto", show_default=True, help=LAYER_HELP)(fn)
        fn = click.option(
            "-m",
            "--method",
            "methods",
            multiple=True,
            default=methods,
            show_default=True,
            help="CAM method; repeat for several (see `camlens methods`).",
        )(fn)
        fn = click.option(
            "-o",
            "--method-option",
            "method_options",
            multiple=True,
            metavar="METHOD.KEY=VALUE",
            help="A method's hyper-parameter, e.g. polycam.variant=minus or scorecam.batch_size=64 "
            "(true/false, numbers and words; repeat for several).",
        )(fn)
        fn = click.option(
            "--aug-smooth",
            is_flag=True,
            help="Average each map over flipped and rescaled inputs (test-time augmentation).",
        )(fn)
        fn = click.option(
            "--eigen-smooth",
            is_flag=True,
            help="Take the first principal component of the weighted activations as the map.",
        )(fn)
        fn = click.option(
            "--out",
            "out_dir",
            required=True,
            type=out_type or click.Path(file_okay=False, path_type=Path),
            help=out_help,
        )(fn)
        fn = click.argument("images", nargs=-1, required=True)(fn)
        return click.argument("model_source", metavar="MODEL")(fn)

    return decorate


#: What explain and compare run on an ONNX model when no --method is given: the default
#: methods need gradients, which ONNX graphs do not give.
ONNX_METHODS = {"explain": ("ablationcam",), "compare": ("ablationcam", "scorecam", "eigencam")}


def chosen_methods(loaded: LoadedModel, methods: tuple[str, ...], command: str) -> tuple[str, ...]:
    """Return the methods to run: those given, or for an ONNX model with no --method given,
    gradient-free defaults instead of the gradient ones."""
    source = click.get_current_context().get_parameter_source("methods")
    if loaded.framework == "onnx" and source is click.core.ParameterSource.DEFAULT:
        return ONNX_METHODS[command]
    return methods


def model_file_options(fn: F) -> F:
    """Add --factory and --trust-pickle: how to read a model file."""
    fn = click.option(
        "--trust-pickle",
        is_flag=True,
        help="Let the model file run code on loading: a whole pickled PyTorch model, pickled "
        "members of a .pt2 program, Keras Lambda layers (only for files you trust).",
    )(fn)
    return click.option(
        "--factory",
        metavar="PKG.MOD:FN",
        help="Function that builds the model, for a state dict (.pt/.pth/.safetensors); a module "
        "on the Python path or in the current folder (installed modules first), or "
        "path/to/file.py:fn.",
    )(fn)


def model_options(fn: F) -> F:
    """Add --factory, --trust-pickle and --device."""
    fn = click.option("--device", help="Device for a PyTorch or ONNX model: cpu, cuda, cuda:1 ...")(
        fn
    )
    return model_file_options(fn)


def overlay_options(fn: F) -> F:
    """Add --cmap and --alpha: how overlays are drawn."""
    fn = click.option(
        "--alpha",
        default=0.5,
        show_default=True,
        type=click.FloatRange(0, 1),
        help="Heatmap weight in the overlay.",
    )(fn)
    return click.option(
        "--cmap", default="jet", show_default=True, help="Matplotlib colormap name."
    )(fn)


def preprocess_options(fn: F) -> F:
    """Add the preprocessing options."""
    fn = click.option(
        "--layout",
        type=click.Choice(["NCHW", "NHWC"]),
        help="Input layout (default: the model's; NCHW for PyTorch, NHWC for Keras).",
    )(fn)
    fn = click.option(
        "--channels",
        type=click.Choice(["1", "3"]),
        help="Input channels: 1 for grayscale models (default: the model's, else 3).",
    )(fn)
    fn = click.option(
        "--channel-order",
        type=click.Choice(["RGB", "BGR"]),
        help="Channel order (default: the preset's; BGR for caffe).",
    )(fn)
    fn = click.option("--std", type=float, nargs=3, help="Per-channel std, in the preset's units.")(
        fn
    )
    fn = click.option(
        "--mean", type=float, nargs=3, help="Per-channel mean, in the preset's units."
    )(fn)
    fn = click.option(
        "--size",
        callback=parse_size,
        metavar="N|HxW",
        help="Model input size (default: the model's own, else 224).",
    )(fn)
    return click.option(
        "--preset",
        type=click.Choice(sorted(PRESETS)),
        default="imagenet",
        show_default=True,
        help="Pixel preprocessing: imagenet ([0,1], ImageNet mean/std), tf ([-1,1]), caffe (BGR "
        "minus mean), unit ([0,1]), none (0..255).",
    )(fn)


def load(source: str, options: dict[str, Any]) -> LoadedModel:
    """Load the model named on the command line, or stop with the library's message.

    A ``package.module:function`` factory is also looked for in the current folder, behind
    every installed package (the folder is on the path only while the factory is imported); a
    file there named like a module camlens imports is reported, never run.
    """
    warn_shadowing(Path.cwd())
    try:
        return load_model(
            source,
            factory=options.get("factory"),
            trust_pickle=bool(options.get("trust_pickle")),
            device=options.get("device"),
            search_path=[os.getcwd()],
        )
    except camlens.CamlensError as exc:
        raise click.ClickException(str(exc)) from exc


#: Modules camlens or the frameworks import, which a file of the same name in the current
#: folder would shadow if that folder came first on the path.
_SHADOWABLE = (
    "torch",
    "keras",
    "onnx",
    "onnxruntime",
    "tensorflow",
    "jax",
    "numpy",
    "PIL",
    "matplotlib",
    "safetensors",
    "h5py",
    "scipy",
    "click",
    "rich",
    "jinja2",
    "array_api_compat",
    "camlens",
)


def warn_shadowing(folder: Path) -> None:
    """Warn about each file or package in ``folder`` named like a module camlens imports."""
    for name in _SHADOWABLE:
        for candidate in (folder / f"{name}.py", folder / name / "__init__.py"):
            if candidate.is_file():
                warn(
                    f"{candidate.relative_to(folder)} in the current folder has the name of the "
                    f"module {name!r}; camlens imports the installed {name} and never runs this "
                    "file (rename it if it is yours)"
                )


def preprocessing(loaded: LoadedModel, options: dict[str, Any]) -> Preprocess:
    """Return the preprocessing the options ask for, completed from what the model says."""
    try:
        return Preprocess(
            preset=options["preset"],
            size=options.get("size") or loaded.input_size or (224, 224),
            mean=options.get("mean") or None,
            std=options.get("std") or None,
            channel_order=options.get("channel_order"),
            layout=options.get("layout") or loaded.layout,
            channels=int(options.get("channels") or loaded.channels or 3),
        )
    except camlens.CamlensError as exc:
        raise click.BadParameter(str(exc), param_hint="preprocessing options") from exc


def run_settings(
    loaded: LoadedModel,
    preprocess: Preprocess,
    methods: Sequence[str],
    layer: str,
    target: str,
    **extra: Any,
) -> dict[str, Any]:
    """Return the settings a run records in ``run.json``: the model, the command's own
    options (``extra``), when and how it was started."""
    return {
        "camlens_version": camlens.__version__,
        "model": loaded.source,
        "framework": loaded.framework,
        "methods": list(methods),
        "layer": layer,
        "target": target,
        "preprocess": preprocess.describe(),
        **extra,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": ["camlens", *sys.argv[1:]],
    }


def parse_target(text: str) -> camlens.Target | None:
    """Parse ``top1``, ``topk:K``, ``class:I``, ``output:I`` or ``output:I:down|up``."""
    value = text.strip().lower()
    if value in ("top1", "topk:1"):
        return None
    if match := re.fullmatch(r"topk:(\d+)", value):
        if int(match[1]) >= 1:
            return camlens.TopK(int(match[1]))
    elif match := re.fullmatch(r"class:(\d+)", value):
        return camlens.Class(int(match[1]))
    elif match := re.fullmatch(r"output:(\d+)(?::(up|down))?", value):
        return camlens.Output(int(match[1]), sign=-1 if match[2] == "down" else 1)
    raise click.BadParameter(
        f"{text!r} is not a target: use top1, topk:K, class:I, output:I or output:I:down",
        param_hint="--target",
    )


class RateColumn(ProgressColumn):
    """Images per second, over rich's last 30 s of samples (blank before the second sample)."""

    def render(self, task: Task) -> Text:
        """Return ``<rate> images/s``."""
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.1f} images/s")


def progress_display(
    console: Console = _stderr, get_time: Callable[[], float] | None = None
) -> Progress:
    """Return the run's progress display: count, images per second, elapsed time and ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        get_time=get_time,
    )


@contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """Show a progress bar on stderr (either engine's); yield a thread-safe ``advance(n)``."""
    progress = progress_display()
    with progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


def warn(message: str) -> None:
    """Print a warning on stderr."""
    _stderr.print(f"[yellow]warning:[/] {escape(message)}", markup=True, highlight=False)


def warn_missing(found: ImageList) -> None:
    """Warn about each image argument that matched nothing."""
    for missing in found.missing:
        warn(f"no such file, folder or match: {missing}")


def shown_text(text: str) -> str:
    """Return ``text`` (a path, or a message naming one) as valid Unicode, to write and print.

    A file name that is not valid UTF-8 reaches Python with its undecodable bytes as lone
    surrogates (``surrogateescape``), which no UTF-8 file or terminal takes: they are shown as
    ``\\xNN`` escapes instead (Windows' lone surrogates as ``\\udNNN``).
    """
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is not an undecoded byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def read_failure(path: Path, error: Exception) -> str:
    """Return why the image at ``path`` could not be read, from what reading it raised.

    camlens's own errors say it already; any other exception is a decoder's own on a malformed
    file, named with its type.
    """
    if isinstance(error, camlens.CamlensError):
        return str(error)
    return f"{path}: cannot be read ({type(error).__name__}: {error})"


def print_notes(notes: Sequence[str]) -> None:
    """Print one line per remark on an image read: ``  note: <image>: <remark>``."""
    out = Console(highlight=False, soft_wrap=True)  # as the summary before it prints
    for note in notes:
        out.print(f"  note: {note}", markup=False)


def print_failures(failures: Sequence[tuple[str, str]], out: Console | None = None) -> None:
    """Print one line per failed image: ``  failed: <image>: <why>``."""
    out = out or Console(highlight=False, soft_wrap=True)
    for image, error in failures:
        out.print(f"  failed: {image}: {error.removeprefix(image + ': ')}", markup=False)


def summary(
    *,
    explained: int,
    seconds: float,
    resumed: int,
    failures: Sequence[tuple[str, str]],
    ignored: Sequence[str],
    report: Path | str,
) -> None:
    """Print what the run did: counts, speed, each failed image and why, the report's path."""
    out = Console(highlight=False, soft_wrap=True)
    rate = f", {explained / seconds:.1f} images/s" if explained and seconds > 0 else ""
    parts = [f"{explained} image(s) explained in {seconds:.1f} s{rate}"]
    if resumed:
        parts.append(f"{resumed} already done (resumed)")
    if failures:
        parts.append(f"{len(failures)} failed")
    if ignored:
        parts.append(f"{len(ignored)} non-image file(s) ignored")
    out.print(", ".join(parts))
    print_failures(failures, out)
    for path in ignored[:20]:
        out.print(f"  ignored: {path}", markup=False)
    if len(ignored) > 20:
        out.print(f"  ... and {len(ignored) - 20} more ignored")
    out.print(f"report: {report}", markup=False)

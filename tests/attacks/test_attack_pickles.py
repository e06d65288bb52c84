"""Attack suite: malicious pickles in every file format camlens reads for PyTorch.

Each attack file carries a payload that creates a marker file when unpickled. Without
``trust_pickle`` the marker must never appear and the refusal must be one line naming the file
and the flag; with ``trust_pickle=True`` the same file runs its payload (so each attack is real:
a test whose payload could never run would prove nothing).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import random
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

import camlens
from camlens.io import load_model
from camlens.io._pickles import SAFE_GLOBALS, find_unsafe_pickle
from nets import TrunkHead

X = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))


class Payload:
    """Unpickles into a call of ``exec`` that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _torch_save(obj: object, **options: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **options)  # type: ignore[arg-type]
    return buffer.getvalue()


def _exported(path: Path) -> Path:
    program = torch.export.export(
        TrunkHead().eval(), (X,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},)
    )
    torch.export.save(program, path)
    return path


def _rewrite(src: Path, dst: Path, change: Callable[[str, bytes], bytes | None]) -> Path:
    """Copy a zip archive, each member through ``change`` (None keeps it as it is)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            new = change(name, data)
            zout.writestr(name, data if new is None else new)
    return dst


def _pt2_sample_inputs_zip(tmp: Path, marker: Path) -> Path:
    """The reported attack: sample_inputs/model.pt replaced by a torch.save'd payload."""
    payload = _torch_save(Payload(marker))
    return _rewrite(
        _exported(tmp / "good.pt2"),
        tmp / "evil.pt2",
        lambda name, _: payload if name.endswith("sample_inputs/model.pt") else None,
    )


def _pt2_sample_inputs_raw(tmp: Path, marker: Path) -> Path:
    """The same member as a bare protocol-0 pickle (torch's legacy loader unpickles it)."""
    payload = pickle.dumps(Payload(marker), protocol=0)
    return _rewrite(
        _exported(tmp / "good.pt2"),
        tmp / "evil.pt2",
        lambda name, _: payload if name.endswith("sample_inputs/model.pt") else None,
    )


def _pt2_pickled_weight(tmp: Path, marker: Path) -> Path:
    """A weight flagged use_pickle in the weights config, its member replaced by a payload."""
    payload = _torch_save(Payload(marker))

    def change(name: str, data: bytes) -> bytes | None:
        if name.endswith("model_weights_config.json"):
            config = json.loads(data)
            first = next(iter(config["config"].values()))
            first["use_pickle"] = True
            return json.dumps(config).encode()
        return payload if name.endswith("weights/weight_0") else None

    return _rewrite(_exported(tmp / "good.pt2"), tmp / "evil.pt2", change)


def _pt2_opaque_constant(tmp: Path, marker: Path) -> Path:
    """An opaque constant (read with pickle.loads) added to the constants config."""
    with zipfile.ZipFile(_exported(tmp / "good.pt2")) as z:
        prefix = z.namelist()[0].split("/")[0]
    entry = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True}

    def change(name: str, data: bytes) -> bytes | None:
        if name.endswith("model_constants_config.json"):
            return json.dumps({"config": {"evil": {**entry, "tensor_meta": None}}}).encode()
        return None

    out = _rewrite(tmp / "good.pt2", tmp / "evil.pt2", change)
    with zipfile.ZipFile(out, "a") as z:
        z.writestr(f"{prefix}/data/constants/opaque_obj_0", pickle.dumps(Payload(marker), 4))
    return out


def _pth_zip(tmp: Path, marker: Path) -> Path:
    (tmp / "evil.pth").write_bytes(_torch_save({"weight": torch.ones(2), "x": Payload(marker)}))
    return tmp / "evil.pth"


def _pth_legacy(tmp: Path, marker: Path) -> Path:
    data = _torch_save(Payload(marker), _use_new_zipfile_serialization=False)
    (tmp / "evil.pth").write_bytes(data)
    return tmp / "evil.pth"


def _pth_legacy_fourth_pickle(tmp: Path, marker: Path) -> Path:
    """A legacy stream whose first three pickles are harmless: the payload is the fourth."""
    head = [pickle.dumps(0x1950A86A20F9469CFC6C, 2), pickle.dumps(1001, 2), pickle.dumps({}, 2)]
    (tmp / "evil.pth").write_bytes(b"".join([*head, pickle.dumps(Payload(marker), 2)]))
    return tmp / "evil.pth"


def _pth_stack_global(tmp: Path, marker: Path) -> Path:
    """Protocol 4: the global named by memoised strings (STACK_GLOBAL), as pickle writes it."""
    (tmp / "evil.pt").write_bytes(pickle.dumps(Payload(marker), protocol=4))
    return tmp / "evil.pt"


def _ckpt(tmp: Path, marker: Path) -> Path:
    """A training checkpoint: real weights, and a payload among its hyper-parameters."""
    state = {"state_dict": TrunkHead().state_dict(), "hyper_parameters": Payload(marker)}
    (tmp / "evil.ckpt").write_bytes(_torch_save(state))
    return tmp / "evil.ckpt"


ATTACKS = {
    "pt2-sample-inputs-zip": _pt2_sample_inputs_zip,
    "pt2-sample-inputs-raw": _pt2_sample_inputs_raw,
    "pt2-pickled-weight": _pt2_pickled_weight,
    "pt2-opaque-constant": _pt2_opaque_constant,
    "pth-zip": _pth_zip,
    "pth-legacy": _pth_legacy,
    "pth-legacy-fourth-pickle": _pth_legacy_fourth_pickle,
    "pt-stack-global": _pth_stack_global,
    "ckpt": _ckpt,
}


@pytest.mark.parametrize("attack", ATTACKS)
def test_no_payload_runs_without_trust_pickle(attack: str, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = ATTACKS[attack](tmp_path, marker)
    with pytest.raises(camlens.ModelLoadError) as info:
        load_model(path, factory=None)
    message = str(info.value)
    assert not marker.exists(), "the payload ran"
    assert "\n" not in message
    assert repr(path.name) in message and "--trust-pickle" in message
    assert "'builtins.exec'" in message  # what the pickle would have run


@pytest.mark.parametrize("attack", ATTACKS)
def test_each_attack_is_real_its_payload_runs_when_trusted(attack: str, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = ATTACKS[attack](tmp_path, marker)
    with contextlib.suppress(camlens.ModelLoadError):  # no model: what matters is that it ran
        load_model(path, trust_pickle=True)
    assert marker.exists()


def test_the_refusal_names_the_archive_member(tmp_path: Path) -> None:
    path = _pt2_sample_inputs_zip(tmp_path, tmp_path / "marker")
    found = find_unsafe_pickle(path)
    assert found is not None
    assert found.member.endswith("data/sample_inputs/model.pt -> archive/data.pkl")
    assert found.name == "builtins.exec"


def test_the_command_line_refusal_is_one_line_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = _pt2_sample_inputs_zip(tmp_path, marker)
    image = tmp_path / "img.png"
    Image.new("RGB", (12, 12), (120, 30, 200)).save(image)
    command = [sys.executable, "-m", "camlens.cli", "explain", str(path), str(image)]
    proc = subprocess.run(
        [*command, "--out", str(tmp_path / "out"), "--size", "12"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert proc.returncode != 0
    assert not marker.exists()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: 'evil.pt2' can run code when loaded")
    assert "--trust-pickle" in lines[0] and "Traceback" not in proc.stderr


def test_safe_files_of_every_kind_pass(tmp_path: Path) -> None:
    """What torch writes for tensors, parameters and checkpoints passes the check."""
    net = TrunkHead()
    files = {
        "state dict": _torch_save(net.state_dict()),
        "legacy state dict": _torch_save(net.state_dict(), _use_new_zipfile_serialization=False),
        "bfloat16 and float16": _torch_save(
            {"a": torch.ones(3, dtype=torch.bfloat16), "b": torch.ones(2, dtype=torch.float16)}
        ),
        "checkpoint": _torch_save(
            {
                "state_dict": net.state_dict(),
                "epoch": 3,
                "lr": 1e-3,
                "names": ["a", "b"],
                "shape": torch.Size([2, 3]),
                "param": torch.nn.Parameter(torch.ones(2)),
                "ints": torch.arange(4),
                "bytes": b"abc",
                "set": {1, 2},
                "complex": 1 + 2j,
            }
        ),
        "protocol 4": _torch_save(net.state_dict(), pickle_protocol=4),
    }
    for what, data in files.items():
        assert find_unsafe_pickle(_write(tmp_path, data)) is None, what


def _write(folder: Path, data: bytes) -> Path:
    (folder / "file.bin").write_bytes(data)
    return folder / "file.bin"


def test_raw_bytes_are_never_taken_for_a_pickle(tmp_path: Path) -> None:
    """Tensor payloads and JSON in archives are not pickles: no false refusal on noise."""
    rng = random.Random(0)
    refused = [
        data[:16]
        for data in (rng.randbytes(rng.choice([4, 64, 512])) for _ in range(20_000))
        if find_unsafe_pickle(_write(tmp_path, data)) is not None
    ]
    assert refused == []


def test_the_allowed_globals_are_no_looser_than_torch_weights_only() -> None:
    allowed = torch._weights_only_unpickler._get_allowed_globals()
    assert set(SAFE_GLOBALS) <= set(allowed)


def test_zips_nested_too_deep_are_refused(tmp_path: Path) -> None:
    data = pickle.dumps([1, 2])
    for depth in range(5):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as z:
            z.writestr(f"level{depth}", data)
        data = buffer.getvalue()
    found = find_unsafe_pickle(_write(tmp_path, data))
    assert found is not None and found.name == "a zip archive nested more than 3 deep"
    assert not found.checked
    assert found.member == "level4 -> level3 -> level2"


def test_a_global_named_by_an_escaped_string_is_refused(tmp_path: Path) -> None:
    """Protocol 0 strings with escapes spell the names STACK_GLOBAL imports."""
    data = b"S'buil\\x74ins'\nS'l\\x65n'\n\x93S'ab'\n\x85R."
    assert pickle.loads(data) == 2  # the unpickler decodes them: this calls builtins.len('ab')
    found = find_unsafe_pickle(_write(tmp_path, data))
    assert found is not None and "escaped strings" in found.name and not found.checked


def test_an_archive_member_that_cannot_be_read_is_refused_not_crashed_on(tmp_path: Path) -> None:
    """A deflated member whose data is corrupt: what cannot be read cannot be checked."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", pickle.dumps(list(range(2000))))
    data = bytearray(buffer.getvalue())
    start = data.index(b"archive/data.pkl") + len("archive/data.pkl")
    data[start + 10 : start + 60] = bytes(50)  # the compressed stream, zeroed
    found = find_unsafe_pickle(_write(tmp_path, bytes(data)))
    assert found is not None and found.member == "archive/data.pkl"
    assert found.name == "an unreadable member" and not found.checked

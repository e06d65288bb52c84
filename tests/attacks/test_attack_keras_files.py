"""Attack suite: Keras files that would run code on loading (run under every Keras backend).

A ``Lambda`` layer stores Python bytecode; a config can name custom objects from any module.
camlens loads Keras files in Keras's safe mode: without ``trust_pickle`` nothing from the file
runs and the refusal is one line naming the file (and, for code, the flag that accepts it).
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pytest

keras = pytest.importorskip("keras")

import camlens  # noqa: E402
from camlens.io import load_model  # noqa: E402


def _lambda_model(marker: Path) -> keras.Model:
    """A small model whose Lambda layer creates ``marker`` whenever it is called."""
    touch = eval(f"lambda t: (open({str(marker)!r}, 'w').close(), t)[1]")
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3, name="conv")(inp)
    x = keras.layers.Lambda(touch, name="evil")(x)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inp, out)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_lambda_layer_runs_only_with_trust_pickle(suffix: str, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / f"lambda{suffix}"
    _lambda_model(marker).save(path)
    marker.unlink()  # building the model called the Lambda once
    with pytest.raises(camlens.ModelLoadError) as info:
        load_model(path)
    assert not marker.exists()
    message = str(info.value)
    assert "\n" not in message
    assert repr(path.name) in message and "--trust-pickle" in message and "Lambda" in message
    load_model(path, trust_pickle=True)  # the attack is real: trusted, the code runs
    assert marker.exists()


def _plain(path: Path) -> Path:
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3, name="conv")(inp)
    out = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inp, out).save(path)
    return path


def _with_config(src: Path, dst: Path, edit: object) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "config.json":
                config = json.loads(data)
                for layer in config["config"]["layers"]:
                    if layer["config"]["name"] == "head":
                        edit(layer)  # type: ignore[operator]
                data = json.dumps(config).encode()
            zout.writestr(name, data)
    return dst


def _custom_layer(layer: dict) -> None:
    layer.update(module="camlens_attack_module", class_name="Evil", registered_name=None)


def _custom_activation(layer: dict) -> None:
    layer["config"]["activation"] = {
        "module": "camlens_attack_module",
        "class_name": "function",
        "config": "act",
        "registered_name": "act",
    }


def _registered_name(layer: dict) -> None:
    layer.update(module=None, class_name="Evil", registered_name="camlens_attack_module>Evil")


@pytest.mark.parametrize("edit", [_custom_layer, _custom_activation, _registered_name])
def test_custom_objects_never_import_their_module(
    edit: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config that names a module on the path: Keras must not import it, trusted or not."""
    marker = tmp_path / "marker"
    (tmp_path / "camlens_attack_module.py").write_text(
        f"open({str(marker)!r}, 'w').close()\ndef act(x):\n    return x\nclass Evil:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _with_config(_plain(tmp_path / "plain.keras"), tmp_path / "custom.keras", edit)
    for trust in (False, True):
        with pytest.raises(camlens.ModelLoadError) as info:
            load_model(path, trust_pickle=trust)
        assert "\n" not in str(info.value) and "'custom.keras'" in str(info.value)
        assert "custom_objects" in str(info.value)
    assert not marker.exists()
    assert "camlens_attack_module" not in sys.modules


def test_a_pickle_smuggled_into_a_keras_archive_is_refused(tmp_path: Path) -> None:
    """Keras reads no pickles, but a member that is one is refused all the same."""
    path = _plain(tmp_path / "model.keras")
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("assets/state.pkl", b"cbuiltins\nexec\n(S'print(1)'\ntR.")
    with pytest.raises(camlens.ModelLoadError, match=r"'assets/state\.pkl'.*'builtins\.exec'"):
        load_model(path)

"""Checking every pickle in a model file before a framework unpickles it.

Unpickling runs whatever callables a pickle names, so a model file can carry code. PyTorch's own
``weights_only`` loader restricts what it unpickles, but not every path into a file goes through
it (``torch.export.load`` falls back to a full unpickler for some archive members). camlens
therefore reads each pickle *without executing it* before any framework touches the file: the
opcodes are decoded one by one and followed on a symbolic stack, and every global a pickle would
import (``GLOBAL``, ``INST``, ``STACK_GLOBAL``) must be one PyTorch's ``weights_only`` loader
accepts by default (:data:`SAFE_GLOBALS`, tensors and their storages, dtypes, ``OrderedDict``).

Where a stream stops being a valid pickle (raw tensor bytes, JSON, HDF5), the real unpickler
would fail at the same opcode, so everything it could have run before that point has been
checked. The check covers the consecutive pickles at the start of a stream (a legacy
``torch.save`` file holds five), every member of a zip archive, and zip archives nested in
members. No framework is imported here.
"""

from __future__ import annotations

import _compat_pickle
import copyreg
import pickletools
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = ["SAFE_GLOBALS", "UnsafePickle", "find_unsafe_pickle"]

#: ``module.name`` of every global a pickle may import; the defaults of PyTorch's
#: ``weights_only`` loader (``torch._weights_only_unpickler``), written out so the rule is
#: fixed and reviewable; the tests check that nothing here is looser than PyTorch.
_EXACT = {
    "_codecs.encode",
    "builtins.bytearray",
    "builtins.complex",
    "builtins.set",
    "collections.Counter",
    "collections.OrderedDict",
    "torch.Size",
    "torch.Tensor",
    "torch.device",
    "torch.nn.parameter.Parameter",
    "torch.serialization._get_layout",
    "torch.storage.TypedStorage",
    "torch.storage.UntypedStorage",
    "torch._tensor._rebuild_from_type_v2",
}
_REBUILD = [
    "tensor",
    "tensor_v2",
    "tensor_v3",
    "parameter",
    "parameter_with_state",
    "qtensor",
    "sparse_tensor",
    "nested_tensor",
    "wrapper_subclass",
    "meta_tensor_no_storage",
    "device_tensor_from_cpu_tensor",
    "device_tensor_from_numpy",
]
_DTYPES = [
    "bool",
    "bfloat16",
    "float16",
    "float32",
    "float64",
    "complex32",
    "complex64",
    "complex128",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "qint8",
    "qint32",
    "quint8",
    "quint4x2",
    "quint2x4",
    "bits1x8",
    "bits2x4",
    "bits4x2",
    "bits8",
    "bits16",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float4_e2m1fn_x2",
    "per_tensor_affine",
    "per_tensor_symmetric",
    "per_channel_affine",
    "per_channel_symmetric",
    "per_channel_affine_float_qparams",
]
_LEGACY_TYPES = [
    "BFloat16",
    "Bool",
    "Byte",
    "Char",
    "ComplexDouble",
    "ComplexFloat",
    "Double",
    "Float",
    "Half",
    "Int",
    "Long",
    "Short",
]
SAFE_GLOBALS: frozenset[str] = frozenset(
    _EXACT
    | {f"torch._utils._rebuild_{name}" for name in _REBUILD}
    | {f"torch.{name}" for name in _DTYPES}
    | {f"torch.{kind}{bits}" for kind in ("int", "uint") for bits in range(1, 8)}
    | {
        f"{module}.{kind}{suffix}"
        for module in ("torch", "torch.cuda")
        for kind in _LEGACY_TYPES
        for suffix in ("Storage", "Tensor")
        if not (suffix == "Tensor" and kind.startswith("Complex"))
    }
    | {f"torch.{kind}Storage" for kind in ("QInt32", "QInt8", "QUInt2x4", "QUInt4x2", "QUInt8")}
    | {
        f"{module}.{kind}Tensor"
        for module in ("torch.sparse", "torch.cuda.sparse")
        for kind in ("BFloat16", "Byte", "Char", "Double", "Float", "Half", "Int", "Long", "Short")
    }
)

#: What reading a zip member can raise besides a pickle's own errors.
_UNREADABLE = (RuntimeError, NotImplementedError, OSError, EOFError, zipfile.BadZipFile, zlib.error)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_ZIP_MAGIC = b"PK\x03\x04"
_MAX_DEPTH = 3  # zip archives nested in members, as torch.export nests torch.save files
_KEEP = 256  # longer strings are never module or attribute names: skipped, not read


@dataclass(frozen=True)
class UnsafePickle:
    """A pickle that would import something outside :data:`SAFE_GLOBALS`.

    Attributes:
        member: Where it is: ``""`` for the file itself, else the archive member's path
            (``"outer.pt -> inner/data.pkl"`` for a zip nested in a member).
        name: The ``module.name`` it would import, or, when ``checked`` is false, what could
            not be checked (``"a zip archive nested more than 3 deep"``).
        checked: Whether the pickle was read and found to import ``name``.
    """

    member: str
    name: str
    checked: bool = True


class _Invalid(Exception):
    """The stream is not (or stops being) a pickle the real unpickler would accept."""


class _Unsafe(Exception):
    def __init__(self, name: str, *, checked: bool = True) -> None:
        super().__init__(name)
        self.name = name
        self.checked = checked


_MARK = object()
_VALUE = object()  # anything that is not a str: the only values whose content matters
_ESCAPED = object()  # a str written with escapes, whose value is not worked out here


def find_unsafe_pickle(path: Path) -> UnsafePickle | None:
    """Return the first pickle in ``path`` that would import an unsafe global, or None.

    ``path`` is a zip archive (each member is checked, zips nested in members too) or a single
    stream (a legacy ``torch.save`` file). Nothing is unpickled or imported.
    """
    with path.open("rb") as f:
        return _check(f, "", 0)


def _check(f: IO[bytes], where: str, depth: int) -> UnsafePickle | None:
    start = f.read(4)
    f.seek(0)
    if start == _ZIP_MAGIC and depth < _MAX_DEPTH:
        try:
            archive = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, OSError, ValueError):
            # Another zip reader may still find members in it: what cannot be read, cannot be
            # checked.
            return UnsafePickle(where, "a zip archive that cannot be read", checked=False)
        with archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                inner = f"{where} -> {info.filename}" if where else info.filename
                try:
                    with archive.open(info) as member:
                        found = _check(member, inner, depth + 1)
                except _UNREADABLE:  # encrypted, an unknown compression, corrupt data
                    found = UnsafePickle(inner, "an unreadable member", checked=False)
                if found is not None:
                    return found
        return None
    if start == _ZIP_MAGIC:
        return UnsafePickle(where, f"a zip archive nested more than {_MAX_DEPTH} deep", False)
    try:
        _scan(f)
    except _Unsafe as exc:
        return UnsafePickle(where, exc.name, exc.checked)
    return None


def _scan(f: IO[bytes]) -> None:
    """Follow the consecutive pickles at the start of ``f``; raise :class:`_Unsafe`."""
    try:
        while _scan_one(f):
            pass
    except (_Invalid, EOFError, ValueError, OverflowError, UnicodeDecodeError):
        return


def _scan_one(f: IO[bytes]) -> bool:
    """Follow one pickle to its STOP; return False at the end of the stream."""
    stack: list[object] = []
    memo: dict[int, object] = {}
    first = True
    while True:
        code = f.read(1)
        if not code:
            if first:
                return False
            raise _Invalid
        first = False
        op = _OPCODES.get(code)
        if op is None:
            raise _Invalid
        name = op.name
        arg = _read_arg(f, op)
        if name == "STOP":
            return True
        if name in ("GLOBAL", "INST"):
            assert isinstance(arg, str)
            module, _, attr = arg.partition(" ")
            _check_global(module, attr)
        elif name == "STACK_GLOBAL":
            attr_value, module_value = _pop(stack), _pop(stack)
            if _ESCAPED in (attr_value, module_value):
                raise _Unsafe("a pickle naming a global with escaped strings", checked=False)
            if not isinstance(attr_value, str) or not isinstance(module_value, str):
                raise _Invalid  # the unpickler requires two str here
            _check_global(module_value, attr_value)
            stack.append(_VALUE)
            continue
        elif name in ("EXT1", "EXT2", "EXT4"):
            # A global by number, from this process's copyreg registry (empty unless a library
            # fills it): an unknown number fails in the unpickler too.
            key = copyreg._inverted_registry.get(arg)  # type: ignore[attr-defined]
            if key is None:
                raise _Invalid
            _check_global(*key)
            stack.append(_VALUE)
            continue
        if name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in memo:
                raise _Invalid
            stack.append(memo[arg])  # type: ignore[index]
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            if not stack or stack[-1] is _MARK:
                raise _Invalid
            memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]  # type: ignore[index]
        elif name == "DUP":
            if not stack:
                raise _Invalid
            stack.append(stack[-1])
        elif name == "POP":
            _pop(stack, allow_mark=True)
        elif name == "MARK":
            stack.append(_MARK)
        else:
            _apply(stack, op, arg)


def _apply(stack: list[object], op: pickletools.OpcodeInfo, arg: object) -> None:
    """Apply an opcode's stack effect: pop what it takes, push what it leaves."""
    before = op.stack_before
    if pickletools.markobject in before:
        while True:
            if _pop(stack, allow_mark=True) is _MARK:
                break
        for _ in range(before.index(pickletools.markobject)):
            _pop(stack)
    else:
        for _ in before:
            _pop(stack)
    for kind in op.stack_after:
        stack.append(arg if kind.name in ("str", "bytes_or_str") else _VALUE)


def _pop(stack: list[object], *, allow_mark: bool = False) -> object:
    if not stack or (stack[-1] is _MARK and not allow_mark):
        raise _Invalid
    return stack.pop()


def _check_global(module: str, attr: str) -> None:
    """Raise :class:`_Unsafe` for a global outside the allowed set; :class:`_Invalid` for a
    name no unpickler could import (the stream is not really a pickle)."""
    module, attr = _compat_pickle.NAME_MAPPING.get((module, attr), (module, attr))
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    full = f"{module}.{attr}"
    if full in SAFE_GLOBALS:
        return
    if not _IDENTIFIER.match(module) or not _IDENTIFIER.match(attr):
        raise _Invalid
    raise _Unsafe(full)


def _read_arg(f: IO[bytes], op: pickletools.OpcodeInfo) -> object:
    """Read an opcode's argument; return what the stack tracking needs (ints, short strs)."""
    desc = op.arg
    if desc is None:
        return None
    n = desc.n
    if n > 0:
        data = _read_exact(f, n)
        return int.from_bytes(data, "little", signed=desc.name == "int4")
    if n == pickletools.UP_TO_NEWLINE:
        line = _read_line(f)
        if desc.name == "stringnl_noescape_pair":
            return f"{line.decode('utf-8')} {_read_line(f).decode('utf-8')}"
        if op.name in ("GET", "PUT"):
            return int(line)
        if op.name == "STRING":
            if len(line) < 2 or line[:1] not in (b"'", b'"') or line[-1:] != line[:1]:
                raise _Invalid  # the unpickler requires a quoted argument
            # Escapes are decoded by the unpickler: a name written with them is not checked
            # here, so it is refused if it ever names a global.
            return _ESCAPED if b"\\" in line else line[1:-1].decode("latin-1")
        if op.name == "UNICODE":
            return line.decode("raw-unicode-escape")
        return None
    size = {
        pickletools.TAKEN_FROM_ARGUMENT1: 1,
        pickletools.TAKEN_FROM_ARGUMENT4: 4,
        pickletools.TAKEN_FROM_ARGUMENT4U: 4,
        pickletools.TAKEN_FROM_ARGUMENT8U: 8,
    }[n]
    signed = n == pickletools.TAKEN_FROM_ARGUMENT4
    length = int.from_bytes(_read_exact(f, size), "little", signed=signed)
    if length < 0:
        raise _Invalid
    if length > _KEEP:
        _skip(f, length)
        return None
    data = _read_exact(f, length)
    if op.name in ("BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"):
        return data.decode("utf-8", "surrogatepass")
    if op.name in ("BINSTRING", "SHORT_BINSTRING"):
        return data.decode("latin-1")
    return None


def _read_exact(f: IO[bytes], n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _Invalid
    return data


def _read_line(f: IO[bytes]) -> bytes:
    """Read up to a newline; keep at most :data:`_KEEP` bytes of it (longer is no name)."""
    kept = b""
    while True:
        chunk = f.readline(64 * 1024)
        if not chunk:
            raise _Invalid
        if len(kept) <= _KEEP:
            kept += chunk[: _KEEP + 1]
        if chunk.endswith(b"\n"):
            return kept[:-1] if kept.endswith(b"\n") else kept + b"\x00"


def _skip(f: IO[bytes], n: int) -> None:
    """Move past ``n`` bytes, which must be there (else the unpickler would fail here too)."""
    here = f.tell()
    end = f.seek(0, 2)
    if end - here < n:
        raise _Invalid
    f.seek(here + n)


def _opcodes() -> Iterator[tuple[bytes, pickletools.OpcodeInfo]]:
    for op in pickletools.opcodes:
        yield op.code.encode("latin-1"), op


_OPCODES = dict(_opcodes())

"""Crash-safe writes: a lock, a journal, atomic file replacement.

While the patch is applied, the package holds one file of the tool's, ``.mhsa-patch-journal.json``, with the
original text and the hashes of each patched file. Every change of state goes through it:

apply:  journal(state=applying, originals) -> replace files -> journal(state=applied)
revert: journal(state=reverting)           -> replace files -> delete journal

Each file replacement and each journal write is atomic (temporary file in the same folder, fsync, ``os.replace``).
A process killed at any instant therefore leaves either no journal (files untouched or fully reverted), a journal
``applied`` (fully patched), or a journal in ``applying``/``reverting``: the next ``apply`` or ``revert`` rolls the
install back to the originals first (``status`` only reports it). Concurrent runs serialize on a lock
(``atomic.locked``).

The journal is input from an untrusted folder: anyone can plant one in a package they ship. ``Journal.read``
accepts only a bounded, well-formed record (``Record``) that names the patched files and nothing else, whose
original texts match their own hashes; anything else is refused with one line naming the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional

from mhsa_patch.errors import PatchError
from mhsa_patch.patching.atomic import Unsafe, fsync_dir, read_confined, sha256, write_atomic
from mhsa_patch.patching.target import TARGET_FILES

JOURNAL = ".mhsa-patch-journal.json"
TOOL = "mhsa-patch"
STATES = ("applying", "applied", "reverting")
# ultralytics' three target files are ~150 KB together; the journal holds their originals (JSON-escaped).
MAX_JOURNAL_BYTES = 16 * 2**20

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_ENTRY_KEYS = ("original", "original_sha256", "patched_sha256")
_RECORD_KEYS = ("tool", "tool_version", "patch_digest", "ultralytics_version", "layers", "state", "files")
# Optional: journals written before readings were recorded lack it (read as no reading recorded); journals without
# user layers (``apply --layer``) may lack ``user_layers``.
_OPTIONAL_KEYS = ("readings", "user_layers")


def _show(value: Any, width: int = 60) -> str:
    """A value from the file, quoted on one line and cut short, for a message."""
    text = ascii(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _check_str(what: str, value: Any, *, hex64: bool = False) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{what} is {type(value).__name__}, not a string")
    if hex64 and not _HEX64.match(value):
        raise ValueError(f"{what} {_show(value)} is not a SHA-256 hex digest")


@dataclass(frozen=True)
class FileEntry:
    """What the journal keeps of one target file: its original text and the hashes before and after apply."""

    original: str
    original_sha256: str
    patched_sha256: str

    def __post_init__(self) -> None:
        _check_str("original", self.original)
        _check_str("original_sha256", self.original_sha256, hex64=True)
        _check_str("patched_sha256", self.patched_sha256, hex64=True)
        try:
            data = self.original.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("original is not encodable as UTF-8") from None
        if sha256(data) != self.original_sha256:
            raise ValueError("original does not match its original_sha256")

    @classmethod
    def of(cls, original: str, patched: bytes) -> "FileEntry":
        return cls(original, sha256(original.encode("utf-8")), sha256(patched))


@dataclass(frozen=True)
class Record:
    """A validated journal: construction checks every field, so a ``Record`` in hand is always well-formed."""

    state: str
    tool_version: str
    patch_digest: str
    ultralytics_version: str
    layers: tuple[str, ...]
    files: Mapping[str, FileEntry]  # keys: some of TARGET_FILES, exactly as spelled there
    # layer -> the reading in force after apply (patches/readings.py names): "mhsa-patch", or the fork's kept one
    readings: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # the target's user layers (patching.userlayers.UserLayer), in the order they were applied; each names its
    # module file and holds its text, checked against the header hash the file carries
    user_layers: tuple = ()

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"state {_show(self.state)} is not one of {', '.join(STATES)}")
        _check_str("tool_version", self.tool_version)
        _check_str("patch_digest", self.patch_digest, hex64=True)
        _check_str("ultralytics_version", self.ultralytics_version)
        if not isinstance(self.layers, tuple) or not all(isinstance(n, str) for n in self.layers):
            raise ValueError("layers is not a list of strings")
        if not isinstance(self.files, Mapping):
            raise ValueError("files is not an object")
        for rel, entry in self.files.items():
            if rel not in TARGET_FILES:
                raise ValueError(f"files entry {_show(rel)} is not one of the patched files ({', '.join(TARGET_FILES)})")
            if not isinstance(entry, FileEntry):
                raise ValueError(f"files entry {rel} is not an object")
        object.__setattr__(self, "files", MappingProxyType(dict(self.files)))
        _check_readings(self.readings, self.layers)
        object.__setattr__(self, "readings", MappingProxyType(dict(self.readings)))
        object.__setattr__(self, "user_layers", _check_user_layers(self.user_layers, self.layers))

    @property
    def kept(self) -> frozenset:
        """The layers whose hand-written parse_model branch apply kept in force (a reading other than the tool's)."""
        from mhsa_patch.patches.readings import FALLBACK, OURS

        return frozenset(k for k, v in self.readings.items() if v not in (OURS, FALLBACK.name))
    def with_state(self, state: str) -> "Record":
        return dataclasses.replace(self, state=state)

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": TOOL,
            "tool_version": self.tool_version,
            "patch_digest": self.patch_digest,
            "ultralytics_version": self.ultralytics_version,
            "layers": list(self.layers),
            "state": self.state,
            "files": {rel: dataclasses.asdict(e) for rel, e in self.files.items()},
            "readings": dict(self.readings),
            "user_layers": [u.to_json() for u in self.user_layers],
        }

    @classmethod
    def from_json(cls, data: Any) -> "Record":
        """The record of a parsed journal; ``ValueError`` (one line) for anything but the exact expected shape."""
        _exact_keys("the journal", data, _RECORD_KEYS, _OPTIONAL_KEYS)
        if data["tool"] != TOOL:
            raise ValueError(f"tool is {_show(data['tool'])}, not {TOOL!r}")
        files = data["files"]
        if not isinstance(files, dict):
            raise ValueError("files is not an object")
        entries = {}
        for rel, entry in files.items():
            if rel not in TARGET_FILES:  # absolute, '..', backslashes, './': only the exact spellings pass
                raise ValueError(f"files entry {_show(rel)} is not one of the patched files ({', '.join(TARGET_FILES)})")
            _exact_keys(f"files entry {rel}", entry, _ENTRY_KEYS)
            try:
                entries[rel] = FileEntry(**entry)
            except ValueError as e:
                raise ValueError(f"files entry {rel}: {e}") from None
        layers = data["layers"]
        if not isinstance(layers, list):
            raise ValueError("layers is not a list of strings")
        return cls(
            state=data["state"],
            tool_version=data["tool_version"],
            patch_digest=data["patch_digest"],
            ultralytics_version=data["ultralytics_version"],
            layers=tuple(layers),
            files=entries,
            readings=data.get("readings", {}),
            user_layers=data.get("user_layers", []),
        )


def _check_readings(readings: Any, layers: tuple[str, ...]) -> None:
    """``readings``: an object from layer names of the record to reading names that the tool knows, no more."""
    from mhsa_patch.patches.readings import names

    if not isinstance(readings, Mapping):
        raise ValueError("readings is not an object")
    for layer, name in readings.items():
        if not isinstance(layer, str) or layer not in layers:
            raise ValueError(f"readings entry {_show(layer)} is not one of the journal's layers")
        if not isinstance(name, str) or name not in names():
            raise ValueError(f"readings entry {layer}: {_show(name)} is not a reading mhsa-patch knows")


def _check_user_layers(user_layers: Any, layers: tuple[str, ...]) -> tuple:
    """``user_layers``: valid records (``UserLayer`` validates each), named in ``layers``, none of them one of the
    tool's own layers."""
    from mhsa_patch.patches import LAYERS
    from mhsa_patch.patching.userlayers import check_list

    out = check_list(user_layers)
    builtin = {n for s in LAYERS for n in (*s.helpers, s.name)}
    for u in out:
        if u.name in builtin:
            raise ValueError(f"user_layers entry {u.name} is one of mhsa-patch's own layers")
        if u.name not in layers:
            raise ValueError(f"user_layers entry {u.name} is not one of the journal's layers")
    return out


def _exact_keys(what: str, data: Any, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{what} is not an object")
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"{what} lacks {', '.join(missing)}")
    extra = [k for k in data if k not in keys and k not in optional]
    if extra:
        raise ValueError(f"{what} has an unknown key {_show(extra[0])}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {_show(key)}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse(raw: bytes) -> Record:
    """A journal's bytes to a record; ``ValueError`` (one line) for anything else."""
    if len(raw) > MAX_JOURNAL_BYTES:
        raise ValueError(f"over {MAX_JOURNAL_BYTES // 2**20} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise ValueError("not JSON (nested too deeply)") from None
    return Record.from_json(data)


class Journal:
    """The journal file of one package folder."""

    def __init__(self, package: Path):
        self.package = package
        self.path = package / JOURNAL

    def _refuse(self, reason: str) -> PatchError:
        return PatchError(
            f"{self.path}: not a valid mhsa-patch journal ({reason}). It may have been planted: "
            "check the package's files before deleting it"
        )

    def read(self) -> Optional[Record]:
        """The validated record, or None where there is no journal. Refuses (one line) anything else."""
        try:
            raw = read_confined(self.package, self.path, MAX_JOURNAL_BYTES)
        except FileNotFoundError:
            return None
        except Unsafe as e:
            raise self._refuse(e.reason) from None
        except OSError as e:
            raise self._refuse(f"unreadable: {e.strerror or e}") from None
        try:
            return parse(raw)
        except ValueError as e:
            raise self._refuse(str(e)) from None

    def write(self, record: Record) -> None:
        """Raises ``OSError`` when the system refuses, ``PatchError`` when the record would be too large to read."""
        raw = (json.dumps(record.to_json(), indent=1) + "\n").encode("utf-8")
        if len(raw) > MAX_JOURNAL_BYTES:
            raise PatchError(
                f"{self.path}: the journal would take {len(raw)} bytes, over the {MAX_JOURNAL_BYTES // 2**20} MiB "
                "limit (are the target files this large?); nothing was changed"
            )
        write_atomic(self.path, raw, root=self.package)

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        fsync_dir(self.path.parent)

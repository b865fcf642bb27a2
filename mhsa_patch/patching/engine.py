"""apply, revert and status: plans computed in memory, then committed through the journal.

Nothing here prints. Each function returns a result object; refusals raise ``PatchError`` with one line.
libcst is imported only when a file has to be parsed: a revert of files unchanged since apply restores the
journal's bytes without parsing anything.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from mhsa_patch import __version__
from mhsa_patch.errors import PatchError
from mhsa_patch.patching.journal import Journal, locked, remove_stale_temporaries, sha256, write_atomic
from mhsa_patch.patching.target import TARGET_FILES, Target

MARK_BYTES = b"# mhsa-patch"  # a cheap pre-check before parsing a file for marked pieces

STATES = ("applied", "not-applied", "partial", "conflict")


# ----------------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Change:
    rel: str
    path: Path
    old: bytes
    new: bytes

    def diff(self) -> str:
        old = self.old.decode("utf-8").splitlines(keepends=True)
        new = self.new.decode("utf-8").splitlines(keepends=True)
        lines = difflib.unified_diff(old, new, f"a/ultralytics/{self.rel}", f"b/ultralytics/{self.rel}")
        return "".join(line if line.endswith(("\n", "\r")) else line + "\n" for line in lines)


@dataclass
class Result:
    """What apply or revert did (or, with dry_run, would do)."""

    action: str
    target: Target
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def nothing_to_do(self) -> bool:
        return not self.changes

    def diff(self) -> str:
        return "".join(c.diff() for c in self.changes)


@dataclass
class Piece:
    file: str
    edit: str
    layer: str
    state: str  # "marked", "outdated" (marked, but not what this version inserts), "unmarked", "missing"
    line: Optional[int] = None


@dataclass
class FileStatus:
    rel: str
    state: str
    pieces: list[Piece]
    modified_since_apply: Optional[bool] = None  # None: no journal entry to compare with


@dataclass
class Status:
    target: Target
    state: str
    files: list[FileStatus]
    notes: list[str] = field(default_factory=list)
    journal: Optional[dict[str, Any]] = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "ultralytics_version": self.target.version,
            "path": str(self.target.package),
            "tool_version": __version__,
            "layers": [layer for layer in _layer_names()],
            "journal": None
            if self.journal is None
            else {
                "state": self.journal.get("state"),
                "ultralytics_version": self.journal.get("ultralytics_version"),
                "tool_version": self.journal.get("tool_version"),
            },
            "files": {
                f.rel: {
                    "state": f.state,
                    "modified_since_apply": f.modified_since_apply,
                    "pieces": [
                        {"edit": p.edit, "layer": p.layer, "state": p.state, "line": p.line} for p in f.pieces
                    ],
                }
                for f in self.files
            },
            "notes": self.notes,
        }


# ----------------------------------------------------------------------------------------------------------------------
# Reading and parsing
# ----------------------------------------------------------------------------------------------------------------------


def _layer_names() -> list[str]:
    from mhsa_patch.patches import LAYERS  # data only, no torch

    return [spec.name for spec in LAYERS]


def _patch_digest() -> str:
    """Identifies what this version of the tool inserts: a journal with another digest means 'update'."""
    from mhsa_patch.patching.layers import layers

    h = hashlib.sha256(__version__.encode())
    for layer in layers():
        h.update(layer.class_source.encode())
        h.update(layer.rule_source.encode())
    return h.hexdigest()


def _read(target: Target, rel: str) -> bytes:
    path = target.file(rel)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PatchError(f"{rel} not found in {target.package} (ultralytics {target.version})") from None
    except OSError as e:
        raise PatchError(f"{path}: {e.strerror or e}") from None


def _decode(target: Target, rel: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")  # str keeps \r\n: libcst and the writer preserve the file's line endings
    except UnicodeDecodeError as e:
        raise PatchError(f"{target.file(rel)}: not UTF-8 ({e.reason} at byte {e.start})") from None


def _unsupported(target: Target, rel: str, what: str) -> PatchError:
    return PatchError(
        f"{what} in {rel} (ultralytics {target.version} at {target.package}): unsupported layout, nothing was changed"
    )


class _FileModel:
    """One target file parsed once, with the layer pieces that the file's edits find in it."""

    def __init__(self, target: Target, rel: str, data: bytes):
        from mhsa_patch.patching.edits import EDITS
        from mhsa_patch.patching.layers import layers

        self.target, self.rel, self.data = target, rel, data
        self.text = _decode(target, rel, data)
        self.edits = EDITS[rel]
        self.layers = layers()
        self._lines: Optional[dict] = None
        self._module = None

    @property
    def module(self):
        """The whole file as a libcst tree, parsed on first use (the fast apply path never needs it)."""
        if self._module is None:
            import libcst as cst

            try:
                self._module = cst.parse_module(self.text)
            except cst.ParserSyntaxError as e:
                raise PatchError(
                    f"{self.target.file(self.rel)}:{e.raw_line}: does not parse ({e.message}); nothing was changed"
                ) from None
        return self._module

    def _fast_applied_text(self) -> Optional[str]:
        """apply on a file that holds none of the layers' names: parse only the statements the edits change.

        ``ast`` (the C parser) finds each edit's anchor statement by structure and gives its line span; libcst
        parses that statement alone, the edit runs on it exactly as on the whole module, and the regenerated
        statement replaces its lines. On tasks.py that is parse_model and one import instead of 2,400 lines.
        Returns None where the whole-module path must run instead (a layer's name already in the text).
        """
        import ast

        import libcst as cst

        from mhsa_patch.patching.edits import END

        if any(layer.name in self.text for layer in self.layers) or "\r" in self.text.replace("\r\n", ""):
            return None
        try:
            tree = ast.parse(self.text, filename=str(self.target.file(self.rel)))
        except SyntaxError as e:
            raise PatchError(
                f"{self.target.file(self.rel)}:{e.lineno}: does not parse ({e.msg}); nothing was changed"
            ) from None
        newline = "\r\n" if "\r\n" in self.text else "\n"
        lines = self.text.split("\n")
        lines = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
        spans: dict[tuple[int, int], list] = {}
        for edit, layer in self.pairs():
            try:
                node = edit.ast_anchor(tree)
            except PatchError as e:
                raise _unsupported(self.target, self.rel, str(e)) from None
            if node == END:
                span = (len(lines), len(lines))
            else:
                start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", ()))]) - 1
                span = (start, node.end_lineno)
            spans.setdefault(span, []).append((edit, layer))
        config = cst.PartialParserConfig(default_newline=newline)
        for (start, end), pairs in sorted(spans.items(), reverse=True):
            piece = cst.parse_module("".join(lines[start:end]), config=config)
            if start == end:  # insertion at the end: the new last statement ends its line like the old one did
                piece = piece.with_changes(has_trailing_newline=self.text.endswith("\n"), default_newline=newline)
            for edit, layer in pairs:
                try:
                    edit.check_anchor(piece, layer)
                except PatchError as e:
                    raise _unsupported(self.target, self.rel, str(e)) from None
                piece = edit.add(piece, layer)
            lines[start:end] = [piece.code]
        return "".join(lines)

    def pairs(self):
        for layer in self.layers:
            for edit in self.edits:
                yield edit, layer

    def check_anchors(self) -> None:
        for edit, layer in self.pairs():
            try:
                edit.check_anchor(self.module, layer)
            except PatchError as e:
                raise _unsupported(self.target, self.rel, str(e)) from None

    def find(self, module=None):
        """(edit, layer, Found) for every piece present in ``module`` (default: the file as read)."""
        if module is None:
            module = self.module
            pairs = [(e, lay) for e, lay in self.pairs() if lay.name in self.text]  # absent name: no tree walks
        else:
            pairs = list(self.pairs())
        out = []
        for edit, layer in pairs:
            try:
                out.extend((edit, layer, f) for f in edit.find(module, layer))
            except PatchError as e:
                raise _unsupported(self.target, self.rel, str(e)) from None
        return out

    def where(self, node) -> str:
        """``path:line`` of a node for messages (``path`` alone when the node is not in the file as read)."""
        line = self.line_of(node)
        return f"{self.target.file(self.rel)}:{line}" if line else str(self.target.file(self.rel))

    def line_of(self, node) -> Optional[int]:
        """1-based line of a node; the position pass is costly, so it runs only when a message needs it."""
        if self._lines is None:
            from libcst.metadata import MetadataWrapper, PositionProvider

            wrapper = MetadataWrapper(self.module, unsafe_skip_copy=True)
            self._lines = wrapper.resolve(PositionProvider)
        pos = self._lines.get(node)
        return pos.start.line if pos is not None else None

    def status(self, entry: Optional[dict]) -> FileStatus:
        pieces: list[Piece] = []
        found = self.find()
        for edit, layer in self.pairs():
            mine = [f for e, lay, f in found if e is edit and lay is layer]
            if not mine:
                pieces.append(Piece(self.rel, edit.key, layer.name, "missing"))
            for f in mine:
                state = "unmarked" if not f.marked else ("marked" if f.current else "outdated")
                line = self.line_of(f.node) if state == "unmarked" else None
                pieces.append(Piece(self.rel, edit.key, layer.name, state, line))
        states = {p.state for p in pieces}
        if "unmarked" in states:
            state = "conflict"
        elif states <= {"marked", "outdated"}:
            state = "applied"
        elif states == {"missing"}:
            state = "not-applied"
        else:
            state = "partial"
        modified = None
        if entry is not None and state != "not-applied":
            modified = sha256(self.data) != entry.get("patched_sha256")
        return FileStatus(self.rel, state, pieces, modified)

    def without_pieces(self, *, unmarked: bool) -> str:
        """The text with the tool's pieces (and, with ``unmarked``, hand-pasted ones) removed."""
        return self._stripped(unmarked=unmarked).code

    def _stripped(self, *, unmarked: bool):
        module = self.module
        while True:
            left = [(e, lay, f) for e, lay, f in self.find(module) if f.marked or unmarked]
            if not left:
                return module
            edit, layer, f = left[0]
            try:
                module = edit.remove(module, layer, f)
            except PatchError as e:
                raise PatchError(f"{self.where(f.node)}: {e}") from None

    def applied_text(self, *, force: bool) -> str:
        fast = self._fast_applied_text()
        if fast is not None:
            return fast
        self.check_anchors()
        found = self.find()
        unmarked = [(e, lay, f) for e, lay, f in found if not f.marked]
        if unmarked and not force:
            edit, layer, f = unmarked[0]
            raise PatchError(
                f"{self.where(f.node)}: {layer.name} ({edit.key}) is already there without mhsa-patch's marker, probably pasted by "
                "hand; 'mhsa-patch apply --force' replaces it with the tool's own"
            )
        module = self.module
        if unmarked:
            module = self._stripped(unmarked=True)
            found = self.find(module)
        for edit, layer in self.pairs():
            # each edit touches only its own statement, so the other pieces found above keep their identity
            mine = [f for e, lay, f in found if e is edit and lay is layer and f.marked]
            if mine and all(f.current for f in mine):
                continue
            for f in mine:  # outdated: an older version of the tool inserted something else
                module = edit.remove(module, layer, f)
            module = edit.add(module, layer)
        return module.code


def _compile_check(target: Target, rel: str, text: str) -> None:
    try:
        compile(text, str(target.file(rel)), "exec", dont_inherit=True)
    except SyntaxError as e:
        raise PatchError(f"internal error: the patched {rel} does not compile ({e.msg}, line {e.lineno})") from None


def _check_writable(target: Target, changes: list[Change]) -> None:
    import os

    for path in [target.package, *(c.path for c in changes), *{c.path.parent for c in changes}]:
        if not os.access(path, os.W_OK):
            raise PatchError(f"{path}: read-only install, nothing was changed; use an environment you can write to")


# ----------------------------------------------------------------------------------------------------------------------
# Journal handling
# ----------------------------------------------------------------------------------------------------------------------


def _folders(target: Target) -> list[Path]:
    return sorted({target.package, *(target.file(rel).parent for rel in TARGET_FILES)})


def _revert_plan(target: Target, journal: Optional[dict]) -> list[Change]:
    """Byte-exact originals where files are as apply left them; otherwise the marked pieces removed, edits kept."""
    entries = (journal or {}).get("files", {})
    changes = []
    for rel in TARGET_FILES:
        data = _read(target, rel)
        entry = entries.get(rel)
        if entry is not None and sha256(data) == entry.get("patched_sha256"):
            new = entry["original"].encode("utf-8")
        elif MARK_BYTES not in data:
            continue
        else:
            new = _FileModel(target, rel, data).without_pieces(unmarked=False).encode("utf-8")
        if new != data:
            changes.append(Change(rel, target.file(rel), data, new))
    return changes


def _write_changes(target: Target, changes: list[Change]) -> None:
    """Write every change or, if the system refuses one (full disk, read-only file), put back the ones written."""
    done: list[Change] = []
    try:
        for c in changes:
            write_atomic(c.path, c.new)
            done.append(c)
    except OSError as e:
        for c in reversed(done):
            write_atomic(c.path, c.old)
        raise PatchError(f"{e.filename or target.package}: {e.strerror or e}; nothing was changed") from None


def _journal_write(target: Target, journal: Journal, data: dict) -> None:
    try:
        journal.write(data)
    except OSError as e:
        raise PatchError(f"{e.filename or journal.path}: {e.strerror or e}; nothing was changed") from None


def _recover(target: Target, journal: Journal) -> list[str]:
    """Finish what a killed process left: an interrupted apply or revert ends as not applied. Call under the lock."""
    data = journal.read()
    if data is None or data.get("state") == "applied":
        return []
    state = data.get("state")
    changes: list[Change] = []
    if state == "applying":
        for rel, entry in data.get("files", {}).items():
            cur = _read(target, rel)
            if sha256(cur) != entry["original_sha256"]:
                changes.append(Change(rel, target.file(rel), cur, entry["original"].encode("utf-8")))
    else:  # reverting
        changes = _revert_plan(target, data)
    _check_writable(target, changes)
    _write_changes(target, changes)
    journal.delete()
    return [f"recovered from an interrupted {'apply' if state == 'applying' else 'revert'}: the patch is not applied"]


# ----------------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------------


def status(target: Target) -> Status:
    """Which pieces are where, per file, and what that adds up to. Recovers an interrupted run first."""
    journal = Journal(target.package)
    notes: list[str] = []
    data = journal.read()
    if data is not None and data.get("state") in ("applying", "reverting"):
        try:
            with locked(target.package):
                notes += _recover(target, journal)
        except PatchError as e:
            notes.append(f"an interrupted {data.get('state')} could not be recovered: {e}")
        data = journal.read()
    entries = (data or {}).get("files", {})
    files = [_FileModel(target, rel, _read(target, rel)).status(entries.get(rel)) for rel in TARGET_FILES]
    states = {f.state for f in files}
    if "conflict" in states:
        state = "conflict"
    elif states == {"applied"}:
        state = "applied"
    elif states == {"not-applied"}:
        state = "not-applied"
    else:
        state = "partial"
    if data is not None:
        if data.get("ultralytics_version") != target.version:
            notes.append(
                f"drift: the patch was applied to ultralytics {data.get('ultralytics_version')}, the files now say "
                f"{target.version} (reinstalled or upgraded?); run 'mhsa-patch apply' again"
            )
        elif state != "applied":
            notes.append("drift: files were replaced since apply (reinstalled?); run 'mhsa-patch apply' again")
        for f in files:
            if f.modified_since_apply:
                notes.append(f"{f.rel} was edited since apply; revert removes only the marked pieces and keeps the edits")
    if any(p.state == "outdated" for f in files for p in f.pieces):
        notes.append("the inserted code is from another mhsa-patch version; 'mhsa-patch apply' updates it")
    return Status(target, state, files, notes, data)


@contextlib.contextmanager
def _session(target: Target, action: str, dry_run: bool):
    """Under the package lock: clear what a killed run left (unless dry), then hand over the journal's contents."""
    journal = Journal(target.package)
    result = Result(action, target, dry_run=dry_run)
    with locked(target.package):
        if not dry_run:
            remove_stale_temporaries(_folders(target))
            result.notes += _recover(target, journal)
        yield journal, result, journal.read()


def apply(target: Target, *, force: bool = False, dry_run: bool = False) -> Result:
    """Insert every layer of patches/ into the target. A second apply changes nothing."""
    with _session(target, "apply", dry_run) as (journal, result, data):
        digest = _patch_digest()
        entries = (data or {}).get("files", {}) if (data or {}).get("state") == "applied" else {}
        current = {rel: _read(target, rel) for rel in TARGET_FILES}
        if (
            not force
            and entries
            and data.get("patch_digest") == digest
            and all(sha256(current[rel]) == entries.get(rel, {}).get("patched_sha256") for rel in TARGET_FILES)
        ):
            return result  # exactly as this version's apply left it: nothing to parse, nothing to do
        files: dict[str, dict[str, str]] = {}
        for rel in TARGET_FILES:
            model = _FileModel(target, rel, current[rel])
            new_text = model.applied_text(force=force)
            entry = entries.get(rel)
            if entry is not None and sha256(current[rel]) == entry.get("patched_sha256"):
                original = entry["original"]  # as the last apply left it: keep the stock bytes saved then
            elif MARK_BYTES in current[rel] or force:
                # patched but edited since (the edits must survive a revert), patched without a journal, or pieces
                # pasted by hand: the original is this text without them
                original = model.without_pieces(unmarked=force)
            else:
                original = model.text
            _compile_check(target, rel, new_text)
            new = new_text.encode("utf-8")
            files[rel] = {
                "original": original,
                "original_sha256": sha256(original.encode("utf-8")),
                "patched_sha256": sha256(new),
            }
            if new != current[rel]:
                result.changes.append(Change(rel, target.file(rel), current[rel], new))
        if dry_run:
            return result
        _check_writable(target, result.changes)
        record = {
            "tool_version": __version__,
            "patch_digest": digest,
            "ultralytics_version": target.version,
            "layers": _layer_names(),
            "files": files,
        }
        if result.changes or data is None or data.get("patch_digest") != digest:
            _journal_write(target, journal, {**record, "state": "applying"})
            try:
                _write_changes(target, result.changes)
            except PatchError:
                journal.delete()
                raise
            journal.write({**record, "state": "applied"})
    return result


def revert(target: Target, *, dry_run: bool = False) -> Result:
    """Remove what apply inserted: byte for byte where files are unchanged since apply, else only the marked pieces."""
    with _session(target, "revert", dry_run) as (journal, result, data):
        result.changes = _revert_plan(target, data)
        if dry_run:
            return result
        _check_writable(target, result.changes)
        if result.changes:
            _journal_write(target, journal, {**(data or {}), "state": "reverting"})
            try:
                _write_changes(target, result.changes)
            except PatchError:
                if data is None:
                    journal.delete()
                else:
                    journal.write(data)
                raise
        journal.delete()
    return result

"""apply, revert and status: plans computed in memory, then committed through the journal.

Nothing here prints. Each function returns a result object; refusals raise ``PatchError`` with one line.
libcst is imported only when a file has to be parsed: a revert of files unchanged since apply restores the
journal's bytes without parsing anything.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Optional

from mhsa_patch import __version__
from mhsa_patch.errors import UNCHANGED, PatchError
from mhsa_patch.patches import layer_names  # data only: no libcst, no torch
from mhsa_patch.patches.readings import OURS
from mhsa_patch.patching.atomic import confine, locked, read_confined, remove_stale_temporaries, sha256, write_atomic
from mhsa_patch.patching.filemodel import Refusal, Refused, TargetFile, unreadable_status
from mhsa_patch.patching.journal import FileEntry, Journal, Record
from mhsa_patch.patching.results import Change, PieceState, Result, State, Status, combine
from mhsa_patch.patching.target import TARGET_FILES, Target

MARK_BYTES = b"# mhsa-patch"  # a cheap pre-check before parsing a file for marked pieces
MAX_SOURCE_BYTES = 4 * 2**20  # ultralytics' largest target file is ~70 KB; the journal must hold three originals



# ----------------------------------------------------------------------------------------------------------------------
# Reading and parsing
# ----------------------------------------------------------------------------------------------------------------------


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
        return read_confined(target.package, path, MAX_SOURCE_BYTES)  # no link followed out of the package
    except FileNotFoundError:
        raise PatchError(f"{rel} not found in {target.package} (ultralytics {target.version})") from None
    except OSError as e:
        raise PatchError(f"{path}: {e.strerror or e}") from None


def _compile_check(target: Target, rel: str, text: str) -> None:
    try:
        compile(text, str(target.file(rel)), "exec", dont_inherit=True)
    except SyntaxError as e:
        raise PatchError(f"{target.file(rel)}:{e.lineno}: internal error: the patched {rel} does not compile ({e.msg})") from None


def _check_writable(target: Target, changes: list[Change]) -> None:
    """Before any write: every file written stays inside the package (no link followed out), and can be written."""
    import os

    for path in [*(c.path for c in changes), Journal(target.package).path]:
        confine(target.package, path)
    for path in [target.package, *(c.path for c in changes), *{c.path.parent for c in changes}]:
        if not os.access(path, os.W_OK):
            raise PatchError(f"{path}: read-only install, nothing was changed; use an environment you can write to")


# ----------------------------------------------------------------------------------------------------------------------
# Journal handling
# ----------------------------------------------------------------------------------------------------------------------


def _folders(target: Target) -> list[Path]:
    return sorted({target.package, *(target.file(rel).parent for rel in TARGET_FILES)})


def _revert_plan(target: Target, journal: Optional[Record]) -> list[Change]:
    """Byte-exact originals where files are as apply left them; otherwise the marked pieces removed, edits kept."""
    entries = journal.files if journal is not None else {}
    changes = []
    for rel in TARGET_FILES:
        data = _read(target, rel)
        entry = entries.get(rel)
        if entry is not None and sha256(data) == entry.patched_sha256:
            new = entry.original.encode("utf-8")
        elif MARK_BYTES not in data:
            continue
        else:
            new = TargetFile(target, rel, data).without_pieces(unmarked=False).encode("utf-8")
        if new != data:
            changes.append(Change(rel, target.file(rel), data, new))
    return changes


def _write_changes(target: Target, changes: list[Change]) -> None:
    """Write every change or, if the system refuses one (full disk, read-only file), put back the ones written."""
    done: list[Change] = []
    try:
        for c in changes:
            write_atomic(c.path, c.new, root=target.package)
            done.append(c)
    except OSError as e:
        for c in reversed(done):
            write_atomic(c.path, c.old, root=target.package)
        raise PatchError(f"{e.filename or target.package}: {e.strerror or e}; nothing was changed") from None


def _journal_write(target: Target, journal: Journal, record: Record) -> None:
    try:
        journal.write(record)
    except OSError as e:
        raise PatchError(f"{e.filename or journal.path}: {e.strerror or e}; nothing was changed") from None


def _recover(target: Target, journal: Journal) -> list[str]:
    """Finish what a killed process left: an interrupted apply or revert ends as not applied. Call under the lock.

    Both are rolled back the way revert works: a file still as that run's apply wrote it gets its original bytes
    back, a file with marked pieces loses them, anything else is left alone. Only apply and revert call this.
    """
    record = journal.read()
    if record is None or record.state == "applied":
        return []
    changes = _revert_plan(target, record)
    _check_writable(target, changes)
    _write_changes(target, changes)
    journal.delete()
    what = "apply" if record.state == "applying" else "revert"
    return [f"recovered from an interrupted {what}: the patch is not applied"]


def _interrupted(record: Optional[Record]) -> list[str]:
    if record is None or record.state == "applied":
        return []
    if record.state == "applying":
        return [
            "an interrupted apply was found (journal state 'applying'): run 'mhsa-patch apply' to finish it or "
            "'mhsa-patch revert' to roll it back"
        ]
    return [
        "an interrupted revert was found (journal state 'reverting'): run 'mhsa-patch revert' to finish it or "
        "'mhsa-patch apply' to apply the patch again"
    ]


# ----------------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------------


def status(target: Target, *, lines: bool = True) -> Status:
    """Which pieces are where, per file, and what that adds up to. Writes nothing, ever, and takes no lock.

    An interrupted run (journal state applying or reverting) is reported with the command that finishes it; only
    apply and revert recover. A status running while another process applies may see that run's journal.
    ``lines``: False leaves the pieces found without their line numbers (for callers that need only the states).
    """
    data = Journal(target.package).read()
    notes = _interrupted(data)
    entries = data.files if data is not None else {}
    kept = data.kept if data is not None and data.state == "applied" else frozenset()
    files, models = [], []
    for rel in TARGET_FILES:
        raw = _read(target, rel)  # a link out of the package, a file too large: refused, as by apply
        try:
            model = TargetFile(target, rel, raw)
            files.append(model.status(entries.get(rel), kept, lines))
            models.append(model)
        except PatchError as e:  # not UTF-8, does not parse: said, never a failure of status
            files.append(unreadable_status(rel, e))
    files = tuple(files)
    try:
        readings = next((m.readings() for m in models if m.reads_rows), ())
    except (PatchError, SyntaxError, ValueError):  # a parse_model this reading cannot follow: status still answers
        readings = ()
    state = combine(f.state for f in files)
    if data is not None and data.state == "applied":
        if data.ultralytics_version != target.version:
            notes.append(
                f"drift: the patch was applied to ultralytics {data.ultralytics_version}, the files now say "
                f"{target.version} (reinstalled or upgraded?); run 'mhsa-patch apply' again"
            )
        elif state is not State.APPLIED:
            notes.append("drift: files were replaced since apply (reinstalled?); run 'mhsa-patch apply' again")
        for f in files:
            if f.modified_since_apply:
                notes.append(f"{f.rel} was edited since apply; revert removes only the marked pieces and keeps the edits")
    if any(p.state is PieceState.OUTDATED for f in files for p in f.pieces):
        notes.append("the inserted code is from another mhsa-patch version; 'mhsa-patch apply' updates it")
    unsupported = list(dict.fromkeys(p.why for f in files for p in f.pieces if p.state is PieceState.UNSUPPORTED))
    if unsupported:
        notes.append(f"unsupported here, 'mhsa-patch apply' would refuse: {'; '.join(unsupported)}")
    return Status(target, state, files, tuple(notes), data, layer_names(), readings)


@contextlib.contextmanager
def _unchanged():
    """apply's and revert's refusals say that nothing was changed (status's never do: it never writes)."""
    try:
        yield
    except PatchError as e:
        if UNCHANGED not in str(e):
            e.args = (f"{e}; {UNCHANGED}",)  # the same error (its type picks the exit code), one clause longer
        raise


@contextlib.contextmanager
def _session(target: Target, dry_run: bool):
    """Under the package lock: clear what a killed run left (unless dry); yields the journal, its record, the notes.

    The journal is validated and every target file confined to the package before anything is written.
    """
    journal = Journal(target.package)
    notes: list[str] = []
    with locked(target.package):
        record = journal.read()
        for rel in TARGET_FILES:
            confine(target.package, target.file(rel))
        if not dry_run:
            remove_stale_temporaries(target.package, _folders(target))
            notes += _recover(target, journal)
            record = journal.read()
        yield journal, record, notes


def apply(target: Target, *, force: bool = False, replace_foreign: bool = False, dry_run: bool = False) -> Result:
    """Insert every layer of patches/ into the target. A second apply changes nothing.

    ``force`` replaces hand-written pieces (a pasted class, imports, exports, parse_model branches, a fork's star
    import made harmless by the tool's import after it); a hand-written class with the layer's name that is not the
    one the tool replaces is refused unless ``replace_foreign``. The journal keeps the bytes as they were before
    this apply (hand-written pieces included), so that revert gives them back.
    """
    changes: list[Change] = []
    with _unchanged(), _session(target, dry_run) as (journal, data, notes):
        digest = _patch_digest()
        entries = data.files if data is not None and data.state == "applied" else {}
        current = {rel: _read(target, rel) for rel in TARGET_FILES}
        if (
            not force
            and entries
            and data.patch_digest == digest
            and all(rel in entries and sha256(current[rel]) == entries[rel].patched_sha256 for rel in TARGET_FILES)
        ):
            # exactly as this version's apply left it: nothing to parse, nothing to do
            return Result("apply", target, notes=tuple(notes), dry_run=dry_run)
        files: dict[str, FileEntry] = {}
        kept_before = data.kept if data is not None and data.state == "applied" else frozenset()
        readings = {name: OURS for name in layer_names()}
        refusals: list[Refusal] = []
        for rel in TARGET_FILES:
            try:  # every file's refusals are gathered and said at once
                model = TargetFile(target, rel, current[rel])
                new_text = model.applied_text(force=force, replace_foreign=replace_foreign, kept_before=kept_before)
            except Refused as e:
                refusals += e.refusals
                continue
            except PatchError as e:
                refusals.append(Refusal("layout", str(e)))
                continue
            readings.update({name: found.name for name, found in model.kept.items()})
            notes += model.notes
            entry = entries.get(rel)
            if entry is not None and sha256(current[rel]) == entry.patched_sha256:
                original = entry.original  # as the last apply left it: keep the stock bytes saved then
            elif MARK_BYTES in current[rel]:
                # patched but edited since (the edits must survive a revert) or patched without a journal: the
                # original is this text without the tool's pieces; hand-written ones stay in it
                original = model.without_pieces(unmarked=False)
            else:  # pieces written by hand (a fork) included: revert gives them back
                original = model.text
            _compile_check(target, rel, new_text)
            new = new_text.encode("utf-8")
            files[rel] = FileEntry.of(original, new)
            if new != current[rel]:
                changes.append(Change(rel, target.file(rel), current[rel], new))
        if refusals:
            raise Refused(refusals)
        result = Result("apply", target, tuple(changes), tuple(notes), dry_run)
        if dry_run:
            return result
        _check_writable(target, changes)
        record = Record("applying", __version__, digest, target.version, layer_names(), files, readings)
        if changes or data is None or data.patch_digest != digest or data.readings != readings:
            _journal_write(target, journal, record)
            try:
                _write_changes(target, changes)
            except PatchError:
                journal.delete()
                raise
            journal.write(record.with_state("applied"))
    return result


def revert(target: Target, *, dry_run: bool = False) -> Result:
    """Remove what apply inserted: byte for byte where files are unchanged since apply, else only the marked pieces."""
    with _unchanged(), _session(target, dry_run) as (journal, data, notes):
        changes = _revert_plan(target, data)
        result = Result("revert", target, tuple(changes), tuple(notes), dry_run)
        if dry_run:
            return result
        _check_writable(target, changes)
        if changes:
            # without a journal (deleted by hand): one that names no files, so recovery removes the marked pieces
            record = data or Record("reverting", __version__, _patch_digest(), target.version, layer_names(), {})
            _journal_write(target, journal, record.with_state("reverting"))
            try:
                _write_changes(target, changes)
            except PatchError:
                if data is None:
                    journal.delete()
                else:
                    journal.write(data)
                raise
        journal.delete()
    return result

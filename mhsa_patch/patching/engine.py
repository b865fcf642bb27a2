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
from mhsa_patch.patching.results import Change, PieceState, Result, State, Status, UserState, combine
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


def _read_optional(target: Target, rel: str) -> Optional[bytes]:
    """A file the tool may have created (a user layer's module): its bytes, or None where there is none."""
    try:
        return _read(target, rel)
    except PatchError:
        if not target.file(rel).exists() and not target.file(rel).is_symlink():
            return None
        raise


def _reader(target: Target):
    """``read(rel) -> bytes or None``: confined reads for the modules that look around the package."""

    def read(rel: str) -> Optional[bytes]:
        try:
            return read_confined(target.package, target.file(rel), MAX_SOURCE_BYTES)
        except (OSError, ValueError, PatchError):  # missing, a link, outside the package: not looked at
            return None

    return read


def _user_layers(target: Target, record: Optional[Record]) -> tuple:
    """The target's user layers: the journal's, in the order applied, then any the files show that it lacks (a
    journal deleted by hand, a file of an interrupted run)."""
    from mhsa_patch.patching.userlayers import discover

    known = tuple(record.user_layers) if record is not None else ()
    names = {u.name for u in known}
    found = tuple(u for u in discover(target, _reader(target)) if u.name not in names)
    return known + found


def user_layers(target: Target) -> tuple:
    """The target's user layers (``userlayers.UserLayer``), as status sees them: read-only, no lock; none where the
    journal cannot be read (status and apply say why)."""
    try:
        return _user_layers(target, Journal(target.package).read())
    except PatchError:
        return ()


def user_specs(target: Target) -> tuple:
    """The target's user layers as ``patches.LayerSpec``s: what gen-yaml, the lint and ablate read them by."""
    return tuple(u.spec() for u in user_layers(target))


def _layer_set(user: tuple) -> tuple:
    from mhsa_patch.patching.layers import layers

    return layers() + tuple(u.layer() for u in user)


def _module_changes(target: Target, keep: tuple, drop: tuple, *, force: bool = False) -> tuple[list[Change], list[str]]:
    """The user layers' module files: written for ``keep`` (created, or replaced where the tool wrote them), removed
    for ``drop``. A file that is not the tool's, unedited, is moved aside (``--force`` on apply; always on revert:
    nothing of the user's is deleted), and a note says where."""
    from mhsa_patch.patching.userlayers import verified

    changes: list[Change] = []
    notes: list[str] = []
    for u in keep:
        if u.kind != "file":
            continue
        now = _read_optional(target, u.rel)
        if now == u.data:
            continue
        if now is not None and verified(now.decode("utf-8", "replace")) is None:
            if not force:
                raise PatchError(f"{target.file(u.rel)}: exists and is not mhsa-patch's (or was edited since apply); "
                                 "move it away, or pass --force to move it aside")
            changes += _aside(target, u.rel, now, notes)
            now = None
        changes.append(Change(u.rel, target.file(u.rel), now, u.data))
    for u in drop:
        if u.kind != "file":
            continue
        now = _read_optional(target, u.rel)
        if now is None:
            continue
        if verified(now.decode("utf-8", "replace")) == u.name:
            changes.append(Change(u.rel, target.file(u.rel), now, None))
        else:
            changes += _aside(target, u.rel, now, notes)
    return changes, notes


def _aside(target: Target, rel: str, data: bytes, notes: list[str]) -> list[Change]:
    """Move a file aside (``user_ECA.py`` -> ``user_ECA.py.edited``, ``.edited.2`` ...): two changes."""
    k, new = 1, f"{rel}.edited"
    while target.file(new).exists() or target.file(new).is_symlink():
        k += 1
        new = f"{rel}.edited.{k}"
    notes.append(f"{target.file(rel)} was not as mhsa-patch wrote it (edited?): moved aside to {target.file(new)}")
    return [Change(rel, target.file(rel), data, None), Change(new, target.file(new), None, data)]


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
    existing = [c.path for c in changes if c.old is not None]  # a file the tool creates does not exist yet
    for path in [target.package, *existing, *{c.path.parent for c in changes}]:
        if not os.access(path, os.W_OK):
            raise PatchError(f"{path}: read-only install, nothing was changed; use an environment you can write to")


# ----------------------------------------------------------------------------------------------------------------------
# Journal handling
# ----------------------------------------------------------------------------------------------------------------------


def _folders(target: Target) -> list[Path]:
    return sorted({target.package, *(target.file(rel).parent for rel in TARGET_FILES)})


def _revert_plan(target: Target, journal: Optional[Record], notes: Optional[list[str]] = None) -> list[Change]:
    """Byte-exact originals where files are as apply left them; otherwise the marked pieces removed, edits kept. The
    user layers' module files go (moved aside where they were edited, said in ``notes``)."""
    entries = journal.files if journal is not None else {}
    user = _user_layers(target, journal)
    layer_set = _layer_set(user)
    changes = []
    for rel in TARGET_FILES:
        data = _read(target, rel)
        entry = entries.get(rel)
        if entry is not None and sha256(data) == entry.patched_sha256:
            new = entry.original.encode("utf-8")
        elif MARK_BYTES not in data:
            continue
        else:
            new = TargetFile(target, rel, data, layer_set).without_pieces(unmarked=False).encode("utf-8")
        if new != data:
            changes.append(Change(rel, target.file(rel), data, new))
    modules, said = _module_changes(target, (), user)
    if notes is not None:
        notes += said
    return changes + modules


def _put(target: Target, path: Path, data: Optional[bytes]) -> None:
    """Write ``data`` to ``path`` atomically, or remove the file (``None``), inside the package only."""
    import os

    if data is not None:
        write_atomic(path, data, root=target.package)
        return
    confine(target.package, path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    from mhsa_patch.patching.atomic import fsync_dir

    fsync_dir(path.parent)


def _ordered(changes: list[Change]) -> list[Change]:
    """New files first (a module exists before the import of it is written), removals last (after the imports of
    it are gone), the target files between."""
    return sorted(changes, key=lambda c: 0 if c.old is None else 2 if c.new is None else 1)


def _write_changes(target: Target, changes: list[Change]) -> None:
    """Write every change or, if the system refuses one (full disk, read-only file), put back the ones written."""
    done: list[Change] = []
    try:
        for c in _ordered(changes):
            _put(target, c.path, c.new)
            done.append(c)
    except OSError as e:
        for c in reversed(done):
            _put(target, c.path, c.old)
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
    said: list[str] = []
    changes = _revert_plan(target, record, said)
    _check_writable(target, changes)
    _write_changes(target, changes)
    journal.delete()
    what = "apply" if record.state == "applying" else "revert"
    return [f"recovered from an interrupted {what}: the patch is not applied", *said]


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
    user = _user_layers(target, data)
    layer_set = _layer_set(user)
    files, models = [], []
    for rel in TARGET_FILES:
        raw = _read(target, rel)  # a link out of the package, a file too large: refused, as by apply
        try:
            model = TargetFile(target, rel, raw, layer_set)
            files.append(model.status(entries.get(rel), kept, lines))
            models.append(model)
        except PatchError as e:  # not UTF-8, does not parse: said, never a failure of status
            files.append(unreadable_status(rel, e, layer_set))
    files = tuple(files)
    try:
        readings = next((m.readings() for m in models if m.reads_rows), ())
    except (PatchError, SyntaxError, ValueError):  # a parse_model this reading cannot follow: status still answers
        readings = ()
    state = combine(f.state for f in files)
    user_states = tuple(_user_state(target, u) for u in user)
    if any(s.module_state != "ok" for s in user_states) and state is State.APPLIED:
        state = State.PARTIAL
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
    for s in user_states:
        if s.source_state == "changed":
            notes.append(
                f"{s.layer.name}: {s.layer.source} changed since it was applied (its hash differs); "
                f"'mhsa-patch apply --layer {s.layer.source}' updates the layer"
            )
        elif s.source_state == "missing":
            notes.append(f"{s.layer.name}: {s.layer.source} is gone; the layer stays as applied")
        if s.module_state in ("edited", "missing"):
            notes.append(f"{target.file(s.layer.rel)} is {s.module_state}; 'mhsa-patch apply' writes it again")
    if any(p.state is PieceState.OUTDATED for f in files for p in f.pieces):
        notes.append("the inserted code is from another mhsa-patch version; 'mhsa-patch apply' updates it")
    unsupported = list(dict.fromkeys(p.why for f in files for p in f.pieces if p.state is PieceState.UNSUPPORTED))
    if unsupported:
        notes.append(f"unsupported here, 'mhsa-patch apply' would refuse: {'; '.join(unsupported)}")
    names = tuple(layer.name for layer in layer_set)
    return Status(target, state, files, tuple(notes), data, names, readings, user_states)


def _user_state(target: Target, u) -> UserState:
    """A user layer's source (unchanged, changed, missing, unknown) and module file (ok, edited, missing)."""
    import os
    import stat

    from mhsa_patch.patching.usersource import MAX_SOURCE_BYTES
    from mhsa_patch.patching.userlayers import verified

    source_state = "unknown"
    if u.kind == "stock":
        source_state = "ultralytics"
    elif u.source and u.source_sha256:
        # the journal names the file: read it only if it is a regular Python file of a layer file's size
        try:
            st = os.stat(u.source)
            if not (stat.S_ISREG(st.st_mode) and u.source.endswith(".py") and st.st_size <= MAX_SOURCE_BYTES):
                raise OSError
            with open(u.source, "rb") as f:
                digest = sha256(f.read(MAX_SOURCE_BYTES + 1))
            source_state = "unchanged" if digest == u.source_sha256 else "changed"
        except OSError:
            source_state = "missing"
    module_state = "ok"
    if u.kind == "file":
        now = _read_optional(target, u.rel)
        if now is None:
            module_state = "missing"
        elif now != u.data:
            module_state = "ok" if verified(now.decode("utf-8", "replace")) == u.name and not u.source else "edited"
    return UserState(u, source_state, module_state)


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


def _merged(registered: tuple, add: tuple, remove: frozenset) -> tuple:
    """The user layers after this run: the registered ones in their order (one asked again replaces its entry in
    place, one removed goes), then the new ones in the order asked."""
    by_name = {u.name: u for u in add}
    out = [by_name.pop(u.name, u) for u in registered if u.name not in remove]
    return tuple(out) + tuple(u for u in add if u.name in by_name)


def apply(
    target: Target,
    *,
    force: bool = False,
    replace_foreign: bool = False,
    dry_run: bool = False,
    add: tuple = (),
    remove: frozenset = frozenset(),
) -> Result:
    """Insert every layer of patches/ and the target's user layers into the target. A second apply changes nothing.

    ``force`` replaces hand-written pieces (a pasted class, imports, exports, parse_model branches, a fork's star
    import made harmless by the tool's import after it); a hand-written class with the layer's name that is not the
    one the tool replaces is refused unless ``replace_foreign``. The journal keeps the bytes as they were before
    this apply (hand-written pieces included), so that revert gives them back.

    ``add``: user layers to register (``register.ask``'s records; one already registered from the same file is
    replaced, in place: one journal entry). ``remove``: names of user layers to take out (``revert --layer``); the
    others stay, and the journal keeps the bytes from before the first apply.
    """
    from mhsa_patch.patching.collisions import problems

    changes: list[Change] = []
    with _unchanged(), _session(target, dry_run) as (journal, data, notes):
        applied = data is not None and data.state == "applied"
        registered = _user_layers(target, data)
        if add:
            refused, said = problems(target, list(add), registered, force=force, read=_reader(target))
            if refused:
                raise PatchError(problems=refused)
            notes += said
        user = _merged(registered, tuple(add), remove)
        kept_files = {u.rel for u in user if u.rel}
        dropped = tuple(u for u in registered if u.rel and u.rel not in kept_files)  # removed, or now another kind
        layer_set = _layer_set(user)
        names = tuple(layer.name for layer in layer_set)
        digest = _patch_digest()
        entries = data.files if applied else {}
        current = {rel: _read(target, rel) for rel in TARGET_FILES}
        modules, said = _module_changes(target, user, dropped, force=force)
        notes += said
        if (
            not force
            and not remove
            and entries
            and data.patch_digest == digest
            and tuple(data.user_layers) == user
            and not modules
            and all(rel in entries and sha256(current[rel]) == entries[rel].patched_sha256 for rel in TARGET_FILES)
        ):
            # exactly as this version's apply left it: nothing to parse, nothing to do
            return Result("apply", target, notes=tuple(notes), dry_run=dry_run)
        files: dict[str, FileEntry] = {}
        kept_before = data.kept if applied else frozenset()
        gone = tuple(u.layer() for u in registered if u.name in remove)
        readings = {name: OURS for name in names}
        if gone and not add and applied:  # the readings in force stay as they were, less the layer's that goes
            readings = {name: r for name, r in data.readings.items() if name in names}
        refusals: list[Refusal] = []
        for rel in TARGET_FILES:
            try:  # every file's refusals are gathered and said at once
                if gone and not add:  # revert --layer: that layer's marked pieces out, every other piece as it is
                    model = TargetFile(target, rel, current[rel], _layer_set(registered))
                    new_text = model.without_layers(gone) if any(model.mentions(g.name) for g in gone) else model.text
                    model.kept = {}
                else:
                    model = TargetFile(target, rel, current[rel], layer_set)
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
                original = TargetFile(target, rel, current[rel], _layer_set(registered + tuple(add))).without_pieces(
                    unmarked=False
                )
            else:  # pieces written by hand (a fork) included: revert gives them back
                original = model.text
            _compile_check(target, rel, new_text)
            new = new_text.encode("utf-8")
            files[rel] = FileEntry.of(original, new)
            if new != current[rel]:
                changes.append(Change(rel, target.file(rel), current[rel], new))
        if refusals:
            raise Refused(refusals)
        changes += modules
        result = Result("apply", target, tuple(changes), tuple(notes), dry_run)
        if dry_run:
            return result
        _check_writable(target, changes)
        record = Record("applying", __version__, digest, target.version, names, files, readings, user)
        if changes or data is None or data.patch_digest != digest or data.readings != readings or data.user_layers != user:
            _journal_write(target, journal, record)
            try:
                _write_changes(target, changes)
            except PatchError:
                journal.delete()
                raise
            journal.write(record.with_state("applied"))
    return result


def revert(target: Target, *, dry_run: bool = False, layer: Optional[str] = None) -> Result:
    """Remove what apply inserted: byte for byte where files are unchanged since apply, else only the marked pieces.

    ``layer``: one user layer only (``revert --layer NAME``): its pieces and its module file go, everything else
    stays applied (see :func:`apply`'s ``remove``)."""
    if layer is not None:
        return _revert_layer(target, layer, dry_run)
    with _unchanged(), _session(target, dry_run) as (journal, data, notes):
        changes = _revert_plan(target, data, notes)
        result = Result("revert", target, tuple(changes), tuple(notes), dry_run)
        if dry_run:
            return result
        _check_writable(target, changes)
        if changes:
            # without a journal (deleted by hand): one that names no files, so recovery removes the marked pieces
            names = tuple(lay.name for lay in _layer_set(()))
            record = data or Record("reverting", __version__, _patch_digest(), target.version, names, {})
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


def _revert_layer(target: Target, name: str, dry_run: bool) -> Result:
    from mhsa_patch.errors import UsageError
    from mhsa_patch.patches import LAYERS

    if name in {n for s in LAYERS for n in (*s.helpers, s.name)}:
        raise UsageError(f"--layer {name}: {name} is mhsa-patch's own layer; 'mhsa-patch revert' removes the patch")
    registered = _user_layers(target, Journal(target.package).read())
    match = next((u for u in registered if u.name == name), None)
    if match is None:
        have = ", ".join(u.name for u in registered) or "none"
        raise PatchError(f"--layer {name}: no user layer {name} in {target.package} (user layers: {have}); "
                         f"{UNCHANGED}")
    result = apply(target, dry_run=dry_run, remove=frozenset({name}))
    return Result("revert", target, result.changes, result.notes, dry_run)

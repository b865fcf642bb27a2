"""One target file, parsed once, with the layer pieces that its edits find in it, and its patched text."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple, Optional

from mhsa_patch.errors import PatchError
from mhsa_patch.patching.atomic import sha256
from mhsa_patch.patching.results import FileStatus, Piece, PieceState, State, combine
from mhsa_patch.patching.target import Target

_PIECE_TO_FILE = {
    PieceState.MARKED: State.APPLIED,
    PieceState.OUTDATED: State.APPLIED,
    PieceState.UNMARKED: State.CONFLICT,
    PieceState.KEPT: State.APPLIED,
    PieceState.MISSING: State.NOT_APPLIED,
    PieceState.UNSUPPORTED: State.NOT_APPLIED,
}


class Refusal(NamedTuple):
    """One reason apply refuses. ``kind``: "layout" (an anchor or insertion the tool cannot make here), "foreign"
    (a class of the layer's name that is not the tutorial's: --replace-foreign) or "unmarked" (a piece pasted by
    hand: --force; ``text`` is then the piece alone, ``FILE:LINE: MHSA (import)``, gathered over the files)."""

    kind: str
    text: str


class Refused(PatchError):
    """Every refusal of one file (or of every file, from the engine), said in one line."""

    def __init__(self, refusals: list[Refusal]):
        self.refusals = list(refusals)
        super().__init__(problems=refusal_lines(self.refusals))


def refusal_lines(refusals: list[Refusal]) -> list[str]:
    """The problems as said: the layout ones first (no flag helps), then foreign classes, then the hand-pasted pieces
    in one sentence with the one flag that replaces them all."""
    lines = [r.text for r in refusals if r.kind == "layout"] + [r.text for r in refusals if r.kind == "foreign"]
    pieces = [r.text for r in refusals if r.kind == "unmarked"]
    if pieces:
        lines.append(
            f"{', '.join(pieces)}: already there without mhsa-patch's marker, probably pasted by hand; "
            f"'mhsa-patch apply --force' replaces {'it' if len(pieces) == 1 else 'them'} with the tool's own"
        )
    return list(dict.fromkeys(lines))


def decode(target: Target, rel: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")  # str keeps \r\n: libcst and the writer preserve the file's line endings
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise PatchError(f"{target.file(rel)}:{line}: not UTF-8 ({e.reason} at byte {e.start})") from None


def unreadable_status(rel: str, err: PatchError, layer_set=None) -> FileStatus:
    """A file the tool cannot read or parse: each piece it would insert is unsupported here, with the reason."""
    from mhsa_patch.patching.edits import EDITS
    from mhsa_patch.patching.layers import layers

    line = re.match(r".*?:(\d+): ", str(err))
    pieces = tuple(
        Piece(rel, edit.key, layer.name, PieceState.UNSUPPORTED, int(line.group(1)) if line else None,
              anchor=str(edit.anchor), why=str(err))
        for layer in (layers() if layer_set is None else layer_set) for edit in EDITS[rel]
        if edit.inserts and edit.mode(layer) == "insert"
    )
    return FileStatus(rel, State.NOT_APPLIED, pieces)


class _Parsed:
    """A file's text parsed with libcst once, and its nodes' positions once asked for: one command reads a target
    file several times (check's lint asks status, then whether --force would refuse; apply --force reads, then
    names lines), and libcst's parse and position pass of a 2,400-line tasks.py cost about 0.7 s of CPU together.
    libcst trees are immutable, so sharing one is safe; positions are keyed by the nodes of this very tree."""

    def __init__(self, text: str):
        import libcst as cst

        self.module = cst.parse_module(text)
        self._positions: Optional[dict] = None

    def positions(self) -> dict:
        if self._positions is None:
            self._positions = _positions(self.module)
        return self._positions


@lru_cache(maxsize=8)  # the three target files, before and after a change, with room to spare
def _parsed(text: str) -> _Parsed:
    return _Parsed(text)


def _positions(module) -> dict:
    from libcst.metadata import MetadataWrapper, PositionProvider

    return MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)


class FileContext:
    """What an edit of one target file may know of the rest of the package: where an imported name comes from,
    read from the package's source (``origins.Resolver``), through the same confined reads as the target files."""

    def __init__(self, target: Target, rel: str, names: frozenset = frozenset()):
        from mhsa_patch.patching.origins import Resolver

        self.target, self.rel = target, rel
        self.names = names  # every layer's name in the set being applied (the tool's and the user's)
        self.resolver = Resolver(target, self._read)

    def _read(self, rel: str) -> Optional[bytes]:
        from mhsa_patch.patching.atomic import read_confined

        try:
            return read_confined(self.target.package, self.target.file(rel), 4 * 2**20)
        except (OSError, ValueError):  # missing, a link, too large: not followed
            return None

    def star_origin(self, module: str, name: str):
        return self.resolver.star(self.rel, module, name)

    def named_origin(self, module: str, name: str):
        return self.resolver.named(self.rel, module, name)


class TargetFile:
    """One target file parsed once, with the layer pieces that the file's edits find in it."""

    def __init__(self, target: Target, rel: str, data: bytes, layer_set=None):
        """``layer_set``: the layers to apply or find, in order (default: the tool's own; with the target's user
        layers after them, ``patching.layers.Layer`` each)."""
        from mhsa_patch.patching.edits import EDITS
        from mhsa_patch.patching.layers import layers

        self.target, self.rel, self.data = target, rel, data
        self.text = decode(target, rel, data)
        self.layers = tuple(layers() if layer_set is None else layer_set)
        self.context = FileContext(target, rel, frozenset(layer.name for layer in self.layers))
        self.edits = tuple(e.bound(self.context) for e in EDITS[rel])
        self._lines: Optional[dict] = None
        self.notes: list[str] = []  # for the user, from applied_text (a --force that keeps a fork's reading)
        self.kept: dict = {}  # from applied_text: layer -> readings.InForce of the hand-written branch kept in force
        self._module = None
        self._star_names: Optional[frozenset] = None
        self._words: Optional[frozenset] = None

    @property
    def star_names(self) -> frozenset:
        """The layers' names that a top-level star import of this file binds from a module outside the target files."""
        if self._star_names is None:
            import ast

            names = set()
            if re.search(r"\bimport\s+\*", self.text):
                try:
                    tree = ast.parse(self.text)
                except SyntaxError:
                    tree = None
                for node in tree.body if tree is not None else ():
                    if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
                        module = "." * node.level + (node.module or "")
                        for layer in self.layers:
                            origin = self.context.star_origin(module, layer.name)
                            if origin is not None and not origin.in_target:
                                names.add(layer.name)
            self._star_names = frozenset(names)
        return self._star_names

    def _relevant(self, edit, layer) -> bool:
        return any(self.mentions(n) for n in layer.class_names) or (not edit.inserts and layer.name in self.star_names)

    def mentions(self, name: str) -> bool:
        """Whether ``name`` occurs in the text as a whole word (a cheap pre-check before looking for its pieces:
        ``SE`` in ``SETTINGS`` is no piece of a layer SE)."""
        if self._words is None:
            self._words = frozenset(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", self.text))
        return name in self._words

    @property
    def module(self):
        """The whole file as a libcst tree, parsed on first use (the fast apply path never needs it)."""
        if self._module is None:
            import libcst as cst

            try:
                self._module = _parsed(self.text).module
            except cst.ParserSyntaxError as e:
                raise PatchError(f"{self.target.file(self.rel)}:{e.raw_line}: does not parse ({e.message})") from None
        return self._module

    def _fast_applied_text(self) -> Optional[str]:
        """apply on a file that holds none of the layers' names: parse only the statements the edits change.

        ``ast`` (the C parser) finds each edit's anchor statement by structure and gives its line span; libcst
        parses that statement alone, the edit runs on it exactly as on the whole module, and the regenerated
        statement replaces its lines. On tasks.py that is parse_model and one import instead of 2,400 lines.
        Returns None where the whole-module path must run instead: a layer's name already in the text, or an anchor
        or insertion that fails (the whole-module path says where, and every other problem with it).
        """
        import ast

        import libcst as cst

        from mhsa_patch.patching.edits import END

        if any(self.mentions(name) for layer in self.layers for name in layer.class_names) or "\r" in self.text.replace("\r\n", ""):
            return None
        if self.star_names:
            return None
        try:
            tree = ast.parse(self.text, filename=str(self.target.file(self.rel)))
        except SyntaxError as e:
            raise PatchError(f"{self.target.file(self.rel)}:{e.lineno}: does not parse ({e.msg})") from None
        newline = "\r\n" if "\r\n" in self.text else "\n"
        lines = self.text.split("\n")
        lines = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
        spans: dict[tuple[int, int], list] = {}
        for edit, layer in self.pairs():
            if not edit.inserts or edit.mode(layer) != "insert":
                continue
            try:
                node = edit.anchor.find_ast(tree)
            except PatchError:
                return None
            if node == END:
                span = (len(lines), len(lines))
            else:
                start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", ()))]) - 1
                span = (start, node.end_lineno)
            spans.setdefault(span, []).append((edit, layer))
        config = cst.PartialParserConfig(default_newline=newline)
        for (start, end), pairs in sorted(spans.items(), reverse=True):
            piece = cst.parse_module("".join(lines[start:end]), config=config)
            if end == len(lines):  # the file's last statement: it ends (or not) with a newline as the file does
                piece = piece.with_changes(has_trailing_newline=self.text.endswith("\n"), default_newline=newline)
            for edit, layer in pairs:
                try:
                    edit.check_anchor(piece)
                    piece = edit.add(piece, layer)
                except PatchError:
                    return None
            lines[start:end] = [piece.code]
        return "".join(lines)

    def pairs(self):
        for layer in self.layers:
            for edit in self.edits:
                if edit.mode(layer) != "skip":
                    yield edit, layer

    def check_anchors(self) -> None:
        """Raise, naming every anchor this file lacks, each with its line where it has one."""
        problems = []
        for edit in self.edits:
            try:
                edit.check_anchor(self.module)
            except PatchError as e:
                problems.append(self.located(e))
        if problems:
            raise PatchError(problems=list(dict.fromkeys(problems)))

    def located(self, e: PatchError) -> str:
        """An edit's refusal as one line that names ``FILE:LINE`` (the line of the node it refused at, if any)."""
        where = self.where(e.node) if e.node is not None else str(self.target.file(self.rel))
        return f"{where}: {e} in {self.rel} (ultralytics {self.target.version}): unsupported layout"

    def scan(self) -> tuple[list, list]:
        """``(found, problems)`` in the file as read: (edit, layer, Found) for every piece present, and (edit, layer,
        PatchError) for every anchor missing or insertion refused here (tried in memory: what apply would meet)."""
        module = self.module
        found, problems = [], []
        for edit, layer in self.pairs():
            err = None
            try:
                edit.check_anchor(module)
            except PatchError as e:
                err = e
            mine = []
            if self._relevant(edit, layer):
                try:
                    mine = edit.find(module, layer)
                except PatchError as e:
                    err = err or e
            found += [(edit, layer, f) for f in mine]
            if (
                err is None
                and edit.inserts
                and edit.mode(layer) == "insert"
                and not edit.complete(module, layer, [f for f in mine if f.marked])
            ):
                try:
                    edit.add(module, layer)
                except PatchError as e:
                    err = e
            if err is not None:
                problems.append((edit, layer, err))
        return found, problems

    def find(self, module=None, only=None):
        """(edit, layer, Found) for every piece present in ``module`` (default: the file as read); ``only``: of the
        layers of these names alone."""
        if module is None:
            module = self.module
            pairs = [(e, lay) for e, lay in self.pairs() if self._relevant(e, lay)]  # absent: no walks
        else:
            pairs = list(self.pairs())
        if only is not None:
            pairs = [(e, lay) for e, lay in pairs if lay.name in only]
        out = []
        for edit, layer in pairs:
            try:
                out.extend((edit, layer, f) for f in edit.find(module, layer))
            except PatchError as e:
                raise PatchError(self.located(e)) from None
        return out

    def where(self, node) -> str:
        """``path:line`` of a node for messages (``path`` alone when the node is not in the file as read)."""
        line = self.line_of(node)
        return f"{self.target.file(self.rel)}:{line}" if line else str(self.target.file(self.rel))

    def line_of(self, node) -> Optional[int]:
        """1-based line of a node; the position pass is costly, so it runs only when a message needs it."""
        if self._lines is None:
            self._lines = _parsed(self.text).positions() if self.module is _parsed(self.text).module else _positions(
                self.module)
        pos = self._lines.get(node)
        return pos.start.line if pos is not None else None

    def status(self, entry, kept: frozenset = frozenset(), lines: bool = True) -> FileStatus:
        """Every piece with its state; what the tool cannot find or insert here is ``unsupported``, with its anchor,
        line and reason (apply would refuse). Never raises for a layout it does not understand. ``entry``: the
        journal's ``FileEntry`` or None; ``kept``: layers whose hand-written branch the journal records as kept in
        force (their pieces: KEPT); ``lines``: False leaves found pieces without their line (the position pass over
        a 2,400-line tasks.py costs about a second; the lint needs only the states)."""
        pieces: list[Piece] = []
        found, problems = self.scan()
        errors = {(id(e), lay.name): err for e, lay, err in problems}
        # where the file holds something apply would not simply patch, every piece it found gets its line (the
        # position pass runs then anyway); on a plain stock or patched file, none needs one
        all_lines = lines and (bool(problems) or any(not f.marked for _, _, f in found))
        for edit, layer in self.pairs():
            mine = [f for e, lay, f in found if e is edit and lay is layer]
            err = errors.get((id(edit), layer.name))
            if err is not None:
                line = self.line_of(err.node) if err.node is not None else None
                pieces.append(Piece(self.rel, edit.key, layer.name, PieceState.UNSUPPORTED, line,
                                    anchor=str(edit.anchor), why=self.located(err)))
            elif len(mine) < edit.wanted(layer):
                pieces.append(Piece(self.rel, edit.key, layer.name, PieceState.MISSING))
            for f in mine:
                state = PieceState.UNMARKED if not f.marked else (PieceState.MARKED if f.current else PieceState.OUTDATED)
                if state is PieceState.UNMARKED and self._is_kept(edit, layer, f, kept):
                    state = PieceState.KEPT
                wanted = lines and state in (PieceState.UNMARKED, PieceState.KEPT)
                line = self.line_of(f.node) if wanted or all_lines else None
                origin = f"{f.origin.rel}:{f.origin.line}" if f.origin is not None and not f.origin.in_target else None
                name = getattr(getattr(f.node, "name", None), "value", None) if edit.key == "class" else None
                pieces.append(Piece(self.rel, edit.key, layer.name, state, line, origin, name))
        state = combine(_PIECE_TO_FILE[p.state] for p in pieces)
        modified = None
        if entry is not None and state is not State.NOT_APPLIED:
            modified = sha256(self.data) != entry.patched_sha256
        return FileStatus(self.rel, state, tuple(pieces), modified)

    def without_pieces(self, *, unmarked: bool) -> str:
        """The text with the tool's pieces (and, with ``unmarked``, hand-pasted ones) removed."""
        return self._stripped(unmarked=unmarked).code

    def without_layers(self, gone) -> str:
        """The text with the marked pieces of the layers ``gone`` removed, and nothing else (``revert --layer``):
        the other layers' pieces stay, a marker shared with one of them included."""
        return self._stripped(unmarked=False, only=frozenset(layer.name for layer in gone)).code

    def _stripped(self, *, unmarked: bool, keep=frozenset(), only=None):
        module = self.module
        while True:
            left = [
                (e, lay, f)
                for e, lay, f in self.find(module, only)
                if (f.marked or unmarked) and f.removable and not self._is_kept(e, lay, f, keep)
            ]
            if not left:
                return module
            edit, layer, f = left[-1]  # the last inserted first: each removal is the exact inverse of an add
            try:
                module = edit.remove(module, layer, f)
            except PatchError as e:
                raise PatchError(f"{self.where(e.node if e.node is not None else f.node)}: {e}") from None

    def foreign(self, layer, f) -> Optional[str]:
        """Why the hand-written class behind piece ``f`` is not the one the tool replaces (None: it is, or no class).

        Checked for the layer's own class (not its helpers): in this file (a pasted ``class MHSA``), or where a
        hand-written import or star import gets it from (a fork's module file).
        """

        from mhsa_patch.patching.origins import incompatible, reference_class

        reference = reference_class(layer.class_source, layer.name)
        if reference is None:
            return None
        if f.edit == "class":
            if f.node.name.value != layer.name:
                return None
            cls = reference_class(self.module.code_for_node(f.node), layer.name)
            where = self.where(f.node)
        elif f.origin is not None and not f.origin.in_target:
            cls, where = f.origin.node, f.origin.where(self.target.package)
        else:
            return None
        if cls is None:
            return f"{where}: {layer.name} is not a class mhsa-patch can check"
        why = incompatible(cls, reference)
        if why and layer.kind != "builtin":  # said of the user's own class, not of the tutorial's
            why = why.replace("not the tutorial's parameters", "not those of yours").replace(
                "differ from the tutorial's", "differ from yours")
        return f"{where}: class {layer.name} is not {layer.origin}: {why}" if why else None

    def foreign_classes(self) -> list[str]:
        """Why ``apply --force`` refuses here for a class named like a layer that is not the tutorial's (what only
        ``--replace-foreign`` takes over), from the pieces found, without computing the patch."""
        if not any(n in self.text for layer in self.layers for n in layer.class_names) and not self.star_names:
            return []
        return [why for e, lay, f in self.find() if not f.marked and (why := self.foreign(lay, f))]

    @property
    def reads_rows(self) -> bool:
        """Whether this file holds parse_model (its edits include the layers' branches)."""
        return any(e.key == "branch" for e in self.edits)

    def readings(self):
        """The reading parse_model applies to each layer's rows (``readings.InForce``), in this file as read."""
        from mhsa_patch.patching.readings import all_in_force

        extra = tuple((lay.name, lay.reading) for lay in self.layers if lay.kind != "builtin")
        return all_in_force(self.text, extra) if self.reads_rows else ()

    def _kept_readings(self) -> dict:
        """The layers whose hand-written branch reads their rows otherwise than the tool's rule: apply --force keeps
        that branch, so that the fork's model YAMLs build the models they built. Refuses a reading that cannot build
        the tool's class, naming the branch."""
        from mhsa_patch.patching.readings import cannot_build

        kept = {}
        for found in self.readings():
            if not found.differs:
                continue
            why = cannot_build(found) if found.layer in self._builtin_names else self._cannot_build_user(found)
            if why:
                raise PatchError(
                    f"{self.target.file(self.rel)}:{found.line}: the hand-written parse_model branch reads "
                    f"{found.layer}'s rows as '{found.name}' and cannot build the tool's {found.layer}: {why}; make "
                    f"the branch read the rows as '{self._tool_reading(found.layer)}' (or remove it) "
                    f"and run 'mhsa-patch apply --force' again"
                )
            kept[found.layer] = found
        return kept

    def _tool_reading(self, layer: str) -> str:
        from mhsa_patch.patching.readings import spec_of

        user = next((lay for lay in self.layers if lay.name == layer and lay.kind != "builtin"), None)
        return user.reading if user is not None else spec_of(layer).reading

    @property
    def _builtin_names(self) -> frozenset:
        return frozenset(lay.name for lay in self.layers if lay.kind == "builtin")

    def _cannot_build_user(self, found) -> Optional[str]:
        """:func:`readings.cannot_build` for a user layer: its class's positional parameters, read from its text."""
        from mhsa_patch.patching.userlayers import init_args

        layer = next(lay for lay in self.layers if lay.name == found.layer)
        args = init_args(layer.class_source, layer.name)
        if found.rule is None or args is None or args.vararg is not None:
            return None
        total = len(args.posonlyargs) + len(args.args) - 1
        if len(found.rule.lead) > total:
            return (
                f"it passes {', '.join(found.rule.lead)} before the row's args, and {layer.name}() takes {total} "
                f"positional argument{'s' if total != 1 else ''}"
            )
        return None

    def _kept_notes(self, kept: dict, found_pieces) -> list[str]:
        """One warning per kept reading, at the line ``status`` gives the hand-written branch piece (the layer's name
        in a set such as ``base_modules``), naming the line of the branch that decides when it is another."""
        from mhsa_patch.patching.readings import spec_of

        at = {lay.name: self.line_of(f.node) for e, lay, f in found_pieces
              if e.key == "branch" and not f.marked and lay.name in kept}  # the position pass only where one is said
        notes = []
        for found in kept.values():
            what = "a body mhsa-patch does not recognise" if found.rule is None else found.rule.summary
            line = at.get(found.layer) or found.line
            branch = f", the branch at line {found.line}" if found.line and found.line != line else ""
            # the tool's class in place of the fork's: the same models, or what differs (BoT3's unused fc1)
            differs = spec_of(found.layer).replaces_tutorial
            models = f"the same layers: {differs}" if differs else "the same models"
            if found.rule is None:  # the lint cannot show a call it does not know: only a build shows it
                shows = (f"mhsa-patch cannot tell which call it makes; 'mhsa-patch check MODEL.yaml' builds the model "
                         f"and prints each layer's arguments")
            else:
                shows = f"'mhsa-patch check --lint-only MODEL.yaml' shows the call each {found.layer} row makes"
            notes.append(
                f"{self.target.file(self.rel)}:{line}: kept the fork's reading of {found.layer}'s rows "
                f"('{found.name}': {what}{branch}) instead of the tool's ('{self._tool_reading(found.layer)}'), so that its "
                f"model YAMLs build {models}; {shows}"
            )
        return notes

    @staticmethod
    def _is_kept(edit, layer, f, keep) -> bool:
        return edit.key == "branch" and not f.marked and layer.name in keep

    def refusals(self, found, problems, *, force: bool, replace_foreign: bool, keep=frozenset()) -> list[Refusal]:
        """Every reason apply refuses this file, all at once: layouts it cannot patch, foreign classes, hand-pasted
        pieces (the last two only without the flag that takes them over). A fork's branch kept in force (``keep``)
        is none of them."""
        out = [Refusal("layout", self.located(err)) for _, _, err in problems]
        unmarked = [(e, lay, f) for e, lay, f in found if not f.marked and not self._is_kept(e, lay, f, keep)]
        if unmarked and not replace_foreign:
            for _, layer, f in unmarked:
                why = self.foreign(layer, f)
                if why:
                    out.append(Refusal("foreign", (
                        f"{why}; 'mhsa-patch apply --replace-foreign' replaces it with the tool's {layer.name} "
                        "(models built with it will not load)"
                    )))
        if unmarked and not force:
            out += [Refusal("unmarked", f"{self.where(f.node)}: {layer.name} ({e.key})") for e, layer, f in unmarked]
        return out

    def applied_text(self, *, force: bool, replace_foreign: bool = False, kept_before: frozenset = frozenset()) -> str:
        """The patched text. ``kept_before``: layers whose hand-written branch the journal records as kept."""
        self.kept = {}
        fast = self._fast_applied_text()
        if fast is not None:
            return fast
        found, problems = self.scan()
        cannot: list[Refusal] = []
        try:
            self.kept = self._kept_readings() if self.reads_rows else {}
        except PatchError as e:  # a fork's reading that cannot build the tool's class: said with the others
            cannot.append(Refusal("layout", str(e)))
        keep = set(self.kept) if force else set(self.kept) & set(kept_before)
        refusals = cannot + self.refusals(found, problems, force=force, replace_foreign=replace_foreign, keep=keep)
        if refusals:
            raise Refused(refusals)
        unmarked = [(e, lay, f) for e, lay, f in found if not f.marked and not self._is_kept(e, lay, f, keep)]
        self.notes = self._kept_notes(self.kept, found) if force else []
        self.kept = {name: self.kept[name] for name in keep}
        module = self.module
        if unmarked:
            module = self._stripped(unmarked=True, keep=keep)
            found = self.find(module)
        for edit, layer in self.pairs():
            if edit.key == "branch" and layer.name in keep:
                continue  # the fork's branch stays in force
            # each edit touches only its own statement, so the other pieces found above keep their identity
            mine = [f for e, lay, f in found if e is edit and lay is layer and f.marked]
            if edit.complete(module, layer, mine):
                continue
            try:
                for f in mine:  # outdated: an older version of the tool inserted something else
                    module = edit.remove(module, layer, f)
                if edit.mode(layer) == "insert":
                    module = edit.add(module, layer)
            except PatchError as e:
                raise PatchError(self.located(e)) from None
        return module.code

"""`meshc lsp`: the language server, on pygls over stdio.

A thin protocol shell over compiler/tooling/lsp/analysis.py, which does the work in code points: this
module turns LSP positions (UTF-16 columns unless the client negotiated another encoding) into
offsets and back with pygls's position codec, and analysis results into lsprotocol types.

- Diagnostics: every open document is checked in memory together with the files it imports
  (from disk and from the standard library), on open at once and after a pause in typing
  (changes are coalesced: an analysis whose text is outdated by the time it ends is dropped).
  They are published per file URI, so an error in an imported file shows in that file; a file
  whose diagnostics went away is published empty.
- Hover, go-to-definition, completion and formatting work on the latest text of the document.

Only `meshc lsp` imports this module (pygls and lsprotocol cost ~0.3 s to import).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from compiler import __version__
from compiler.core.source import SourceFile
from compiler.syntax.parse import ItemCache
from compiler.tooling.formats import help_uri
from compiler.tooling.lsp import analysis as la

DEBOUNCE_S = 0.15  # wait this long after a change before checking; changes in between coalesce


class MeshLanguageServer(LanguageServer):
    """The server's state: the latest analysis of each open document, and what was published."""

    def __init__(self) -> None:
        super().__init__("meshc", __version__)
        self.analyses: dict[str, la.Analysis] = {}      # by document URI
        # One parse cache per open document: a keystroke re-parses only the top-level items it
        # touched. A cache shifts the spans of the analyses it made before, so only the latest
        # analysis of each document is kept (and every analysis made is kept: see `_keep`).
        self.caches: dict[str, ItemCache] = {}
        self.generation: dict[str, int] = {}            # bumped on every change of a document
        self.published: dict[str, list[types.Diagnostic]] = {}  # by file URI, as last sent
        # One worker: analyses never run concurrently (the parser's caches are shared), and the
        # event loop stays free to read the next change meanwhile.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meshc-analysis")

    # ---- analysis --------------------------------------------------------------------------
    async def analyse(self, uri: str, delay: float = 0.0) -> None:
        """Check a document after `delay`, unless it changes again meanwhile; then publish."""
        generation = self.generation[uri] = self.generation.get(uri, 0) + 1
        if delay:
            await asyncio.sleep(delay)
        if self.generation.get(uri) != generation or uri not in self.workspace.text_documents:
            return  # a later change (or a close) takes over
        text = self.workspace.get_text_document(uri).source
        await self._analyse_now(uri, text)
        if self.generation.get(uri) != generation or uri not in self.workspace.text_documents:
            return
        self.publish(force=uri)

    async def fresh(self, uri: str) -> la.Analysis:
        """The analysis of the document's current text (re-checked now if a change is pending)."""
        text = self.workspace.get_text_document(uri).source
        analysis = self.analyses.get(uri)
        if analysis is None or analysis.text != text:
            analysis = await self._analyse_now(uri, text)
        return analysis

    async def _analyse_now(self, uri: str, text: str) -> la.Analysis:
        """Analyse `text` as the document `uri` with its parse cache, and keep the result as the
        document's analysis even when a later change makes it outdated: the analysis it replaces
        may have had its spans shifted by this one (an outdated one is only re-checked: `fresh`
        compares its text)."""
        cache = self.caches.setdefault(uri, ItemCache())
        loop = asyncio.get_running_loop()
        analysis = await loop.run_in_executor(self.executor, la.analyse_document, uri, text, cache)
        if uri in self.workspace.text_documents:
            self.analyses[uri] = analysis
        else:
            self.caches.pop(uri, None)
        return analysis

    # ---- diagnostics -----------------------------------------------------------------------
    def publish(self, force: str | None = None) -> None:
        """Send the diagnostics of every file of every open document's program, where they changed.

        A file checked as part of several programs gets the union. A file that is open in the
        editor gets diagnostics only from analyses that saw its current text (another document's
        analysis read it from disk, and its positions may be out of date)."""
        codec = self.workspace.position_codec
        open_docs = self.workspace.text_documents
        by_uri: dict[str, dict[tuple, types.Diagnostic]] = {}
        for root, analysis in self.analyses.items():
            by_uri.setdefault(root, {})
            positions: dict[str, _Positions] = {}
            for d in analysis.diagnostics:
                display = d.file
                if display is None or display not in analysis.program.sources:
                    continue
                uri = analysis.uri_of(display)
                source = analysis.program.sources[display]
                if uri != root and uri in open_docs and open_docs[uri].source != source.text:
                    continue
                diag = _diagnostic(d, analysis, codec, positions)
                key = (diag.code, diag.message, diag.range.start.line, diag.range.start.character,
                       diag.range.end.line, diag.range.end.character)
                by_uri.setdefault(uri, {})[key] = diag
        for uri in list(self.published):
            if uri not in by_uri:
                by_uri[uri] = {}
        for uri, found in by_uri.items():
            diags = sorted(found.values(), key=lambda x: (x.range.start.line, x.range.start.character, x.code))
            if uri != force and self.published.get(uri) == diags:
                continue
            self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=diags))
            if diags:
                self.published[uri] = diags
            else:
                self.published.pop(uri, None)


class _Positions:
    """Offsets of one text to LSP positions in the client's encoding, and back."""

    def __init__(self, source: SourceFile, codec) -> None:
        self.source, self.codec = source, codec

    def position(self, offset: int) -> types.Position:
        line, col = self.source.line_col(offset)
        text = self.source.line_text(line)
        units = self.codec.position_to_client_units([text], types.Position(line=0, character=col - 1))
        return types.Position(line=line - 1, character=units.character)

    def range(self, start: int, end: int) -> types.Range:
        return types.Range(start=self.position(start), end=self.position(max(start, end)))

    def offset(self, position: types.Position) -> int:
        starts = self.source.line_starts()
        if position.line >= len(starts):
            return len(self.source.text)
        text = self.source.line_text(position.line + 1)
        server = self.codec.position_from_client_units([text], types.Position(line=0, character=position.character))
        return starts[position.line] + min(server.character, len(text))


def _positions(source: SourceFile, codec, cache: dict[str, _Positions]) -> _Positions:
    found = cache.get(source.path)
    if found is None:
        found = cache[source.path] = _Positions(source, codec)
    return found


def _diagnostic(d, analysis: la.Analysis, codec, cache: dict[str, _Positions]) -> types.Diagnostic:
    span = d.span
    if span is not None:
        rng = _positions(span.source, codec, cache).range(span.start, span.end)
    else:
        rng = types.Range(start=types.Position(line=0, character=0), end=types.Position(line=0, character=0))
    related = [types.DiagnosticRelatedInformation(
        location=types.Location(uri=analysis.uri_of(label.span.path),
                                range=_positions(label.span.source, codec, cache).range(label.span.start,
                                                                                        label.span.end)),
        message=label.message) for label in d.labels if label.span is not None]
    return types.Diagnostic(
        range=rng,
        message=d.message if not d.hint else f"{d.message}\nhint: {d.hint}",
        severity=types.DiagnosticSeverity.Error if d.severity == "error" else types.DiagnosticSeverity.Warning,
        code=d.code,
        code_description=types.CodeDescription(href=help_uri(d.code)),
        source="meshc",
        related_information=related or None,
        tags=[types.DiagnosticTag.Unnecessary] if d.code == "W0401" else None,  # an unreachable route
    )


server = MeshLanguageServer()


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
async def did_open(ls: MeshLanguageServer, params: types.DidOpenTextDocumentParams) -> None:
    await ls.analyse(params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
async def did_change(ls: MeshLanguageServer, params: types.DidChangeTextDocumentParams) -> None:
    await ls.analyse(params.text_document.uri, DEBOUNCE_S)


@server.feature(types.TEXT_DOCUMENT_DID_SAVE)
async def did_save(ls: MeshLanguageServer, params: types.DidSaveTextDocumentParams) -> None:
    # Other open documents may import the saved file: check them all again.
    for uri in list(ls.workspace.text_documents):
        await ls.analyse(uri)


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: MeshLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.generation[uri] = ls.generation.get(uri, 0) + 1
    ls.analyses.pop(uri, None)
    ls.caches.pop(uri, None)
    ls.publish()


@server.feature(types.TEXT_DOCUMENT_HOVER)
async def hover(ls: MeshLanguageServer, params: types.HoverParams) -> types.Hover | None:
    analysis = await ls.fresh(params.text_document.uri)
    offset = _Positions(analysis.source, ls.workspace.position_codec).offset(params.position)
    text = la.hover(analysis, offset)
    if text is None:
        return None
    return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text))


@server.feature(types.TEXT_DOCUMENT_DEFINITION)
async def definition(ls: MeshLanguageServer, params: types.DefinitionParams) -> types.Location | None:
    analysis = await ls.fresh(params.text_document.uri)
    codec = ls.workspace.position_codec
    found = la.definition(analysis, _Positions(analysis.source, codec).offset(params.position))
    if found is None:
        return None
    path, start, end, source = found
    if source is None:  # an imported file: its beginning
        rng = types.Range(start=types.Position(line=0, character=0), end=types.Position(line=0, character=0))
        uri = la.path_to_uri(path)
    else:
        rng = _Positions(source, codec).range(start, end)
        uri = analysis.uri if source is analysis.source else la.path_to_uri(path)
    return types.Location(uri=uri, range=rng)


_KINDS = {"keyword": types.CompletionItemKind.Keyword, "service": types.CompletionItemKind.Class,
          "subset": types.CompletionItemKind.Field, "policy": types.CompletionItemKind.Reference,
          "module": types.CompletionItemKind.Module, "value": types.CompletionItemKind.EnumMember}


@server.feature(types.TEXT_DOCUMENT_COMPLETION,
                types.CompletionOptions(trigger_characters=[" ", "."]))
async def completion(ls: MeshLanguageServer, params: types.CompletionParams) -> types.CompletionList:
    uri = params.text_document.uri
    text = ls.workspace.get_text_document(uri).source
    analysis = ls.analyses.get(uri) or await ls.fresh(uri)  # names change rarely: an older analysis will do
    positions = _Positions(SourceFile(analysis.path, text), ls.workspace.position_codec)
    offset = positions.offset(params.position)
    start, items = la.complete(analysis, text, offset)
    context = params.context
    if (context is not None and context.trigger_kind == types.CompletionTriggerKind.TriggerCharacter
            and items and all(i.kind == "keyword" for i in items) and len(items) > 2):
        items = []  # a space outside a place that takes a name: do not pop the keyword list up
    edit_range = positions.range(start, offset)
    out = []
    for item in items:
        doc = item.detail if item.kind == "keyword" else None
        out.append(types.CompletionItem(
            label=item.label, kind=_KINDS[item.kind],
            detail=item.kind if item.kind == "keyword" else item.detail,
            documentation=types.MarkupContent(kind=types.MarkupKind.Markdown, value=doc) if doc else None,
            text_edit=types.TextEdit(range=edit_range, new_text=item.label)))
    return types.CompletionList(is_incomplete=False, items=out)


@server.feature(types.TEXT_DOCUMENT_FORMATTING)
def formatting(ls: MeshLanguageServer, params: types.DocumentFormattingParams) -> list[types.TextEdit]:
    uri = params.text_document.uri
    text = ls.workspace.get_text_document(uri).source
    formatted = la.format_document(text, la.document_path(uri))
    if formatted is None:
        return []
    positions = _Positions(SourceFile(uri, text), ls.workspace.position_codec)
    return [types.TextEdit(range=positions.range(0, len(text)), new_text=formatted)]


def main() -> int:
    """Serve over stdin/stdout until the client says `exit`; 0 after a proper `shutdown`."""
    gc.enable()  # the one-shot commands run without the cyclic collector; a long-lived server needs it
    # pygls closes its output on `exit`: give it a duplicate of stdout, and send stray prints
    # (which would corrupt the JSON-RPC stream) to stderr meanwhile.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    real_stdout, sys.stdout = sys.stdout, sys.stderr
    try:
        server.start_io(sys.stdin.buffer, out)
    finally:
        sys.stdout = real_stdout
        server.executor.shutdown(wait=False, cancel_futures=True)
    return 0 if getattr(server.protocol, "_shutdown", False) else 1

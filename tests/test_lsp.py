"""`meshc lsp`, driven by a real client: `python -m compiler lsp` as a subprocess, spoken to in
JSON-RPC over its standard input and output (Content-Length framing), as an editor would.

The server runs in a temporary directory holding a small program of two files; the documents are
opened from there, so imports resolve from disk and from the standard library as in an editor.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("pygls")
pytest.importorskip("lsprotocol")

from compiler.tooling.lsp import analysis as lsp_analysis

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0

SHOP = textwrap.dedent("""\
    import "std/resilience"

    service payments {
      port 9000
      subset v1 { endpoints ["10.0.1.1:9000"] }
      subset v2 { endpoints ["10.0.2.1:9000"] }
      retry_budget std.standard
    }
    """)

# Line 5 has a character outside the BMP before the error: 2 UTF-16 units, 1 code point.
BROKEN = textwrap.dedent("""\
    import "shop.mesh"
    import "std/resilience"

    routes payments {
      route reads {
        match { header "x-e" exact "😀" method GET } to payments.v3
        retry std.idempotent
      }
    }
    """)
FIXED = BROKEN.replace("payments.v3", "payments.v1")


class Client:
    """A minimal LSP client: requests wait for their response; notifications are kept in order."""

    def __init__(self, cwd: Path):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, "-m", "compiler", "lsp"], cwd=cwd, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.messages: queue.Queue = queue.Queue()
        self.notifications: list[dict] = []
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        out = self.proc.stdout
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    self.messages.put(None)
                    return
                line = line.strip()
                if not line:
                    break
                name, _, value = line.decode("ascii").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            self.messages.put(json.loads(out.read(length)))

    def _send(self, message: dict) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode("utf-8")
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def _next(self, deadline: float) -> dict:
        try:
            message = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError("the server did not answer in time") from None
        assert message is not None, "the server closed its output: " + self.proc.stderr.read().decode()[-2000:]
        if "method" in message and "id" in message:  # a request from the server: answer it
            self._send({"id": message["id"], "result": None})
        elif "method" in message:
            self.notifications.append(message)
        return message

    def request(self, method: str, params) -> object:
        self.next_id += 1
        ident = self.next_id
        self._send({"id": ident, "method": method, "params": params})
        deadline = time.monotonic() + TIMEOUT
        while True:
            message = self._next(deadline)
            if message.get("id") == ident and "method" not in message:
                assert "error" not in message, message["error"]
                return message.get("result")

    def notify(self, method: str, params) -> None:
        self._send({"method": method, "params": params})

    def diagnostics(self, uri: str, predicate=lambda diags: True) -> list[dict]:
        """The next published diagnostics of `uri` that satisfy `predicate` (earlier ones are consumed)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            for i, note in enumerate(self.notifications):
                if note["method"] == "textDocument/publishDiagnostics" and note["params"]["uri"] == uri:
                    del self.notifications[: i + 1]
                    if predicate(note["params"]["diagnostics"]):
                        return note["params"]["diagnostics"]
                    break
            else:
                self._next(deadline)

    def open(self, uri: str, text: str) -> None:
        self.notify("textDocument/didOpen",
                    {"textDocument": {"uri": uri, "languageId": "mesh", "version": 1, "text": text}})

    def change(self, uri: str, text: str, version: int) -> None:
        self.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                               "contentChanges": [{"text": text}]})


def position(text: str, needle: str, delta: int = 0) -> dict:
    """The LSP position (UTF-16 columns) of `needle` in `text`, plus `delta` code points."""
    offset = text.index(needle) + delta
    line = text.count("\n", 0, offset)
    column = text[text.rfind("\n", 0, offset) + 1:offset]
    return {"line": line, "character": len(column.encode("utf-16-le")) // 2}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lsp")
    (folder / "shop.mesh").write_text(SHOP, encoding="utf-8")
    (folder / "main.mesh").write_text(FIXED, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def client(workspace):
    c = Client(workspace)
    c.capabilities = c.request("initialize", {"processId": os.getpid(), "rootUri": workspace.as_uri(),
                                              "capabilities": {}})["capabilities"]
    c.notify("initialized", {})
    yield c
    if c.proc.poll() is None:
        c.proc.kill()
    c.proc.wait(timeout=5)


def test_initialize_announces_the_features(client):
    caps = client.capabilities
    assert caps["hoverProvider"] and caps["definitionProvider"] and caps["documentFormattingProvider"]
    assert " " in caps["completionProvider"]["triggerCharacters"]
    assert caps["textDocumentSync"]["openClose"]
    assert caps.get("positionEncoding", "utf-16") == "utf-16"


def test_diagnostics_on_open_and_cleared_after_a_fix(client, workspace):
    uri = (workspace / "main.mesh").as_uri()
    client.open(uri, BROKEN)
    (diag,) = client.diagnostics(uri)
    assert diag["code"] == "E0203"
    assert diag["severity"] == 1 and diag["source"] == "meshc"
    assert diag["message"].startswith("service `payments` has no subset `v3`")
    assert diag["codeDescription"]["href"].endswith("docs/codes.md#e0203")
    start = position(BROKEN, "payments.v3")
    assert start["character"] == len('    match { header "x-e" exact "') + 2 + len('" method GET } to ')
    assert diag["range"] == {"start": start, "end": position(BROKEN, "payments.v3", len("payments.v3"))}
    client.change(uri, FIXED, 2)
    assert client.diagnostics(uri) == []


def test_changes_in_quick_succession_are_checked_once(client, workspace):
    uri = (workspace / "main.mesh").as_uri()
    for i in range(5):  # faster than the debounce: only the last text is checked and published
        client.change(uri, BROKEN.replace("payments.v3", f"payments.w{i}"), 10 + i)
    (diag,) = client.diagnostics(uri)
    assert diag["message"].startswith("service `payments` has no subset `w4`")
    client.change(uri, FIXED, 20)
    assert client.diagnostics(uri) == []


def test_diagnostics_of_an_imported_file_go_to_its_uri(client, workspace):
    uri = (workspace / "dup.mesh").as_uri()
    shop = (workspace / "shop.mesh").as_uri()
    text = 'import "shop.mesh"\n\nservice payments { port 1  endpoints ["10.0.0.1:1"] }\n'
    client.open(uri, text)
    (diag,) = client.diagnostics(shop, lambda d: d != [])
    assert diag["code"] == "E0202"
    assert diag["range"]["start"] == position(SHOP, "payments")
    (related,) = diag["relatedInformation"]
    assert related["location"]["uri"] == uri and related["message"] == "first declared here"
    assert related["location"]["range"]["start"] == position(text, "payments")
    client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    assert client.diagnostics(shop) == []


def test_imports_of_a_fifo_and_of_an_endless_device_are_refused_at_the_import(client, workspace):
    """The server reads imports from disk with the rules of `meshc check`: a FIFO without a writer
    would block the analysis forever, /dev/zero would fill memory; both are E0107 at the import."""
    os.mkfifo(workspace / "pipe.mesh")
    uri = (workspace / "devices.mesh").as_uri()
    text = 'import "pipe.mesh"\nimport "/dev/zero"\n\nservice devices { port 1  endpoints ["10.0.0.1:1"] }\n'
    client.open(uri, text)
    diags = client.diagnostics(uri, lambda d: d != [])
    assert [(d["code"], d["message"].split("\n")[0], d["range"]["start"]) for d in diags] == [
        ("E0107", "imported file `pipe.mesh` is not a regular file: it is a FIFO", position(text, '"pipe')),
        ("E0107", "imported file `/dev/zero` is not a regular file: it is a character device",
         position(text, '"/dev')),
    ]
    client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    assert client.diagnostics(uri) == []
    os.unlink(workspace / "pipe.mesh")


def test_hover_on_a_keyword_and_on_a_standard_policy(client, workspace):
    uri = (workspace / "main.mesh").as_uri()
    doc = {"textDocument": {"uri": uri}}
    keyword = client.request("textDocument/hover", {**doc, "position": position(FIXED, "retry std", 2)})
    assert keyword["contents"]["kind"] == "markdown"
    assert "**retry** (keyword)" in keyword["contents"]["value"]
    policy = client.request("textDocument/hover", {**doc, "position": position(FIXED, "std.idempotent", 5)})
    text = policy["contents"]["value"]
    assert "retry policy `std.idempotent`" in text
    assert "For read-only routes" in text                      # its leading comment
    assert "policy retry idempotent {" in text and "attempts 2" in text  # its declaration
    subset = client.request("textDocument/hover", {**doc, "position": position(FIXED, "payments.v1", 10)})
    assert 'subset v1 { endpoints ["10.0.1.1:9000"] }' in subset["contents"]["value"]
    assert client.request("textDocument/hover", {**doc, "position": position(FIXED, '"x-e"', 2)}) is None


def test_definition_of_a_subset_and_of_a_standard_policy(client, workspace):
    uri = (workspace / "main.mesh").as_uri()
    doc = {"textDocument": {"uri": uri}}
    subset = client.request("textDocument/definition", {**doc, "position": position(FIXED, "payments.v1", 10)})
    assert subset["uri"] == (workspace / "shop.mesh").as_uri()
    assert subset["range"]["start"] == position(SHOP, "v1 {")
    service = client.request("textDocument/definition", {**doc, "position": position(FIXED, "payments.v1", 2)})
    assert service["range"]["start"] == position(SHOP, "payments")
    std = client.request("textDocument/definition", {**doc, "position": position(FIXED, "std.idempotent", 6)})
    stdlib = Path(lsp_analysis.stdlib_dir()) / "resilience.mesh"
    assert std["uri"] == stdlib.as_uri()
    assert std["range"]["start"] == position(stdlib.read_text(encoding="utf-8"), "idempotent {")


def test_completion_after_to_offers_subsets(client, workspace):
    uri = (workspace / "complete.mesh").as_uri()
    text = 'import "shop.mesh"\nroutes payments {\n  route r {\n    to \n'
    client.open(uri, text)
    result = client.request("textDocument/completion", {
        "textDocument": {"uri": uri}, "position": {"line": 3, "character": 7},
        "context": {"triggerKind": 2, "triggerCharacter": " "}})
    labels = [item["label"] for item in result["items"]]
    assert "payments.v1" in labels and "payments.v2" in labels
    assert "route" not in labels  # not the keyword list
    retry = client.request("textDocument/completion", {
        "textDocument": {"uri": uri}, "position": {"line": 3, "character": 4}})
    assert "retry" in [item["label"] for item in retry["items"]]


def test_formatting_returns_one_edit_when_the_text_changes(client, workspace):
    fmt = pytest.importorskip("compiler.syntax.fmt")
    if not hasattr(fmt, "format_text"):
        pytest.skip("compiler.syntax.fmt has no format_text yet")
    uri = (workspace / "ugly.mesh").as_uri()
    text = "service   a {port 80\nendpoints [\"10.0.0.1:80\"]}\n"
    client.open(uri, text)
    options = {"tabSize": 2, "insertSpaces": True}
    (edit,) = client.request("textDocument/formatting", {"textDocument": {"uri": uri}, "options": options})
    assert edit["newText"] == fmt.format_text(text, str(Path(uri[len("file://"):])))
    assert edit["range"] == {"start": {"line": 0, "character": 0}, "end": {"line": 2, "character": 0}}
    client.change(uri, edit["newText"], 2)
    assert client.request("textDocument/formatting", {"textDocument": {"uri": uri}, "options": options}) == []
    client.change(uri, "service {", 3)  # a syntax error: no edit
    assert client.request("textDocument/formatting", {"textDocument": {"uri": uri}, "options": options}) == []


def test_shutdown_and_exit(client):
    assert client.request("shutdown", None) is None
    client.notify("exit", None)
    assert client.proc.wait(timeout=TIMEOUT) == 0


# ---- without the server process ---------------------------------------------------------------

def run_python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def test_check_and_the_shared_analysis_do_not_import_pygls():
    proc = run_python(
        "import sys\n"
        "from compiler.cli import main\n"
        "code = main(['check', 'examples/shop.mesh'])\n"
        "from compiler.tooling.lsp import analysis as lsp_analysis\n"
        "lsp_analysis.check_document('file:///tmp/x.mesh', 'service a { port 1 }')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pygls', 'lsprotocol'))\n"
        "assert code == 0 and not bad and 'compiler.tooling.lsp.server' not in sys.modules, (code, bad)\n")
    assert proc.returncode == 0, proc.stderr


def test_lsp_without_pygls_names_the_extra():
    proc = run_python("import sys\nsys.modules['pygls'] = sys.modules['lsprotocol'] = None\n"
                      "from compiler.cli import main\nsys.exit(main(['lsp']))\n")
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'meshc[lsp]'" in proc.stderr
    assert "Traceback" not in proc.stderr

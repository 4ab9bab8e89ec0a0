"""`python -m runtime_proxy.xds_client`: the native proxy's xDS client, a helper process.

`meshc proxy --xds-server HOST:PORT --node SERVICE` spawns this module (runtime_proxy/net/xds_link.py)
instead of talking gRPC itself: importing grpc.aio and the protos costs the serving process about
20 MB of RSS for its whole life, and the proxy forks a child to validate each reload while gRPC's
core is not fork-safe. This is the only module of runtime_proxy that imports grpc, the Envoy
protos (`envoy.service.discovery.v3`, the `Secret` type); the serving process
never imports it (tests/test_import_directions.py).

What it does (docs/control-plane.md, "The native proxy"):

- holds one ADS stream (state of the world) to the server: the node is `SERVICE` with
  `user_agent_name` `meshc-native`; it asks for the native config
  (`type.googleapis.com/meshc.native.v1.SidecarConfig`, the resource named SERVICE) and, once a
  config needs mTLS, for the secrets `identity` and `mesh_ca`;
- has each config validated by the proxy's own reload path (runtime_proxy/config/loading.py:
  pydantic strict, then the semantic checks, in the proxy's loader child) and NACKs one that
  fails with its located message (a response that is not a JSON object, or a Secret that does not
  decode, or any other malformed resource, it NACKs itself);
- writes the secrets into the state directory (inline bytes: `STATE/certs/HASH/` 0700, files
  0600, the key created with O_CREAT|O_EXCL at 0600 and renamed into place; `filename`s are used
  as they are) and points the config's `mtls.files` there;
- writes the config to `STATE/config.json` (a temporary file renamed over it) and tells the proxy
  on stdout (`{"apply": N, "path": ..., "sha": ...}`, one JSON line); the proxy reloads it through
  its usual path and answers on stdin (`{"applied": N, "ok": ..., "message": ...}`); only then is
  the response ACKed, or NACKed with the proxy's message (and `config.json` restored to the
  config the proxy still runs);
- reconnects with backoff when the stream ends (0.25 s doubled up to 2 s, jittered, as the Envoy
  bootstrap's), each new stream on the next server of `--xds-server` (given once per replica, round
  robin, so a dead replica is left for the next); HTTP/2 keepalive pings (every 5 s, 3 s to
  answer) end a stream whose server stopped answering without closing; the proxy keeps serving
  meanwhile, and the same versions on a new stream change nothing (the same file contents: the
  proxy answers at once); a failure of this machine (a file that cannot be written, the pipe to
  the proxy) and any unforeseen error end the stream the same way, logged with what failed; and
  should the client stop all the same, the helper exits and the proxy starts a new one.

It exits when its stdin closes (the proxy is gone). Its log lines go to stderr, which it shares
with the proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf.message import DecodeError

log = logging.getLogger("runtime_proxy.xds")

NATIVE = "type.googleapis.com/meshc.native.v1.SidecarConfig"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
IDENTITY, CA = "identity", "mesh_ca"
USER_AGENT = "meshc-native"
TARGET_NAME = "meshc-control"        # the name the server's certificate is checked against (--xds-identity)
CONFIG_FILE = "config.json"
CERTS = "certs"
REPLY_TIMEOUT = 60.0                 # seconds the proxy has to answer an apply
BACKOFF_FIRST, BACKOFF_MAX = 0.25, 2.0   # as the Envoy bootstrap's retry_back_off
CONNECT_TIMEOUT = 2.0                # seconds for a channel to connect (TCP and, with TLS, the handshake)
KEEPALIVE = [                        # as the Envoy bootstrap's xds_cluster: a ping every 5 s, 3 s to answer
    ("grpc.keepalive_time_ms", 5000), ("grpc.keepalive_timeout_ms", 3000),
    ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.ping_timeout_ms", 3000)]
# Test-only (docs/control-plane.md): `MESHC_XDS_TEST_KEEPALIVE=INTERVAL_MS,TIMEOUT_MS` in the
# helper's environment (it inherits the proxy's) pings every INTERVAL_MS, TIMEOUT_MS to answer, so
# that a test of a frozen server need not wait 8 s; a value that is not two positive integers is
# ignored.
TEST_KEEPALIVE = "MESHC_XDS_TEST_KEEPALIVE"


def keepalive_options() -> list[tuple[str, int]]:
    """KEEPALIVE, or with MESHC_XDS_TEST_KEEPALIVE its shortened interval and timeout."""
    parts = os.environ.get(TEST_KEEPALIVE, "").split(",")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        return KEEPALIVE
    shorter = {"grpc.keepalive_time_ms": int(parts[0]), "grpc.keepalive_timeout_ms": int(parts[1]),
               "grpc.http2.ping_timeout_ms": int(parts[1])}
    return [(k, shorter.get(k, v)) for k, v in KEEPALIVE]
INVALID_ARGUMENT = 3                 # google.rpc.Code


class Rejected(Exception):
    """A response that cannot be used: the NACK's message."""


class LocalError(Exception):
    """A failure of this machine, not of the response (a file that cannot be read or written, the
    pipe to the proxy): the stream is ended and a new one started after the backoff, which asks
    for the same versions again (nothing is NACKed)."""


# ---- files --------------------------------------------------------------------------------------

def private_dir(path: str) -> str:
    """`path` as a directory only this user can read (created 0700, or narrowed to 0700)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_private(path: str, data: bytes) -> None:
    """`data` into `path`, mode 0600 from its first byte: a temporary name created with
    O_CREAT|O_EXCL at 0600 in the same directory, then renamed over `path`."""
    tmp = f"{path}.tmp{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Secrets:
    """The two secrets as the proxy's files need them: PEM bytes (inline) or file names."""
    cert: bytes | str
    key: bytes | str
    ca: bytes | str

    def files(self, state_dir: str) -> dict[str, str]:
        """The `mtls.files` of the config: inline secrets written under STATE/certs/HASH/
        (content-addressed: the same secrets give the same files, untouched), file names as given."""
        if all(isinstance(v, str) for v in (self.cert, self.key, self.ca)):
            cert, key, ca = str(self.cert), str(self.key), str(self.ca)
            return {"directory": os.path.dirname(cert), "cert": cert, "key": key, "ca": ca}
        digest = hashlib.sha256()
        parts: dict[str, bytes | str] = {"cert.pem": self.cert, "key.pem": self.key, "ca.pem": self.ca}
        for name, value in parts.items():
            raw = value if isinstance(value, bytes) else value.encode()
            digest.update(name.encode() + len(raw).to_bytes(8, "big") + raw)
        directory = private_dir(os.path.join(private_dir(os.path.join(state_dir, CERTS)), digest.hexdigest()[:16]))
        out = {"directory": directory}
        for name, value in parts.items():
            path = os.path.join(directory, name)
            if isinstance(value, str):   # one of the three given as a file name
                out[name.partition(".")[0]] = value
                continue
            try:
                with open(path, "rb") as fh:
                    same = fh.read() == value
            except OSError:
                same = False
            if not same:
                write_private(path, value)
            out[name.partition(".")[0]] = path
        return out

    def written(self, state_dir: str) -> dict[str, str]:
        """`files`, with a failure to write them as a LocalError that says so."""
        try:
            return self.files(state_dir)
        except OSError as err:
            raise LocalError(f"cannot write the certificates under {os.path.join(state_dir, CERTS)}: "
                             f"{err.strerror or err}") from None


def _data(source, what: str) -> bytes | str:
    """A DataSource as bytes (inline) or a file name."""
    kind = source.WhichOneof("specifier")
    if kind == "inline_bytes":
        return bytes(source.inline_bytes)
    if kind == "inline_string":
        return source.inline_string.encode()
    if kind == "filename":
        return source.filename
    raise Rejected(f"{what}: neither inline bytes, an inline string nor a filename")


def parse_secrets(resources) -> Secrets | None:
    """`identity` and `mesh_ca` out of a Secret response; None when either is missing."""
    found: dict[str, Any] = {}
    for packed in resources:
        secret = secret_pb2.Secret()
        try:
            unpacked = packed.Unpack(secret)
        except DecodeError as err:
            raise Rejected(f"a Secret resource of {len(packed.value)} bytes cannot be decoded: {err or 'corrupt'}") \
                from None
        if not unpacked:
            raise Rejected(f"a Secret response carries a {packed.type_url}")
        found[secret.name] = secret
    if IDENTITY not in found or CA not in found:
        return None
    ident, ca = found[IDENTITY], found[CA]
    if not ident.HasField("tls_certificate"):
        raise Rejected(f"secret {IDENTITY!r} has no tls_certificate")
    if not ca.HasField("validation_context"):
        raise Rejected(f"secret {CA!r} has no validation_context")
    tls = ident.tls_certificate
    return Secrets(_data(tls.certificate_chain, f"{IDENTITY}.certificate_chain"),
                   _data(tls.private_key, f"{IDENTITY}.private_key"),
                   _data(ca.validation_context.trusted_ca, f"{CA}.trusted_ca"))


def parse_config(data: bytes) -> dict[str, Any]:
    """The config's JSON data (an object), or Rejected. The contract itself (pydantic, strict, and
    the semantic checks) is checked by the proxy's reload path, in its loader child
    (runtime_proxy/config/child.py): one validation, by the code that will run the config, and no
    pydantic resident in this process (about 12 MB)."""
    try:
        config = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise Rejected(f"the native config is not UTF-8 JSON: {err}") from None
    if not isinstance(config, dict):
        raise Rejected("the native config is not a JSON object")
    return config


def needs_secrets(config: dict[str, Any]) -> bool:
    mtls = config.get("mtls")
    return isinstance(mtls, dict) and mtls.get("files") is not None


# ---- the link to the proxy ------------------------------------------------------------------------

class Proxy:
    """The serving process, over this process's stdin (its answers) and stdout (what to apply)."""

    def __init__(self) -> None:
        self.ids = 0
        self.waiting: dict[int, asyncio.Future[tuple[bool, str]]] = {}
        self.gone = asyncio.Event()

    async def read(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                break
            try:
                msg = json.loads(line)
                fut = self.waiting.pop(int(msg["applied"]))
            except (ValueError, KeyError, TypeError):
                continue
            if not fut.done():
                fut.set_result((bool(msg.get("ok")), str(msg.get("message", ""))))
        self.gone.set()

    async def apply(self, path: str, sha: str) -> tuple[bool, str]:
        """Tell the proxy to apply `path`; (applied, its message)."""
        self.ids += 1
        fut: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()
        self.waiting[self.ids] = fut
        line = json.dumps({"apply": self.ids, "path": path, "sha": sha}) + "\n"
        try:
            os.write(sys.stdout.fileno(), line.encode())
        except OSError as err:
            self.waiting.pop(self.ids, None)
            raise LocalError(f"cannot tell the proxy to apply {path} (its pipe): {err.strerror or err}") from None
        try:
            return await asyncio.wait_for(fut, REPLY_TIMEOUT)
        except TimeoutError:
            self.waiting.pop(self.ids, None)
            return False, f"the proxy did not answer within {REPLY_TIMEOUT:g} s"


async def connect(channel: grpc.aio.Channel) -> None:
    """Until the channel is connected or has failed (the call that follows then fails at once with
    gRPC's reason); ConnectTimeout after CONNECT_TIMEOUT (a server that accepted the connection
    but does not answer: a frozen process)."""
    deadline = asyncio.get_running_loop().time() + CONNECT_TIMEOUT
    state = channel.get_state(try_to_connect=True)
    while state not in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                        grpc.ChannelConnectivity.SHUTDOWN):
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise ConnectTimeout
        try:
            await asyncio.wait_for(channel.wait_for_state_change(state), left)
        except TimeoutError:
            raise ConnectTimeout from None
        state = channel.get_state(try_to_connect=True)


# ---- the client -----------------------------------------------------------------------------------

@dataclass
class Held:
    """The last response of one type: its version and nonce, and what it carried."""
    version: str
    nonce: str
    value: Any


class ConnectTimeout(Exception):
    """The channel did not connect within CONNECT_TIMEOUT (a server that accepts and never answers)."""


@dataclass
class Client:
    servers: list[str]                                        # the replicas, in the order given
    node: str
    state_dir: str
    identity_dir: str | None
    proxy: Proxy
    good: dict[str, Held] = field(default_factory=dict)      # what the proxy runs, by type
    applied_sha: str | None = None                            # of the config.json the proxy runs
    applied_text: bytes | None = None
    got_any: bool = False                                     # a response arrived on this stream
    turn: int = 0                                             # the index of the server of the next stream

    @property
    def server(self) -> str:
        """The server of the current (or next) stream."""
        return self.servers[self.turn % len(self.servers)]

    def channel(self) -> grpc.aio.Channel:
        if self.identity_dir is None:
            return grpc.aio.insecure_channel(self.server, options=keepalive_options())
        read = {}
        for name in ("ca.pem", "key.pem", "cert.pem"):
            path = os.path.join(self.identity_dir, name)
            try:
                with open(path, "rb") as fh:
                    read[name] = fh.read()
            except OSError as err:
                raise LocalError(f"cannot read the channel identity {path}: {err.strerror or err}") from None
        creds = grpc.ssl_channel_credentials(read["ca.pem"], read["key.pem"], read["cert.pem"])
        return grpc.aio.secure_channel(self.server, creds,
                                       options=[("grpc.ssl_target_name_override", TARGET_NAME), *keepalive_options()])

    async def run(self) -> None:
        """Streams, one after the other, each on the next server (round robin), with backoff
        between them, until the proxy is gone."""
        delay = BACKOFF_FIRST
        logged: set[tuple[str, str]] = set()   # (server, error) said since the last stream that was up
        while not self.proxy.gone.is_set():
            self.got_any = False
            server = self.server
            trace: BaseException | None = None
            try:
                async with self.channel() as channel:
                    await connect(channel)
                    await self.stream(channel)
                error = "the stream ended"
            except grpc.aio.AioRpcError as err:
                error = f"{err.code().name}: {err.details()}{self.hint(err)}"
            except ConnectTimeout:
                error = f"no connection within {CONNECT_TIMEOUT:g} s"
            except LocalError as err:   # --xds-identity unreadable, the state directory unwritable, ...
                error = str(err)
            except Exception as err:   # a defect: logged (with its traceback), and a new stream after the backoff
                error, trace = f"unexpected {type(err).__name__}: {err}", err
            if self.proxy.gone.is_set():
                return
            if self.got_any:
                delay = BACKOFF_FIRST
                logged.clear()
            self.turn += 1
            if (server, error) not in logged:
                logged.add((server, error))
                nxt = f"next {self.server}" if len(self.servers) > 1 else "retrying"
                log.warning("xDS server %s: %s; keeping config %s, %s (backoff %.2f s)",
                            server, error, self.good_version(NATIVE) or "(none yet)", nxt, delay, exc_info=trace)
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, BACKOFF_MAX)

    def hint(self, err: grpc.aio.AioRpcError) -> str:
        """What to check, for the errors of the channel's trust model (`meshc serve --ca`), whose
        gRPC messages do not say it: a node that is not the client certificate's, a plaintext
        channel to a mutual-TLS server, a handshake the server refused."""
        code, details = err.code(), err.details() or ""
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return f" (--node must name a service of the identity in {self.identity_dir or '--xds-identity'}/cert.pem)"
        if code != grpc.StatusCode.UNAVAILABLE or self.got_any:
            return ""
        if self.identity_dir is None and "Socket closed" in details:
            return " (a server started with --ca takes mutual TLS only: give --xds-identity DIR)"
        if self.identity_dir is not None and "handshake" in details.lower():
            return (f" (over mutual TLS as {self.identity_dir}: is the server started with --ca, from the CA "
                    "of its ca.pem?)")
        return ""

    def good_version(self, type_url: str) -> str:
        held = self.good.get(type_url)
        return held.version if held else ""

    async def stream(self, channel: grpc.aio.Channel) -> None:
        """One ADS stream, until it ends or the proxy is gone."""
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        requests: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()

        async def outgoing():
            while True:
                request = await requests.get()
                if request is None:
                    return
                yield request

        call = stub.StreamAggregatedResources(outgoing())
        first = [True]
        subscribed: set[str] = set()
        pending: dict[str, Held] = {}    # responses not yet answered, by type

        def send(type_url: str, version: str = "", nonce: str = "", error: str | None = None) -> None:
            request = discovery_pb2.DiscoveryRequest(
                type_url=type_url, version_info=version, response_nonce=nonce,
                resource_names=[self.node] if type_url == NATIVE else [IDENTITY, CA])
            if first[0]:
                request.node.id = self.node
                request.node.cluster = self.node
                request.node.user_agent_name = USER_AGENT
                first[0] = False
            if error is not None:
                request.error_detail.code = INVALID_ARGUMENT
                request.error_detail.message = error[:4000]
            requests.put_nowait(request)

        def subscribe(type_url: str) -> None:
            if type_url not in subscribed:
                subscribed.add(type_url)
                send(type_url, self.good_version(type_url))

        subscribe(NATIVE)
        if NATIVE in self.good and needs_secrets(self.good[NATIVE].value):
            subscribe(SECRET)
        try:
            while True:
                gone = asyncio.ensure_future(self.proxy.gone.wait())
                read = asyncio.ensure_future(call.read())
                done, _ = await asyncio.wait({gone, read}, return_when=asyncio.FIRST_COMPLETED)
                if gone in done:
                    read.cancel()
                    call.cancel()
                    return
                gone.cancel()
                response = read.result()
                if response is grpc.aio.EOF:
                    return
                if not self.got_any:
                    log.info("xDS server %s: connected, node %s", self.server, self.node)
                    self.got_any = True
                await self.on_response(response, pending, send, subscribe)
        finally:
            requests.put_nowait(None)

    async def on_response(self, response, pending: dict[str, Held], send, subscribe) -> None:
        type_url, version, nonce = response.type_url, response.version_info, response.nonce
        try:
            if type_url == NATIVE:
                mine = [r for r in response.resources if r.type_url == NATIVE]
                if len(mine) != 1:
                    raise Rejected(f"expected one {NATIVE} resource for node {self.node!r}, got {len(mine)}")
                config = parse_config(mine[0].value)
                pending[NATIVE] = Held(version, nonce, config)
                if needs_secrets(config):
                    subscribe(SECRET)
            elif type_url == SECRET:
                pending[SECRET] = Held(version, nonce, parse_secrets(response.resources))
            else:
                raise Rejected(f"type {type_url} was not asked for")
        except Exception as err:   # Rejected, or a resource malformed in a way not foreseen: NACKed all the same
            if not isinstance(err, Rejected):
                err = Rejected(f"a malformed {type_url.rpartition('.')[2]} response: {type(err).__name__}: {err}")
            log.error("xDS: %s version %s rejected (keeping %s): %s", type_url.rpartition(".")[2], version,
                      self.good_version(type_url) or "nothing", err)
            send(type_url, self.good_version(type_url), nonce, str(err))
            pending.pop(type_url, None)
            return
        await self.settle(pending, send)

    async def settle(self, pending: dict[str, Held], send) -> None:
        """Apply what the pending responses make up with the good ones, then ACK or NACK them."""
        config_held = pending.get(NATIVE) or self.good.get(NATIVE)
        secrets_held = pending.get(SECRET) or self.good.get(SECRET)
        if config_held is None:   # secrets before any config: nothing to apply yet
            if SECRET in pending and pending[SECRET].value is not None:
                held = pending.pop(SECRET)
                self.good[SECRET] = held
                send(SECRET, held.version, held.nonce)
            return
        config = config_held.value
        if needs_secrets(config):
            if secrets_held is None or secrets_held.value is None:
                if SECRET in pending:   # the server has no secrets for this node: the config cannot run
                    held = pending.pop(SECRET)
                    send(SECRET, held.version, held.nonce)
                    if NATIVE in pending:
                        bad = pending.pop(NATIVE)
                        message = (f"the config needs the secrets {IDENTITY!r} and {CA!r} (mTLS), which the "
                                   "server does not send for this node")
                        log.error("xDS: SidecarConfig version %s rejected: %s", bad.version, message)
                        send(NATIVE, self.good_version(NATIVE), bad.nonce, message)
                return   # wait for the secrets
            config = dict(config, mtls=dict(config["mtls"], files=secrets_held.value.written(self.state_dir)))
        text = json.dumps(config, indent=2, sort_keys=True).encode() + b"\n"
        sha = hashlib.sha256(text).hexdigest()
        path = os.path.join(self.state_dir, CONFIG_FILE)
        if sha == self.applied_sha:
            ok, message = True, "unchanged"
        else:
            try:
                write_private(path, text)
            except OSError as err:
                raise LocalError(f"cannot write {path}: {err.strerror or err}") from None
            ok, message = await self.proxy.apply(path, sha)
        answered = dict(pending)
        pending.clear()
        if ok:
            self.applied_sha, self.applied_text = sha, text
            for type_url, held in answered.items():
                self.good[type_url] = held
                send(type_url, held.version, held.nonce)
            if NATIVE in answered and message != "unchanged":
                log.info("xDS: SidecarConfig version %s (config %s) applied", answered[NATIVE].version,
                         answered[NATIVE].value.get("version"))
            self.clean_certs(config)
        else:
            if self.applied_text is not None:   # config.json holds what the proxy runs
                try:
                    write_private(path, self.applied_text)
                except OSError as err:
                    raise LocalError(f"cannot restore {path}: {err.strerror or err}") from None
            for type_url, held in answered.items():
                log.error("xDS: %s version %s refused by the proxy (keeping %s): %s", type_url.rpartition(".")[2],
                          held.version, self.good_version(type_url) or "nothing", message)
                send(type_url, self.good_version(type_url), held.nonce, message)
            if self.applied_text is not None:
                self.clean_certs(json.loads(self.applied_text))

    def clean_certs(self, config: dict[str, Any]) -> None:
        """Remove the certificate directories of STATE/certs that `config` does not use."""
        files = (config.get("mtls") or {}).get("files") or {}
        keep = os.path.realpath(files["directory"]) if files.get("directory") else None
        root = os.path.join(self.state_dir, CERTS)
        with contextlib.suppress(OSError):
            for name in os.listdir(root):
                path = os.path.join(root, name)
                if os.path.realpath(path) != keep:
                    shutil.rmtree(path, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime_proxy.xds_client",
                                description="The native proxy's xDS client (started by `meshc proxy --xds-server`).")
    p.add_argument("--xds-server", required=True, action="append", metavar="HOST:PORT",
                   help="a server; once per replica (each new stream goes to the next)")
    p.add_argument("--node", required=True, metavar="SERVICE")
    p.add_argument("--state-dir", required=True, metavar="DIR")
    p.add_argument("--xds-identity", metavar="DIR")
    p.add_argument("--running", metavar="SHA256",
                   help="the SHA-256 of STATE/config.json, which the proxy runs (it started from it)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p


async def amain(args: argparse.Namespace) -> int:
    proxy = Proxy()
    reader = asyncio.ensure_future(proxy.read())
    client = Client(args.xds_server, args.node, private_dir(args.state_dir), args.xds_identity, proxy)
    if args.running:   # the proxy runs the config.json it started from: restore that one after a NACK
        with contextlib.suppress(OSError):
            with open(os.path.join(client.state_dir, CONFIG_FILE), "rb") as fh:
                text = fh.read()
            if hashlib.sha256(text).hexdigest() == args.running:
                client.applied_sha, client.applied_text = args.running, text
    runner = asyncio.ensure_future(client.run())
    gone = asyncio.ensure_future(proxy.gone.wait())
    await asyncio.wait({runner, gone}, return_when=asyncio.FIRST_COMPLETED)
    if not gone.done():   # the client ended while the proxy is there: a defect; exit, the proxy starts a new helper
        reader.cancel()
        gone.cancel()
        err = runner.exception() if not runner.cancelled() else None
        log.error("xDS client: stopped unexpectedly (%s); exiting, the proxy starts a new one",
                  f"{type(err).__name__}: {err}" if err is not None else "cancelled")
        return 1
    runner.cancel()
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s runtime_proxy %(levelname)s %(message)s")
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())

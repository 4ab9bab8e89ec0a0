"""`meshc doctor` (issue 18 point 20): the identity files of every sidecar with mTLS, checked on
real files made by `meshc ca` (a CA, then one identity per service, then each broken one way:
missing, unreadable, expired, not yet valid, expiring, another SAN, another key, another CA), and
the ports. The CLI runs in-process (compiler.cli.main) on real files; a real Envoy and the real
native proxy show that what the doctor reports is what they hit: Envoy starts without identity
files and fails the handshake, the native proxy refuses to start.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import ssl
from pathlib import Path

import pytest

from compiler.cli import main
from tests.envoy_support import Envoy, free_port, requires_envoy
from tests.proxy_harness import start_proxy

TD = "shop.local"
SERVICES = ("web", "api", "pay")
POLICY = """
mesh { trust_domain "shop.local"  mtls strict }
""" + "".join(f"""
service {name} {{
  port {8080 + i}
  endpoints ["127.0.0.1:{8080 + i}"]
  sidecar {{ inbound @{name}_in@  outbound @{name}_out@  admin @{name}_admin@ }}
}}
""" for i, name in enumerate(SERVICES)) + """
service legacy {
  port 9000
  mtls disable
  endpoints ["127.0.0.1:9000"]
  sidecar { inbound @legacy_in@  outbound @legacy_out@  admin @legacy_admin@ }
}
"""


def spiffe(name: str) -> str:
    return f"spiffe://{TD}/ns/default/sa/{name}"


def meshc(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "internal error" not in err, err
    return code, out, err


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A policy, a CA and one identity per service, all by `meshc ca`; tests copy it."""
    root = tmp_path_factory.mktemp("doctor")
    text = POLICY
    for name in (*SERVICES, "legacy"):
        for kind in ("in", "out", "admin"):
            text = text.replace(f"@{name}_{kind}@", str(free_port()))
    (root / "mesh.mesh").write_text(text)
    assert main(["ca", "init", str(root / "ca"), "--trust-domain", TD]) == 0
    for name in (*SERVICES, "legacy"):
        assert main(["ca", "issue", name, "--ca", str(root / "ca"), "-o", str(root / "certs" / name)]) == 0
    return root


@pytest.fixture
def host(made, tmp_path) -> Path:
    d = tmp_path / "host"
    shutil.copytree(made, d, symlinks=True)
    return d


def doctor(capsys, host: Path, *extra: str) -> tuple[int, str, str]:
    return meshc(capsys, "doctor", str(host / "mesh.mesh"), "--certs-dir", str(host / "certs"), *extra)


def codes(capsys, host: Path, *extra: str) -> tuple[int, list[tuple[str, str, str]]]:
    """Exit code and (code, severity, message) of each finding, from the JSON output."""
    code, out, _ = doctor(capsys, host, "--output-format", "json", *extra)
    return code, [(d["code"], d["severity"], d["message"]) for d in json.loads(out)["diagnostics"]]


def reissue(host: Path, name: str, hours: float, now: dt.datetime, spiffe_id: str | None = None,
            ca: str = "ca") -> None:
    """An identity written by `meshc ca`'s own code at another time (expired, not yet valid)."""
    from compiler.ca import files

    files.issue_identity(files.read_ca(str(host / ca)), str(host / "certs" / name), spiffe_id or spiffe(name),
                         hours, now)


def test_ready_host(host, capsys):
    code, out, err = doctor(capsys, host)
    assert (code, out) == (0, ""), err
    assert err == f"meshc: doctor: 4 sidecars ready on this host (4 with mTLS identity files checked, in " \
                  f"{host / 'certs'})\n"
    assert codes(capsys, host) == (0, [])
    # --proxy picks sidecars
    code, _, err = doctor(capsys, host, "--proxy", "web")
    assert code == 0 and "1 sidecar ready on this host (1 with mTLS" in err
    # `legacy` (mtls disable) still calls services with mTLS: it needs an identity too
    shutil.rmtree(host / "certs" / "legacy")
    code, found = codes(capsys, host, "--proxy", "legacy")
    assert code == 1 and [c for c, _, _ in found] == ["H0101"] and "certs/legacy does not exist" in found[0][2]


def test_missing_identity_files(host, capsys):
    shutil.rmtree(host / "certs" / "api")
    os.unlink(host / "certs" / "web" / "key.pem")
    code, out, err = doctor(capsys, host)
    assert code == 1 and out == ""
    assert f"error[H0101]: sidecar `api`: the identity directory {host / 'certs' / 'api'} does not exist" in err
    assert f"error[H0101]: sidecar `web`: {host / 'certs' / 'web' / 'key.pem'} does not exist" in err
    assert "mesh.mesh:" in err and "service api {" in err      # located at the service's declaration
    assert err.endswith("meshc: doctor: 4 sidecars not ready on this host (4 with mTLS identity files checked, "
                        f"in {host / 'certs'})\n")
    # a link into a version that is gone
    shutil.rmtree(next(p for p in (host / "certs" / "pay").iterdir() if p.name.startswith("..2")))
    _, found = codes(capsys, host, "--proxy", "pay")
    assert [c for c, _, _ in found] == ["H0101"] * 3 and "is a link to a file that does not exist" in found[0][2]


def test_unreadable_and_unparsable_files(host, capsys):
    key = host / "certs" / "web" / "key.pem"
    os.unlink(key)
    key.mkdir()
    (host / "certs" / "api" / "cert.pem").resolve().write_text("not a certificate\n")
    (host / "certs" / "pay" / "key.pem").resolve().write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n"
                                                               "-----END PRIVATE KEY-----\n")
    code, found = codes(capsys, host)
    assert code == 1
    assert ("H0102", "error", f"sidecar `web`: {key} is not a regular file") in found
    assert ("H0103", "error", f"sidecar `api`: {host / 'certs' / 'api' / 'cert.pem'} holds no valid PEM "
                              "certificate") in found
    assert ("H0103", "error", f"sidecar `pay`: {host / 'certs' / 'pay' / 'key.pem'} holds no unencrypted PEM "
                              "private key") in found


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_file_this_user_cannot_read(host, capsys):
    os.chmod((host / "certs" / "web" / "key.pem").resolve(), 0)
    _, found = codes(capsys, host, "--proxy", "web")
    assert [(c, "permission denied" in m) for c, _, m in found] == [("H0102", True)]


def test_expired_not_yet_valid_and_expiring(host, capsys):
    now = dt.datetime.now(dt.UTC)
    reissue(host, "web", 1, now - dt.timedelta(days=2))           # expired 47 h ago
    reissue(host, "api", 1, now + dt.timedelta(days=2))           # valid from the day after tomorrow
    code, found = codes(capsys, host)
    assert code == 1
    (web,) = [m for c, _, m in found if "`web`" in m]
    assert web.startswith(f"sidecar `web`: the certificate in {host / 'certs' / 'web' / 'cert.pem'} expired at ")
    assert [c for c, _, m in found if "`web`" in m] == ["H0104"] and "(1d 23h ago)" in web
    (api,) = [(c, m) for c, _, m in found if "`api`" in m]
    assert api[0] == "H0104" and "is not valid before" in api[1] and "is this host's clock right?" in api[1]
    # a warning, not an error: within a day of expiry; a certificate living a day or less only once
    # less than a third of its life is left (when `meshc ca rotate` would renew it)
    reissue(host, "web", 24 * 10, now - dt.timedelta(days=9, hours=12))    # 12 h left of 10 days
    reissue(host, "api", 24, now)                                            # fresh, 24 h: no warning
    reissue(host, "pay", 0.5, now - dt.timedelta(minutes=25))                # 5 min left of 31 min
    code, found = codes(capsys, host)
    assert code == 0, found
    assert sorted((c, s, m.split(":")[0]) for c, s, m in found) == [
        ("H0105", "warning", "sidecar `pay`"), ("H0105", "warning", "sidecar `web`")]
    assert any("expires at" in m and "(in 11h" in m for _, _, m in found)


def test_certificate_of_another_identity(host, capsys):
    assert main(["ca", "issue", "api", "--ca", str(host / "ca"), "-o", str(host / "certs" / "api"),
                 "--spiffe-id", spiffe("web")]) == 0
    capsys.readouterr()
    code, found = codes(capsys, host)
    assert (code, found) == (1, [("H0106", "error", f"sidecar `api`: {host / 'certs' / 'api' / 'cert.pem'} is not "
                                                    f"this sidecar's identity: its URI SAN is `{spiffe('web')}`, "
                                                    f"expected `{spiffe('api')}`")])


def test_key_of_another_certificate(host, capsys):
    (host / "certs" / "api" / "key.pem").resolve().write_bytes((host / "certs" / "pay" / "key.pem").read_bytes())
    code, found = codes(capsys, host)
    assert (code, found) == (1, [("H0107", "error", f"sidecar `api`: {host / 'certs' / 'api' / 'key.pem'} is not the "
                                                    f"key of {host / 'certs' / 'api' / 'cert.pem'}")])


def test_another_ca(host, capsys):
    assert main(["ca", "init", str(host / "ca2"), "--trust-domain", TD]) == 0
    assert main(["ca", "issue", "api", "--ca", str(host / "ca2"), "-o", str(host / "certs" / "api")]) == 0
    capsys.readouterr()
    # api's files are consistent (its ca.pem is the CA that signed it), but nobody else trusts it
    code, found = codes(capsys, host)
    assert code == 1 and {c for c, _, _ in found} == {"H0109"}
    messages = sorted(m for _, _, m in found)
    assert messages[0] == (f"sidecar `api`: {host / 'certs' / 'api' / 'ca.pem'} does not verify the certificates of "
                           "`legacy`, `pay`, `web`: the handshakes between `api` and them fail")
    assert [m.split(":")[0] for m in messages] == [f"sidecar `{n}`" for n in ("api", "legacy", "pay", "web")]
    assert all(m.endswith("does not verify the certificates of `api`: the handshakes between "
                          f"`{m.split('`')[1]}` and it fail") for m in messages[1:])
    # the certificate of the other CA with the mesh's bundle: not signed by its ca.pem
    (host / "certs" / "api" / "ca.pem").resolve().write_bytes((host / "ca" / "ca.pem").read_bytes())
    code, found = codes(capsys, host)
    assert code == 1 and [c for c, _, _ in found] == ["H0108"]
    assert found[0][2].startswith(f"sidecar `api`: {host / 'certs' / 'api' / 'cert.pem'} is not signed by "
                                  f"{host / 'certs' / 'api' / 'ca.pem'} (its issuer: ")


def test_a_port_in_use_is_a_warning(host, capsys):
    text = (host / "mesh.mesh").read_text()
    port = int(text.split("sidecar { inbound ")[1].split()[0])      # web's inbound port
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        code, found = codes(capsys, host)
    assert (code, found) == (0, [("H0201", "warning", f"sidecar `web`: the inbound port 127.0.0.1:{port} is in use "
                                                      "(by another process, or this sidecar already running)")])


def test_output_formats(host, capsys):
    shutil.rmtree(host / "certs" / "api")
    code, out, _ = doctor(capsys, host, "--output-format", "github")
    assert code == 1
    (line,) = out.splitlines()
    assert line.startswith("::error title=meshc (H0101),file=") and ",line=" in line and "::H0101 sidecar `api`" in line
    code, out, _ = doctor(capsys, host, "--output-format", "sarif")
    assert code == 1
    run = json.loads(out)["runs"][0]
    (rule,) = run["tool"]["driver"]["rules"]
    assert rule["id"] == "H0101" and rule["shortDescription"]["text"] == "identity file missing"
    assert rule["helpUri"].endswith("docs/identity.md#checking-a-host-meshc-doctor")
    (result,) = run["results"]
    assert result["level"] == "error" and result["locations"][0]["physicalLocation"]["region"]["startLine"] > 1
    code, out, _ = doctor(capsys, host, "--output-format", "json")
    (d,) = json.loads(out)["diagnostics"]
    assert (d["code"], d["title"], d["line"] is not None) == ("H0101", "identity file missing", True)


def test_program_errors_and_usage(host, capsys):
    (host / "bad.mesh").write_text("service x {\n")
    code, _, err = meshc(capsys, "doctor", str(host / "bad.mesh"))
    assert code == 1 and "error[E0103]" in err
    code, _, err = doctor(capsys, host, "--proxy", "wbe")
    assert code == 2 and "no service `wbe`" in err and "web" in err
    code, _, err = meshc(capsys, "doctor", str(host / "nope.mesh"))
    assert code == 2
    code, _, err = meshc(capsys, "doctor")
    assert code == 2 and "the following arguments are required: FILES" in err


def test_the_mesh_certificates_setting_is_where_the_doctor_looks(host, capsys):
    text = (host / "mesh.mesh").read_text().replace('mtls strict }', f'mtls strict  certificates "{host / "certs"}" }}')
    (host / "mesh.mesh").write_text(text)
    code, _, err = meshc(capsys, "doctor", str(host / "mesh.mesh"))
    assert code == 0, err
    shutil.rmtree(host / "certs" / "web")
    code, _, err = meshc(capsys, "doctor", str(host / "mesh.mesh"))
    assert code == 1 and f"the identity directory {host / 'certs' / 'web'} does not exist" in err


def test_compile_for_envoy_notes_missing_identity_files(host, capsys):
    out = host / "out"
    args = ["compile", str(host / "mesh.mesh"), "--target", "envoy", "--proxy", "web", "-o", str(out), "--certs-dir"]
    code, _, err = meshc(capsys, *args, str(host / "certs"))
    assert code == 0 and "meshc: note" not in err
    code, _, err = meshc(capsys, *args, "/nonexistent/certs")
    assert code == 0 and err.splitlines()[0] == (
        "meshc: note: identity files are missing on this host (/nonexistent/certs/web/cert.pem and 2 more): Envoy "
        f"starts without them and fails every mTLS handshake; where the sidecars run, `meshc doctor "
        f"{host / 'mesh.mesh'} --certs-dir /nonexistent/certs` checks them")
    # the native proxy refuses to start without them: no note needed
    code, _, err = meshc(capsys, "compile", str(host / "mesh.mesh"), "--target", "native", "--proxy", "web",
                         "-o", str(out), "--certs-dir", "/nonexistent/certs")
    assert code == 0 and "meshc: note" not in err


@requires_envoy
def test_what_the_doctor_reports_is_what_the_proxies_hit(host, capsys, tmp_path):
    """Without identity files Envoy starts (LIVE, its listener bound) and fails the handshake of
    every client; the native proxy refuses to start; the doctor says so before either runs."""
    shutil.rmtree(host / "certs" / "web")
    code, found = codes(capsys, host, "--proxy", "web")
    assert code == 1 and [c for c, _, _ in found] == ["H0101"]
    out = host / "out"
    for target in ("envoy", "native"):
        code, _, err = meshc(capsys, "compile", str(host / "mesh.mesh"), "--target", target, "--proxy", "web",
                             "-o", str(out), "--certs-dir", str(host / "certs"))
        assert code == 0, err
    envoy = Envoy(str(out / "web.envoy.json"))
    try:
        assert envoy.admin("/ready") == b"LIVE\n"
        port = envoy.listener_ports()["inbound"]
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, pytest.raises((ssl.SSLError, OSError)):
            ctx.wrap_socket(raw).recv(1)
    finally:
        envoy.stop()
    with pytest.raises(RuntimeError, match=r"proxy exited with .*cert\.pem"):
        start_proxy(str(out / "web.native.json"), tmp_path).stop()


def test_explain_a_host_code(capsys):
    code, out, _ = meshc(capsys, "explain", "h0106")
    assert code == 0
    assert out.startswith("error[H0106]: certificate of another identity\n\nThe certificate's URI SAN is not exactly")
    assert "docs/identity.md" in out
    code, _, err = meshc(capsys, "explain", "H0999")
    assert code == 2 and "unknown code `H0999`" in err

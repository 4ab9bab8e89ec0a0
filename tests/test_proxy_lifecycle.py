"""The proxy as a command: config checking, bad configs at start, hot reload under load (good and
bad configs, file replacement and SIGHUP), graceful shutdown, and a policy compiled by
`meshc compile --target native` run end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from proxy_backend import Backend
from proxy_harness import ROOT, Client, config, get, route, run_proxy, service, start_proxy, subset, write_config

ENV = dict(os.environ, PYTHONPATH=ROOT)


def run_cli(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "runtime_proxy", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=ROOT)


@pytest.fixture(scope="module")
def backends():
    bs = {n: Backend(n) for n in ("a", "b")}
    yield bs
    for b in bs.values():
        b.stop()


def two_subsets(bs, target: str, version: str, **kw) -> dict:
    svc = service("svc", [subset("v1", [bs["a"].port], "svc"), subset("v2", [bs["b"].port], "svc")],
                  [route("all", to=("svc", target))])
    return config([svc], app_port=bs["a"].port, version=version, **kw)


# ---- config checking ------------------------------------------------------------------------------

def test_check_config(tmp_path, backends):
    good = write_config(tmp_path / "good.json", two_subsets(backends, "v1", "g"))
    r = run_cli("--check-config", good)
    assert r.returncode == 0 and "valid" in r.stdout
    cfg = two_subsets(backends, "v1", "g")
    cfg["services"][0]["routes"][0]["timeout_ms"] = -5
    cfg["services"][0]["routes"][0]["to"]["subset"] = "nope"
    bad = write_config(tmp_path / "bad.json", cfg)
    r = run_cli("--check-config", bad)
    assert r.returncode == 1
    assert "$.services[0].routes[0].timeout_ms" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("content, expected", [
    ('{"schema_version": 3, "version": ', "invalid JSON"),
    ('{"schema_version": 7, "version": "x"}', "unsupported schema_version 7"),
    ('{"schema_version": 3, "version": "x", "service": 3}', "$.service"),
])
def test_a_bad_config_at_start_is_a_located_message_and_exit_1(tmp_path, content, expected):
    path = tmp_path / "cfg.json"
    path.write_text(content)
    r = run_cli(str(path))
    assert r.returncode == 1
    assert expected in r.stderr and str(path) in r.stderr
    assert "Traceback" not in r.stderr


def test_meshc_proxy_command(tmp_path, backends):
    good = write_config(tmp_path / "good.json", two_subsets(backends, "v1", "g"))
    r = subprocess.run([sys.executable, "-m", "compiler", "proxy", "--check-config", good],
                       capture_output=True, text=True, timeout=30, env=ENV, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    ports = tmp_path / "ports.json"
    proc = subprocess.Popen([sys.executable, "-m", "compiler", "proxy", good, "--ports-file", str(ports)],
                            env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while not ports.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        p = json.loads(ports.read_text())
        assert get(p["outbound"], "/x").json()["backend"] == "a"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


# ---- reload ---------------------------------------------------------------------------------------

class Load:
    """Client threads sending requests without pause, on kept-alive and new connections."""

    def __init__(self, port: int, threads: int = 3):
        self.port = port
        self.stop = threading.Event()
        self.results: list[tuple[float, int, str]] = []
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]
        for t in self.threads:
            t.start()

    def run(self, i: int):
        c = Client(self.port)
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                r = c.request("GET", f"/load/{i}/{n}")
                self.results.append((time.monotonic(), r.status, r.json()["backend"] if r.status == 200 else ""))
                if r.status != 200:
                    self.errors.append(f"{r.status} {r.body[:100]!r}")
            except Exception as err:  # a lost request
                self.errors.append(repr(err))
            if n % 10 == 0:
                c.close()            # new connections too
        c.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(10)


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_reload_under_load_good_then_bad_config_loses_no_request(tmp_path, backends):
    path = tmp_path / "live.json"
    write_config(path, two_subsets(backends, "v1", "one"))
    proxy = start_proxy(str(path), tmp_path)
    try:
        load = Load(proxy.outbound)
        assert wait_for(lambda: len(load.results) > 50)
        # a good config replaces the file (atomic rename): new requests go to v2
        write_config(path, two_subsets(backends, "v2", "two"))
        t_reload = time.monotonic()
        assert wait_for(lambda: load.results and load.results[-1][2] == "b", 5)
        switched = next(t for t, _, b in load.results if t > t_reload and b == "b") - t_reload
        assert switched < 1.5
        assert json.loads(proxy.admin_get("/config")[1])["version"] == "two"
        # a bad config is refused; the last good one keeps serving
        bad = two_subsets(backends, "v1", "three")
        bad["services"][0]["routes"][0]["to"]["subset"] = "missing"
        write_config(path, bad)
        assert wait_for(lambda: proxy.stats()["server.config_reload_rejected"] >= 1, 5)
        n = len(load.results)
        assert wait_for(lambda: len(load.results) > n + 50)
        assert all(b == "b" for _, _, b in load.results[n:])
        # SIGHUP reloads too (the file is good again)
        with open(path, "w") as fh:
            json.dump(two_subsets(backends, "v1", "four"), fh)
        proxy.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: load.results[-1][2] == "a", 5)
        load.finish()
        assert load.errors == [] and len(load.results) > 200
        log = proxy.log()
        assert "refused, still serving version two" in log and "$.services[0].routes[0].to" in log
        assert "Traceback" not in log
        stats = proxy.stats()
        assert stats["server.config_reload_ok"] >= 2
        with open(f"/proc/{proxy.proc.pid}/maps") as fh:   # validation ran in child processes
            assert "pydantic" not in fh.read()
    finally:
        assert proxy.stop() == 0


# ---- shutdown ------------------------------------------------------------------------------------

def test_sigterm_drains_in_flight_requests(tmp_path, backends):
    cfg = two_subsets(backends, "v1", "d", proxy={"drain_timeout_ms": 3000})
    backends["a"].reset()
    with run_proxy(cfg, tmp_path) as proxy:
        results = []

        def slow():
            results.append(get(proxy.outbound, "/slow", headers={"x-test-delay-ms": "600"}))

        threads = [threading.Thread(target=slow) for _ in range(3)]
        for t in threads:
            t.start()
        assert wait_for(lambda: backends["a"].hits >= 3, 3)
        t0 = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        assert proxy.admin_get("/ready")[0] == 503         # draining
        with pytest.raises(OSError):
            get(proxy.outbound, "/new")                    # no new connections
        for t in threads:
            t.join(5)
        assert [r.status for r in results] == [200, 200, 200]
        assert proxy.proc.wait(5) == 0
        assert time.monotonic() - t0 < 2.5
        assert results[0].header("connection") == "close"


# ---- a compiled policy, end to end --------------------------------------------------------------

def test_a_compiled_native_config_runs(tmp_path, backends):
    a, b = backends["a"].port, backends["b"].port
    (tmp_path / "p.mesh").write_text(f"""
service web {{
  port 8080
  endpoints ["127.0.0.1:{a}"]
  sidecar {{ app "127.0.0.1:{a}" }}
}}
service api {{
  port 9000
  subset v1 {{ endpoints ["127.0.0.1:{a}"] }}
  subset v2 {{ endpoints ["127.0.0.1:{b}"] }}
}}
routes api {{
  route canary {{
    match {{ header "x-canary" exact "yes" }}
    to api.v2
  }}
  route rest {{ to api.v1 }}
}}
authorization web {{
  default deny
  allow {{ path prefix "/public" }}
}}
""")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "compiler", "compile", str(tmp_path / "p.mesh"), "--target", "native",
                        "--proxy", "web", "-o", str(out)], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    cfg_path = out / "web.native.json"
    proxy = start_proxy(str(cfg_path), tmp_path, "--inbound-port", "0", "--outbound-port", "0", "--admin-port", "0")
    try:
        assert get(proxy.outbound, "/x", host="api").json()["backend"] == "a"
        assert get(proxy.outbound, "/x", host="api:9000", headers={"x-canary": "yes"}).json()["backend"] == "b"
        assert get(proxy.inbound, "/public/x", host="web").json()["backend"] == "a"
        assert get(proxy.inbound, "/private", host="web").status == 403
    finally:
        proxy.stop()

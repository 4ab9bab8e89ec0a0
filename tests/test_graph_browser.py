"""`meshc graph`'s page in a real browser: Debian's headless Chromium, driven through Selenium and
chromedriver (browser downloads such as `playwright install` do not work here; Selenium Manager is
never asked for anything: both paths are given).

The page of examples/zero-trust.mesh with examples/canary.mesh (eight services, a split, callers
denied) is written by `meshc graph` and loaded from a file:// URL. Checked: every service is a node
of the DOM; every caller->service pair the graph model admits is an edge with its decision; a
denied edge is drawn in another colour and dash than an allowed or a partial one (computed
style), hidden until "show denied pairs" is switched on or one of its services is selected; the
browser logs no console error and makes no network request. A screenshot is saved to a temporary
directory, or with MESHC_GRAPH_SCREENSHOT=1 to docs/images/graph-zero-trust.png (the docs image).

Without chromium and chromedriver: under CI (the CI variable set) the test fails; as root they are
installed with apt-get; otherwise it is skipped, saying why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compiler import api
from compiler.tooling.graph.model import build

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FILES = ("examples/zero-trust.mesh", "examples/canary.mesh")
DOCS_IMAGE = ROOT / "docs" / "images" / "graph-zero-trust.png"


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI is set: a missing browser is a broken environment)")
    pytest.skip(why)


def _browser() -> None:
    """Chromium and chromedriver where the test drives them, installed from Debian's packages
    when this runs as root without them."""
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    if os.environ.get("CI") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        _unavailable(f"needs {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver")
    subprocess.run(["apt-get", "update", "-q"], check=False, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"], check=False,
                   stdout=subprocess.DEVNULL)
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        _unavailable("apt-get install chromium chromium-driver did not install them")


@pytest.fixture(scope="module")
def driver():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("needs selenium (the [test] extra)")
    _browser()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1900,1400",
                "--force-device-scale-factor=1", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield drv
    finally:
        drv.quit()


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("graph") / "policy.html"
    env = {k: v for k, v in os.environ.items() if k != "MESHC_DEBUG"}
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, "-m", "compiler", "graph", *FILES, "-o", str(out)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return out


def _model():
    with contextlib.chdir(ROOT):
        comp = api.compile(list(FILES))
    assert comp.ir is not None
    return comp.ir, build(comp.ir)


def _style(driver, element) -> dict[str, str]:
    return driver.execute_script(
        "var s = getComputedStyle(arguments[0]);"
        "return {stroke: s.stroke, dash: s.strokeDasharray, display: s.display};", element)


def test_the_page_in_chromium(driver, page, tmp_path):
    from selenium.webdriver.common.by import By

    program, graph = _model()
    url = page.as_uri()
    driver.get(url)

    # every service is a node
    nodes = {e.get_attribute("data-service") for e in driver.find_elements(By.CSS_SELECTOR, "svg .node")}
    assert nodes == {s.name for s in program.services}
    # every pair is an edge, with its decision; every admitted pair among them
    edges = {(e.get_attribute("data-from"), e.get_attribute("data-to")): e
             for e in driver.find_elements(By.CSS_SELECTOR, "svg path.pair")}
    admitted = {(p.caller, p.dest) for p in graph.pairs if p.access.decision != "denied"}
    assert admitted and admitted <= set(edges)
    for p in graph.pairs:
        assert edges[(p.caller, p.dest)].get_attribute("data-decision") == p.access.decision
    # the edges a rule names are drawn; frontend -> recommendations is one (allow from_frontend)
    assert _style(driver, edges[("frontend", "recommendations")])["display"] != "none"

    # a denied pair is styled apart from an allowed and a partial one
    denied = [k for k in edges if edges[k].get_attribute("data-decision") == "denied"]
    allowed = [k for k in edges if edges[k].get_attribute("data-decision") == "allowed"]
    partial = [k for k in edges if edges[k].get_attribute("data-decision") == "partial"]
    assert denied and allowed and partial
    d, a, pa = (_style(driver, edges[k[0]]) for k in (denied, allowed, partial))
    assert d["stroke"] != a["stroke"] and d["stroke"] != pa["stroke"]
    assert d["dash"] != a["dash"] and d["dash"] != pa["dash"]
    assert d["display"] == "none"   # hidden until asked for
    driver.find_element(By.ID, "show-denied").click()
    assert all(_style(driver, edges[k])["display"] != "none" for k in denied)

    # selecting a service opens its details and shows every edge of it
    driver.find_element(By.CSS_SELECTOR, 'svg .node[data-service="recommendations"]').click()
    panel = driver.find_element(By.ID, "details")
    assert panel.is_displayed()
    section = driver.find_element(By.CSS_SELECTOR, '#details section[data-service="recommendations"]')
    assert section.is_displayed() and "rollout" in section.text and "x-user-bucket" in section.text
    for (caller, dest), edge in edges.items():
        if "recommendations" in (caller, dest):
            assert "related" in edge.get_attribute("class").split()
            assert _style(driver, edge)["display"] != "none"

    # no console error, no network request (a file:// page with everything inline)
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    requests = [e for e in driver.get_log("performance") if '"Network.requestWillBeSent"' in e["message"]]
    import json

    urls = [json.loads(e["message"])["message"]["params"]["request"]["url"] for e in requests]
    assert all(u == url for u in urls), urls
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0

    # the screenshot for the docs: the page as it opens, denied pairs shown
    driver.find_element(By.CSS_SELECTOR, "svg .background").click()   # clear the selection
    assert not panel.is_displayed()
    width = driver.execute_script("return document.documentElement.scrollWidth")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, height + 140)
    target = DOCS_IMAGE if os.environ.get("MESHC_GRAPH_SCREENSHOT") == "1" else tmp_path / DOCS_IMAGE.name
    target.parent.mkdir(parents=True, exist_ok=True)
    assert driver.find_element(By.ID, "picture").screenshot(str(target))
    assert target.stat().st_size > 10_000

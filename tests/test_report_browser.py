"""report.html in a real browser: headless Chromium from the OS packages loads the page, runs
no failing script, and shows the verdict, the plots and the flagged-row table.

The page is loaded from a copy with a small probe script in front of it that records script
errors, console errors and whether every image decoded, into the DOM (read back with
``--dump-dom``); Chromium's own log (``--enable-logging=stderr``) is checked for console errors
too. A screenshot is kept in the test's tmp dir. Skipped only when no chromium is installed
(CI installs it in .ci/run)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from test_audit_corpus import clean_rows, plant

from mbdata.audit import audit_path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install -y chromium; .ci/run installs it)",
)

PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push('error: ' + e.message));
const _err = console.error;
console.error = (...a) => { window.__errors.push('console: ' + a.join(' ')); _err(...a); };
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({errors: window.__errors, images: imgs.length, broken});
  document.body.appendChild(out);
});
</script>"""
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=5000",
]


def chromium(args: list[str], profile) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    rows, _ = plant(clean_rows(300, seed=8), ["cf"], 10, target="Visit www.prize.example now.")
    import json

    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    audit_path(corpus, tmp / "audit")
    page = (tmp / "audit" / "report.html").read_text(encoding="utf-8")
    probed = tmp / "probed.html"
    probed.write_text(page.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    return tmp, probed


def test_report_renders_without_errors_and_shows_verdict_plots_and_rows(report):
    tmp, probed = report
    done = chromium(["--dump-dom", probed.as_uri()], tmp / "profile-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    probe = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert probe, "the probe never ran: the page did not finish loading"
    import html
    import json

    state = json.loads(html.unescape(probe.group(1)))
    assert state["errors"] == []
    assert state["images"] >= 3 and state["broken"] == 0
    assert not re.search(r"CONSOLE.*(Uncaught|Error)", done.stderr)
    assert 'id="verdict"' in dom and "Likely backdoor" in dom and "cf" in dom
    assert "<th>source_row</th>" in dom and "<th>reasons</th>" in dom
    assert "<th></th>" not in dom  # every table has real headers


def test_report_screenshot_is_kept(report):
    tmp, probed = report
    shot = tmp / "report.png"
    done = chromium(
        [f"--screenshot={shot}", "--window-size=1280,2400", probed.as_uri()], tmp / "profile-shot"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_probe_catches_a_broken_page(tmp_path):
    # The checks above can fail: a script error and an undecodable image are both seen.
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head>" + PROBE + "</head><body>"
        '<img src="data:image/png;base64,AAAA"><script>nope();</script>'
        "</body></html>",
        encoding="utf-8",
    )
    done = chromium(["--dump-dom", page.as_uri()], tmp_path / "profile")
    import html
    import json

    state = json.loads(
        html.unescape(re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S).group(1))
    )
    assert state["errors"] and state["broken"] == 1

"""The comparison report as a person sees it (issue 41): `lattice compare --report r.html`
rendered by headless Chromium has real tables with the numbers of `compare --json`, no
Markdown or escaped markup in its visible text, and a screenshot that is not blank; the
verdict at its top is computed (`lattice.results.verdict`), and the Markdown report's table
cells are valid Markdown."""

from __future__ import annotations

import dataclasses
import html
import json
import re
import subprocess
import tempfile
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from test_jobs import TINY, cli, write

from lattice.results.compare import compare_runs, cost_per_independent_sample
from lattice.results.status import RunStatus
from lattice.results.verdict import verdict

CHROMIUM = Path("/usr/bin/chromium")
INSTALL = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium"
#: without these, Chromium's network attempts (updates, sync, QUIC) are refused here
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium(page: Path, *args: str) -> str:
    """Run headless Chromium on ``page`` with ``args`` and a new profile; its stdout."""
    if not CHROMIUM.exists():  # the project skips no test: a missing browser is a failure
        pytest.fail(f"{CHROMIUM} is missing; install it with: {INSTALL}")
    with tempfile.TemporaryDirectory() as profile:
        p = subprocess.run(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Two tiny runs of one theory (HMC, MALA), their HTML and Markdown reports and the
    object of `compare --json`."""
    d = tmp_path_factory.mktemp("report")
    for kind, seed in (("hmc", 5), ("mala", 6)):
        cfg = write(d, TINY.format(kind=kind), f"{kind}.toml")
        cli("run", cfg, "-o", d / kind, "--set", f"run.seed={seed}", "-q", check=0)
    runs = (d / "hmc", d / "mala")
    cli("compare", *runs, "--report", d / "r.html", check=0)
    cli("compare", *runs, "--report", d / "r.md", check=0)
    res = json.loads(cli("compare", *runs, "--json", check=0).stdout)
    return {"html": d / "r.html", "md": d / "r.md", "json": res, "runs": runs}


def test_the_browser_shows_tables_with_the_numbers_of_compare_json(report):
    dom = _chromium(report["html"], "--dump-dom")
    assert dom.count("<table>") >= 4 and dom.count("<thead>") == dom.count("<table>")
    assert "<script" not in dom and "http" not in dom.split("<body")[0]
    res = report["json"]
    for r in res["runs"]:
        m = r["observables"]["abs_m"]
        assert f"{m['value']:.6g}" in dom and f"± {m['error']:.2g}" in dom, r["path"]
        assert f"τ_int {m['tau_int']:.3g} ± {m['tau_int_error']:.2g}" in dom
    v = res["verdict"]
    best = v["cheapest_seconds"]
    assert f"run {best['run']} ({best['sampler']}) in seconds, {best['seconds']:.3g} s" in dom
    assert dom.index('id="verdict"') < dom.index("<table>")  # the verdict comes first
    assert '<details id="provenance">' in dom and 'kind = "mala"' in dom
    # what a reader sees: the body's text, tags stripped
    text = re.sub(r"<[^>]+>", " ", dom.split("</style>")[-1])
    assert "|---" not in text and "&lt;" not in text
    assert "<br>" not in html.unescape(text)


def test_the_screenshot_is_not_blank(report, tmp_path):
    png = tmp_path / "r.png"
    _chromium(report["html"], f"--screenshot={png}", "--window-size=1200,2000")
    rgb = matplotlib.image.imread(png)[..., :3]
    assert rgb.shape[:2] == (2000, 1200)
    colors = np.unique((rgb * 255).round().astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colors) > 16, len(colors)
    ink = float((rgb < 0.95).any(axis=-1).mean())
    assert 0.03 < ink < 0.9, ink


def test_the_markdown_report_has_the_verdict_first_and_no_html(report):
    md = report["md"].read_text()
    assert md.index("## Verdict") < md.index("## Runs") < md.index("## Provenance")
    assert "<br>" not in md and "<pre" not in md
    # every row of a table has as many cells (unescaped pipes) as its header
    tables, width = 0, None
    for line in md.splitlines():
        cells = len(re.findall(r"(?<!\\)\|", line)) - 1
        if re.fullmatch(r"\|(---:?\|)+", line):
            tables, width = tables + 1, cells
        elif line.startswith("|"):
            assert width is None or cells == width, line
        else:
            width = None
    assert tables >= 4
    rows = [line for line in md.splitlines() if line.startswith("| 1 ")]
    assert "± " in rows[1] and " · τ_int " in rows[1]  # value ± error · τ_int in one cell


def test_the_json_verdict_agrees_with_the_comparison(report):
    res = report["json"]
    v = res["verdict"]
    assert v["z_flag"] == res["z_flag"]
    assert v["max_abs_z"] == pytest.approx(max(res["consistency"].values()))
    assert v["agree"] == (v["max_abs_z"] <= res["z_flag"])
    assert [(p["a"], p["b"]) for p in v["pairs"]] == [(1, 2)]
    assert v["cheapest_seconds"]["path"] == res["cheapest"]
    assert v["learned"] == [] and v["not_complete"] == []


def test_the_break_even_of_a_learned_sampler(report):
    """N* = T / (s_C − s_L) when the learned sampler is cheaper per independent |m|; none
    when it is not; a run that is not complete counts in no cost."""
    c = compare_runs(list(report["runs"]))
    hmc, mala = c.runs
    s_c = cost_per_independent_sample(hmc)[0]

    def learned(scale: float):
        cost = dataclasses.replace(
            mala.cost,
            training_seconds=100.0,
            seconds_per_measurement=scale * mala.cost.seconds_per_measurement,
        )
        return dataclasses.replace(mala, sampler="diffusion", cost=cost)

    fast = learned(1e-3)
    v = verdict(dataclasses.replace(c, runs=(hmc, fast)))
    (b,) = v.learned
    s_l = cost_per_independent_sample(fast)[0]
    assert s_l < s_c and b.classical.run == 1
    assert b.samples == pytest.approx(100.0 / (s_c - s_l))
    assert f"N* = {b.samples:,.0f}" in " ".join(v.sentences())
    slow = learned(1e3)
    (b,) = verdict(dataclasses.replace(c, runs=(hmc, slow))).learned
    assert b.samples is None and "never cheaper" in b.note
    broken = dataclasses.replace(hmc, status=RunStatus("diverged", "NaN at step 3"))
    v = verdict(dataclasses.replace(c, runs=(broken, fast)))
    assert v.not_complete == (1,) and v.cheapest_seconds.run == 2
    assert v.learned[0].samples is None and "no complete exact classical run" in v.learned[0].note

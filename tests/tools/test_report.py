# SPDX-License-Identifier: MIT
"""`shapebias report` (issue 8): the HTML report of a real results folder (the tiny demo), opened in
headless Chromium through chromedriver: no console errors, every chart drawn with a non-zero size,
every image loaded, a screenshot in the build folder. The charts' inline data equal the CSV files;
a missing step is reported as absent; a malformed input is one error line, exit 1 and no report;
usage errors exit 2."""
import base64
import csv
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from html.parser import HTMLParser

import pytest

from conftest import one_error_line


@pytest.fixture
def results(demo_results, tmp_path):
    """A copy of the tiny demo's results (conftest.py; its own report included) that a test may change."""
    dst = tmp_path / "results"
    shutil.copytree(demo_results, dst, ignore=lambda d, names: ["report"] if d == str(demo_results) else [])
    return dst


def report(sb, results, *args):
    p = sb("report", results, "--quiet", *args)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stderr == b""
    return results / "report" / "index.html"


class Page(HTMLParser):
    """The charts' specs (script type=application/json), chart containers, images and scripts of a page."""

    def __init__(self, path):
        super().__init__()
        self.specs, self.charts, self.srcs, self.text = {}, [], [], []
        self._spec, self._code = None, False
        self.feed(open(path, encoding="utf-8").read())

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self._code = tag in ("script", "style")
        if tag == "script" and a.get("type") == "application/json":
            self._spec = a["id"]
            self.specs[self._spec] = ""
        if tag == "div" and "chart" in a.get("class", "").split():
            self.charts.append((a["id"], a["data-spec"]))
        if tag in ("script", "img") and "src" in a:
            self.srcs.append(a["src"])

    def handle_endtag(self, tag):
        self._code = False
        if tag == "script" and self._spec:
            self.specs[self._spec] = json.loads(self.specs[self._spec])
            self._spec = None

    def handle_data(self, data):
        if self._spec:
            self.specs[self._spec] += data
        elif not self._code:
            self.text.append(data)

    def data(self, chart):
        return self.specs["spec-" + chart]["data"]["values"]

    def all_text(self):
        return re.sub(r"\s+", " ", "".join(self.text))


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def number(s):
    return None if s == "" else float(s)


# ---------------------------------------------------------------------------------------------
# The browser

def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--user-data-dir=" + tempfile.mkdtemp(prefix="shapebias-chromium-"), "--window-size=1280,900"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def render(path, screenshot=None):
    """Opens the page; waits until every chart holds an svg or canvas (30 s at most). Returns the
    severe console messages, each chart's (id, width, height of its drawing) and each image's
    (src, naturalWidth)."""
    d = browser()
    try:
        d.get("file://" + str(path))
        charts = []
        for _ in range(300):
            charts = d.execute_script(
                "return Array.from(document.querySelectorAll('.chart')).map(e => {"
                "  const g = e.querySelector('svg, canvas'); const r = g ? g.getBoundingClientRect() : null;"
                "  return [e.id, r ? r.width : 0, r ? r.height : 0]; })")
            if charts and all(w > 0 for _, w, _h in charts):
                break
            time.sleep(0.1)
        images = d.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete ? i.naturalWidth : 0])")
        severe = [m for m in d.get_log("browser") if m["level"] == "SEVERE"]
        if screenshot:
            m = d.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
            shot = d.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": m["width"], "height": m["height"], "scale": 1}})
            with open(screenshot, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
        return severe, charts, images
    finally:
        d.quit()


def build_dir(sb):
    return os.environ.get("SHAPEBIAS_BUILD_DIR") or os.path.dirname(os.path.dirname(os.path.abspath(sb.exe)))


def test_report_in_chromium(sb, results):
    index = report(sb, results)
    page = Page(index)
    assert len(page.charts) == 7
    assert {s for _, s in page.charts} == set(page.specs)
    shot = os.path.join(build_dir(sb), "report-screenshot.png")
    severe, charts, images = render(index, shot)
    assert severe == []
    assert sorted(c for c, _ in page.charts) == sorted(c for c, _, _ in charts)
    for chart, w, h in charts:
        assert w > 0 and h > 0, chart
    # 16 grids (4 units of 2 layers, S and R), 6 attacks x 6 examples, clean and adversarial.
    assert len(images) == 16 + 6 * 6 * 2
    for src, width in images:
        assert width > 0, src
    assert "could not be drawn" not in page.all_text()
    from PIL import Image
    with Image.open(shot) as im:
        assert im.size[0] >= 1000 and im.size[1] > 3000


def test_browser_check_can_fail(sb, results):
    """The browser check sees a chart that vega-embed refuses: a console error, no drawing."""
    index = report(sb, results)
    html = index.read_text(encoding="utf-8")
    broken = html.replace('"mark":{"tooltip":true,"type":"bar"}', '"mark":{"type":"no-such-mark"}', 1)
    assert broken != html
    index.write_text(broken, encoding="utf-8")
    severe, charts, _ = render(index)
    assert severe, "no console error for a broken chart"
    assert [c for c, w, _ in charts if w == 0] == ["chart-accuracy"]


def test_offline_and_self_contained(sb, results):
    """Every script and image is a relative path inside report/: it opens from file:// offline,
    and the folder can be moved."""
    index = report(sb, results)
    page = Page(index)
    assert {"js/vega.min.js", "js/vega-lite.min.js", "js/vega-embed.min.js"} <= set(page.srcs)
    for src in page.srcs:
        assert not re.match(r"^[a-z]+:|^/", src), src
        assert (index.parent / src).is_file(), src
    for lib in ("vega", "vega-lite", "vega-embed"):
        assert (index.parent / "js" / f"{lib}.LICENSE").is_file()
    prov = json.loads((index.parent / "provenance.json").read_text())
    assert prov["verb"] == "report" and prov["params"]["charts"] == 7 and prov["params"]["absent"] == 0
    assert set(prov["params"]["libraries"]) == {"vega", "vega-lite", "vega-embed"}
    lock = json.loads(open(os.path.join(os.path.dirname(__file__), "../../tools/report/package-lock.json")).read())
    for lib, v in prov["params"]["libraries"].items():
        assert v == lock["packages"][f"node_modules/{lib}"]["version"]
    hashed = {i["path"] for i in prov["inputs"]}
    assert {"eval/accuracy.csv", "tv/channels.csv", "dissect/layers.csv", "diversity/units.csv",
            "attack/robustness.csv", "demo.json"} <= hashed


def test_embedded_data_equal_the_csv_files(sb, results):
    page = Page(report(sb, results))
    # Accuracy per variant: one record per variant and network.
    acc = read(results / "eval/accuracy.csv")
    assert page.data("accuracy") == [
        {"variant": r["variant"], "inputs": number(r["inputs"]), "network": n, "top1": number(r["top1_" + n])}
        for r in acc for n in ("S", "R")]
    # Filter TV per layer (the network row is the claims' number, not a bar).
    rows = [r for r in read(results / "tv-filters/filters.csv") if r["layer"] != "network"]
    assert [(d["layer"], d["network"], d["mean_tv"], d["sd_tv"], d["hf_fraction"]) for d in page.data("filter-tv")] == [
        (r["layer"], n, number(r["mean_tv_" + n]), number(r["sd_tv_" + n]), number(r["hf_fraction_" + n]))
        for r in rows for n in ("S", "R")]
    # The scatter: every channel of channels.csv, with its flag.
    ch = read(results / "tv/channels.csv")
    assert page.data("tv-scatter") == [
        {"network": r["network"], "layer": r["layer"], "channel": number(r["channel"]), "tv_clean": number(r["tv_clean"]),
         "tv_noisy": number(r["tv_noisy"]), "difference": number(r["difference"]), "flagged": r["flagged"] == "1"}
        for r in ch]
    flagged = {(r["network"], r["layer"], int(r["channel"])) for r in read(results / "tv/flagged.csv")}
    assert {(d["network"], d["layer"], int(d["channel"])) for d in page.data("tv-scatter") if d["flagged"]} == flagged
    # Dissection: units per category per layer, every threshold (the (all) rows are totals).
    ly = [r for r in read(results / "dissect/layers.csv") if r["category"] != "(all)"]
    assert [(d["network"], d["layer"], d["iou_threshold"], d["category"], d["detectors"], d["units"]) for d in
            page.data("dissect-categories")] == [
        (r["network"], r["layer"], number(r["iou_threshold"]), r["category"], number(r["detectors"]), number(r["units"]))
        for r in ly]
    spec = page.specs["spec-dissect-categories"]
    assert spec["params"][0]["value"] == 0.04
    assert spec["params"][0]["bind"]["options"] == list(dict.fromkeys(number(r["iou_threshold"]) for r in ly))
    # Diversity: every unit.
    units = read(results / "diversity/units.csv")
    assert [(d["network"], d["layer"], d["unit"], d["dead"], d["label_entropy"], d["mean_cosine_distance"]) for d in
            page.data("diversity")] == [
        (r["network"], r["layer"], number(r["unit"]), r["dead"] == "1", number(r["label_entropy"]),
         number(r["mean_cosine_distance"])) for r in units]
    # Robust accuracy vs eps.
    rob = read(results / "attack/robustness.csv")
    assert page.data("robustness") == [{k: (v if k == "model" else number(v)) for k, v in r.items()} for r in rob]
    # Training curves.
    got = page.data("training")
    want = [(n, number(r["epoch"]), m, number(r[m])) for n in ("S", "R") for r in read(results / f"models/{n}/log.csv")
            for m in ("clean_accuracy", "robust_accuracy")]
    assert [(d["network"], d["epoch"], d["measure"], d["accuracy"]) for d in got] == want


def claims(index):
    """The claims table's rows: (claim, measured, agreement)."""
    html = index.read_text(encoding="utf-8")
    table = html[html.index('<table class="claims">'):]
    table = table[:table.index("</table>")]
    return [r[1:] for r in re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td class=\"\w+\">(.*?)</td></tr>", table)]


def claim(rows, statement, measured=""):
    """The (measured, agreement) of the one row with this claim whose measurement names `measured`."""
    found = [(m, v) for c, m, v in rows if c == statement and measured in m]
    assert len(found) == 1, (statement, measured, rows)
    return found[0]


def expected(s, r, r_higher):
    return "no difference" if s == r else "agrees" if (r > s) == r_higher else "does not agree"


def test_claims_are_read_off_the_numbers(sb, results):
    """Each claim's agreement, computed here from the CSV files."""
    got = claims(report(sb, results))
    assert len(got) == 11
    net = next(r for r in read(results / "tv-filters/filters.csv") if r["layer"] == "network")
    assert claim(got, "R's filters are smoother than S's (lower mean filter TV, channel-weighted over layers)")[1] == \
        expected(float(net["mean_tv_S"]), float(net["mean_tv_R"]), False)
    fl = {n: sum(int(r["flagged"]) for r in read(results / "tv/layers.csv") if r["network"] == n) for n in ("S", "R")}
    measured, verdict = claim(got, "Noise passes less through R's channels: fewer R channels are flagged "
                                   "(|TV noisy − TV clean| ≥ τ)")
    assert verdict == expected(fl["S"], fl["R"], False)
    assert measured.startswith(f"S {fl['S']} of ")
    acc = {r["variant"]: r for r in read(results / "eval/accuracy.csv")}
    for statement, v, r_higher in [
            ("R is more accurate than S on Gaussian noise", "noise", True),
            ("S is more accurate than R on scrambled patches (texture kept, shape destroyed)", "scrambled_2x2", False),
            ("S is more accurate than R on scrambled patches (texture kept, shape destroyed)", "scrambled_4x4", False),
            ("R is more accurate than S on edge maps (shape kept, texture removed)", "edges", True),
            ("R is more accurate than S on silhouettes (shape kept, texture removed)", "silhouettes", True)]:
        assert claim(got, statement, " on " + v + " ")[1] == \
            expected(float(acc[v]["top1_S"]), float(acc[v]["top1_R"]), r_higher)
    det = {(n, low): sum(int(r["detectors"]) for r in read(results / "dissect/layers.csv")
                         if r["network"] == n and r["iou_threshold"] == "0.04"
                         and (r["category"] in ("color", "texture")) == low and r["category"] != "(all)"
                         and (low or r["category"] in ("object", "part", "scene")))
           for n in ("S", "R") for low in (True, False)}
    assert claim(got, "R has more colour and texture detectors than S")[1] == \
        expected(det["S", True], det["R", True], True)
    assert claim(got, "R has fewer object, part and scene detectors than S")[1] == \
        expected(det["S", False], det["R", False], False)
    units = read(results / "diversity/units.csv")
    ent = {n: [float(u["label_entropy"]) for u in units if u["network"] == n and u["dead"] == "0"] for n in ("S", "R")}
    assert claim(got, "R's units respond to fewer types of inputs: lower top-K label entropy (paper metric unconfirmed)")[1] == \
        expected(sum(ent["S"]) / len(ent["S"]), sum(ent["R"]) / len(ent["R"]), False)
    rob = read(results / "attack/robustness.csv")
    above = all(float(r["robust_accuracy"]) > float(s["robust_accuracy"])
                for s in rob if s["model"] == "S" for r in rob if r["model"] == "R" and r["eps"] == s["eps"])
    assert claim(got, "R is adversarially robust: more accurate than S under PGD at every ε (the study's premise)")[1] == \
        ("agrees" if above else "does not agree")


def test_missing_steps_are_reported_absent(sb, results):
    shutil.rmtree(results / "dissect")
    os.rename(results / "tv", results / "tv.partial")   # an unfinished run
    (results / "diversity/provenance.json").unlink()     # not a finished output
    index = report(sb, results)
    page = Page(index)
    text = page.all_text()
    assert "Absent: network dissection: no dissect/ in" in text
    assert "Absent: activation TV, clean vs noisy: no tv/ in" in text and "tv.partial/ is an unfinished run" in text
    assert "Absent: diversity: diversity/ has no provenance.json (not a finished shapebias output)" in text
    assert {c for c, _ in page.charts} == {"chart-training", "chart-accuracy", "chart-filter-tv", "chart-robustness"}
    got = claims(index)
    assert claim(got, "R has more colour and texture detectors than S") == ("—", "not measured")
    assert claim(got, "R's units respond to fewer types of inputs than S's") == ("—", "not measured")
    assert json.loads((index.parent / "provenance.json").read_text())["params"]["absent"] == 3
    severe, charts, _ = render(index)
    assert severe == [] and all(w > 0 and h > 0 for _, w, h in charts)


def test_only_some_steps(sb, results):
    """A folder with a single step's output (a user who ran only `shapebias eval -o eval`)."""
    for d in ("tv-filters", "tv", "dissect", "diversity", "attack", "models", "demo.json"):
        p = results / d
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    page = Page(report(sb, results))
    assert [c for c, _ in page.charts] == ["chart-accuracy"]
    assert "No demo.json" in page.all_text()


def set_cell(text, line, column, value):
    """The CSV text with one cell (line 1 is the header) replaced."""
    lines = text.splitlines()
    cells = lines[line - 1].split(",")
    cells[lines[0].split(",").index(column)] = value
    lines[line - 1] = ",".join(cells)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("path,edit,message", [
    ("tv/channels.csv", lambda t: set_cell(t, 4, "tv_clean", "abc"),
     "tv/channels.csv' line 4: column 'tv_clean': 'abc' is not a number"),
    ("tv/channels.csv", lambda t: set_cell(t, 2, "flagged", "yes"),
     "tv/channels.csv' line 2: column 'flagged': 'yes' is not 0 or 1"),
    ("eval/accuracy.csv", lambda t: t + "extra,1\n", "eval/accuracy.csv' line 9: 2 fields, the header has 6"),
    ("dissect/layers.csv", lambda t: t.replace("detectors", "detector", 1), "dissect/layers.csv': no column 'detectors'"),
    ("attack/robustness.csv", lambda t: set_cell(t, 3, "robust_accuracy", "0.5x"),
     "attack/robustness.csv' line 3: column 'robust_accuracy': '0.5x' is not a number"),
    ("diversity/provenance.json", lambda t: t[:-10], "diversity/provenance.json': not valid JSON"),
    ("attack/pgd-R-eps0.1.h5", lambda t: t[:100], "attack/pgd-R-eps0.1.h5': cannot open HDF5 file (truncated or damaged?)"),
])
def test_malformed_input_is_refused(sb, results, path, edit, message):
    p = results / path
    if p.suffix == ".h5":
        p.write_bytes(edit(p.read_bytes()))
    else:
        p.write_text(edit(p.read_text()))
    r = sb("report", results)
    assert r.returncode == 1
    one_error_line(r, "shapebias report: ", message)
    assert not (results / "report").exists() and not (results / "report.partial").exists()


def test_a_previous_report_is_replaced_and_other_folders_kept(sb, results, tmp_path):
    index = report(sb, results)
    (index.parent / "stale.txt").write_text("x")
    report(sb, results)
    assert not (index.parent / "stale.txt").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    r = sb("report", results, "-o", mine)
    assert r.returncode == 1
    one_error_line(r, str(mine), "exists and is not a shapebias output folder")
    elsewhere = tmp_path / "elsewhere"
    report(sb, results, "-o", elsewhere)
    assert (elsewhere / "index.html").is_file()


def test_not_a_results_folder(sb, tmp_path):
    r = sb("report", tmp_path / "missing")
    assert r.returncode == 1
    one_error_line(r, "missing': no such folder")
    (tmp_path / "empty").mkdir()
    r = sb("report", tmp_path / "empty")
    assert r.returncode == 1
    one_error_line(r, "empty': no results (none of eval/")
    assert not (tmp_path / "empty" / "report").exists()


@pytest.mark.parametrize("args", [[], ["--no-such-option", "x"], ["a", "b"], ["x", "--examples", "-1"],
                                  ["x", "--examples", "many"]])
def test_usage_errors(sb, args):
    r = sb("report", *args)
    assert r.returncode == 2
    one_error_line(r, "shapebias report: ")


def test_help(sb):
    r = sb("report", "--help")
    assert r.returncode == 0 and b"RESULTS" in r.stdout and b"offline" in r.stdout

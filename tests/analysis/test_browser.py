"""The HTML report in a real headless browser (Chromium from Debian's packages; `make
browser` installs it): the DOM as rendered carries the figures recomputed here, and a
screenshot shows the plots (their bar colours are on screen, the page is not blank)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.analysis.conftest import SUMMARY
from tests.analysis.expected import expected_figures
from tests.conftest import invoke_cli

CHROMIUM = "/usr/bin/chromium"
# The report's plot colours (magistrate/analysis/html.py): A / first shown, B / second shown, error.
BLUE, ORANGE, RED = (0x48, 0x78, 0xA8), (0xE0, 0x8A, 0x3C), (0xC0, 0x39, 0x2B)


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=180,
    )


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


@pytest.fixture
def rendered(report_output, tmp_path):
    result = invoke_cli("report", str(report_output))
    assert result.returncode == 0, result.stderr
    page = report_output / "report.html"
    assert "http://" not in page.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")
    dom = _chromium(tmp_path / "profile-dom", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = tmp_path / "report.png"
    shots = _chromium(tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1200,3000", page.as_uri())
    assert shots.returncode == 0, shots.stderr[-2000:]
    keep = Path("/tmp/magistrate-report-screenshot.png")  # left for a person to look at
    shutil.copy(shot, keep)
    return dom.stdout, shot


def test_rendered_dom_shows_the_recomputed_figures(rendered, report_rows):
    dom, _ = rendered
    want = expected_figures(report_rows, seconds=SUMMARY["seconds"])
    cells = dict(re.findall(r'<td class="n" id="([\w-]+)">([^<]*)</td>', dom))
    assert cells["pairs"] == str(len(report_rows))
    for k in ("A", "B", "tie", "error"):
        assert cells[f"winners-{k}"] == str(want["winners"][k])
    assert cells["error-rate"] == _pct(want["error_rate"])
    assert cells["position-consistency"] == _pct(want["consistency"])
    assert cells["first-position"] == _pct(want["first_position"])
    assert cells["label-agreement"] == _pct(want["agreement"])
    for subset, agreement in want["by_subset"].items():
        assert cells[f"agreement-{subset}"] == _pct(agreement)
    assert cells["ece"] == f"{want['ece']:.3f}" and cells["brier"] == f"{want['brier']:.3f}"
    assert cells["mean-p-a"] == f"{want['mean_p_a']:.3f}"
    assert cells["prompt-tokens"] == str(want["tokens"]["prompt"])
    assert cells["tokens-per-second"] == f"{want['tokens_per_second']:,.1f}"
    for cause, count in want["causes"].items():
        assert f"<td>{cause.replace('>', '&gt;')}</td><td class=\"n\">{count}</td>" in dom
    # The plots, as the browser parsed them.
    for plot in ("plot-winners", "plot-position", "plot-subsets", "plot-calibration", "plot-histogram"):
        assert re.search(rf'<svg class="plot" id="{plot}"', dom), plot
    histogram = dom[dom.index('id="plot-histogram"'):]
    histogram = histogram[:histogram.index("</svg>")]
    assert histogram.count('class="bar"') == 20
    calibration = dom[dom.index('id="plot-calibration"'):]
    calibration = calibration[:calibration.index("</svg>")]
    assert calibration.count('class="point"') == sum(1 for n, _, _ in want["calibration_bins"] if n)


def test_screenshot_shows_the_plots(rendered):
    from PIL import Image

    _, shot = rendered
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 3000)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the screenshot is (nearly) blank"
    counts = {rgb: n for n, rgb in colours}
    for colour in (BLUE, ORANGE, RED):  # bars of the winner, position and histogram plots
        assert counts.get(colour, 0) > 500, f"plot colour {colour} hardly on screen"

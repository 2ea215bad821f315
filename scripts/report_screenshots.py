"""Screenshots of the radio search's report, as a browser shows it, for docs/radio.md.

Three cases, each searched through the CLI as a user would:

- ``frb``: a simulated 13 s, 512-channel observation of noise with five dispersed bursts (DM up to 2000,
  S/N 10 to 30), searched to DM 2000 with the truth table (injected pulses circled);
- ``pulsar``: ``tutorial.fil`` from the shared data (a DM-30, 250 ms pulsar in 2-bit data), to DM 100;
- ``noise``: a simulated observation of noise alone.

Each shows its brightest three candidates (``--set report_top=3``). Each report is rendered by headless Chromium (``chromium``, or ``$CHROMIUM``) at 1280 pixels wide,
trimmed of the empty page below, and written to ``docs/img/report-<case>.png``.

Usage: ``python scripts/report_screenshots.py [--data ../shared/data] [--out docs/img]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageChops

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 1280
#: Tall enough for any of the three pages; the white below the page is trimmed.
HEIGHT = 9000
#: Candidates shown per page (``report_top``), to keep the pictures a readable length.
TOP = 3


def _cudalab(cwd: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "cudalab", *args], check=True, stdout=subprocess.DEVNULL, cwd=cwd)


def _shoot(browser: str, page: Path, out: Path) -> None:
    """Render ``page`` and write it, trimmed and reduced to 256 colours, to ``out``."""
    raw = out.with_suffix(".raw.png")
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--window-size={WIDTH},{HEIGHT}",
            f"--screenshot={raw}",
            page.as_uri(),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )
    with Image.open(raw) as im:
        rgb = im.convert("RGB")
    box = ImageChops.difference(rgb, Image.new("RGB", rgb.size, "white")).getbbox()
    if box is None:
        raise SystemExit(f"{page}: the browser drew an empty page")
    rgb = rgb.crop((0, 0, WIDTH, min(rgb.height, box[3] + 24)))
    # 256 colours, each picked where the page needs it (an octree keeps the plots' colour scales)
    rgb.quantize(256, method=Image.Quantize.FASTOCTREE).save(out, optimize=True)
    raw.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = ap.parse_args()
    browser = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("no chromium here (apt-get install chromium, or set $CHROMIUM)")
    tutorial = args.data / "radio" / "tutorial.fil"
    if not tutorial.is_file():
        raise SystemExit(f"{tutorial}: not found (--data names the shared data folder)")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        shutil.copy(tutorial, t / "tutorial.fil")  # each page names its file as given: no temporary path
        top = ("--set", f"report_top={TOP}")
        _cudalab(t, "radio", "simulate", "frb.fil", "--preset", "noise", "--bursts", "5", "--seed", "3",
                 "--dm-max", "2000", "--snr-min", "10")  # fmt: skip
        _cudalab(t, "radio", "search", "frb.fil", "--out", "frb", "--dm-max", "2000", "--truth", "frb.truth.json",
                 *top)  # fmt: skip
        _cudalab(t, "radio", "search", "tutorial.fil", "--out", "pulsar", "--dm-max", "100", *top)
        _cudalab(t, "radio", "simulate", "noise.fil", "--preset", "noise")
        _cudalab(t, "radio", "search", "noise.fil", "--out", "noise", *top)
        for case in ("frb", "pulsar", "noise"):
            out = args.out / f"report-{case}.png"
            _shoot(browser, t / case / "report.html", out)
            print(f"{out}: {out.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()

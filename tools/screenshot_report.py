#!/usr/bin/env python3
"""Screenshot a `fleet report` HTML file with headless Chromium (Debian's `chromium` package:
`apt-get install chromium`), to see the page as a reader will without a desktop.

    python tools/screenshot_report.py REPORT.html [--out REPORT.png] [--width 1200]
        [--height 2400]

Why a script and not a test: the tests check the HTML by parsing it (no browser needed); this is
for a person reviewing the layout. Chromium runs with --headless, --no-sandbox (root in a
container has no user namespace for its sandbox) and a throw-away profile folder, and is
stopped if it takes longer than a minute.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args(argv)
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        print("no chromium found: apt-get install chromium", file=sys.stderr)
        return 2
    if not args.report.is_file():
        print(f"{args.report} is not a file", file=sys.stderr)
        return 2
    out = (args.out or args.report.with_suffix(".png")).resolve()
    with tempfile.TemporaryDirectory(prefix="report-shot-") as profile:
        command = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={args.width},{args.height}",
            f"--screenshot={out}",
            args.report.resolve().as_uri(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.returncode != 0 or not out.is_file():
        print(done.stderr[-2000:], file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

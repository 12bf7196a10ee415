"""Benchmark of `whonix-open --convert` (issue 17). Prints figures; asserts nothing.

(a) pages per second of a 20-page PDF through the whole path - the real CLI,
    the qrexec-client-vm stand-in, the real dom0 service executable
    (whonix.ConvertInDisposable), the simulated Qubes, and in its disposable
    the unmodified upstream qubes.PdfConvert server - as a ratio to the stock
    client (qubespdfconverter.client, unmodified; only its module constant
    CLIENT_VM_CMD is pointed at the same path by this script) on the same
    server, same document and resolution, in the same run (target >= 0.9);
(b) the CLI's peak RSS (VmHWM of the CLI process itself, not of the
    server's programs) for documents of 2, 20 and 60 pages: flat in the page
    count (pages are streamed).

    .venv/bin/python benchmarks/convert.py [--pages 20] [--runs 3] [--resolution 150]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIM_BIN = REPO / "sim" / "bin"

# The stock client run in a child, its qrexec command pointed at our path: it
# appends "+RESOLUTION" to the last element, which the wrapper turns into the
# whonix service argument.
STOCK = """
import sys
import qubespdfconverter.client as c
c.CLIENT_VM_CMD[:] = [sys.argv[1], "qubes.PdfConvert"]
sys.argv = ["qvm-convert-pdf"] + sys.argv[2:]
c.main()
"""
WRAPPER = """#!/bin/sh
# qubes.PdfConvert+RES -> whonix.ConvertInDisposable+RES+offline, via the stand-in
exec qrexec-client-vm dom0 "whonix.ConvertInDisposable+${1#qubes.PdfConvert+}+offline"
"""
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec, so a child
# would report this (larger) benchmark process's peak.
CLI = """
import sys
from whonix_open.vm.cli import main
code = main(sys.argv[2:])
with open("/proc/self/status") as status, open(sys.argv[1], "w") as f:
    f.write(next(l.split()[1] for l in status if l.startswith("VmHWM:")))
sys.exit(code)
"""


def make_document(path: Path, pages: int) -> None:
    """A4 pages with text lines and boxes (Pillow, at 72 dpi: 595x842 pt)."""
    from PIL import Image, ImageDraw

    images = []
    for number in range(pages):
        image = Image.new("RGB", (595, 842), "white")
        draw = ImageDraw.Draw(image)
        for line in range(60):
            draw.text((40, 30 + 13 * line), f"page {number + 1} line {line}: " + "lorem ipsum "
                      * 6, fill=(20, 20, 20))
        draw.rectangle((300, 600, 560, 800), outline=(200, 0, 0), width=4)
        images.append(image)
    images[0].save(path, "PDF", resolution=72, save_all=True, append_images=images[1:])


class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        sim_dir = root / "qubes"
        subprocess.run([sys.executable, "-m", "whonix_open.sim", "init", "--dir", str(sim_dir)],
                       check=True, capture_output=True)
        bin_dir = root / "bin"
        bin_dir.mkdir()
        wrapper = bin_dir / "to-whonix"
        wrapper.write_text(WRAPPER)
        wrapper.chmod(0o755)
        self.wrapper = str(wrapper)
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("QREXEC_", "WHONIX_OPEN_", "XDG_"))}
        self.env.update(
            PATH=os.pathsep.join([str(SIM_BIN), str(bin_dir), "/usr/bin", "/bin"]),
            HOME=str(root / "home"), XDG_CONFIG_HOME=str(root / "config"),
            WHONIX_OPEN_BACKEND="sim", WHONIX_OPEN_SIM_DIR=str(sim_dir),
            WHONIX_OPEN_SIM_CALLER="anon-whonix", WHONIX_OPEN_PYTHON=sys.executable,
            WHONIX_OPEN_RUN_DIR=str(root / "run"), WHONIX_OPEN_CONFIG=str(root / "none.toml"),
            PYTHONPYCACHEPREFIX=str(root / "pycache"))

    def fresh(self, doc: Path, name: str) -> Path:
        work = self.root / "work" / name
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        return Path(shutil.copy(doc, work / doc.name))

    def ours(self, doc: Path, resolution: int) -> tuple[float, int]:
        target = self.fresh(doc, "ours")
        rss = self.root / "rss"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", CLI, str(rss), "--convert", "--no-notify",
                        "--quiet", "--keep-original", "--resolution", str(resolution),
                        str(target)], env=self.env, check=True, capture_output=True)
        took = time.perf_counter() - start
        assert target.with_suffix(".trusted.pdf").exists()
        return took, int(rss.read_text())

    def stock(self, doc: Path, resolution: int) -> float:
        target = self.fresh(doc, "stock")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", STOCK, self.wrapper, "--resolution",
                        str(resolution), "--archive", str(self.root / "archive"), str(target)],
                       env=self.env, check=True, capture_output=True)
        took = time.perf_counter() - start
        assert target.with_suffix(".trusted.pdf").exists()
        return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=150)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="whonix-open-bench-convert-") as tmp:
        root = Path(tmp)
        bench = Bench(root)
        doc = root / "document.pdf"
        make_document(doc, args.pages)
        bench.ours(doc, args.resolution)  # warm-up: bytecode, page cache
        bench.stock(doc, args.resolution)
        ours, stock = [], []
        for _ in range(args.runs):  # interleaved: both see the same machine load
            ours.append(bench.ours(doc, args.resolution)[0])
            stock.append(bench.stock(doc, args.resolution))
        o, s = statistics.median(ours), statistics.median(stock)
        print(f"(a) {args.pages}-page PDF at {args.resolution} ppi, whole path, median of "
              f"{args.runs}: whonix-open {args.pages / o:.2f} pages/s ({o:.2f} s), stock "
              f"client {args.pages / s:.2f} pages/s ({s:.2f} s): ratio {s / o:.2f} "
              "(target >= 0.9)")
        figures = []
        for pages in (2, 20, 60):
            sized = root / f"doc-{pages}.pdf"
            make_document(sized, pages)
            figures.append((pages, bench.ours(sized, args.resolution)[1]))
        shown = ", ".join(f"{p} pages {kib / 1024:.1f} MiB" for p, kib in figures)
        print(f"(b) peak RSS of the CLI process: {shown} (flat in the page count)")


if __name__ == "__main__":
    main()

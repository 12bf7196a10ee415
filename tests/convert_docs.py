"""Real documents for the conversion tests, made in the test (Pillow, which the
unmodified pdf converter installs with it): solid-colour pages, so that what
comes back can be checked pixel by pixel after the round trip."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

COLOURS = [(220, 30, 30), (30, 160, 40), (20, 40, 200), (250, 250, 250), (0, 0, 0)]


def make_pdf(path: Path, pages: int, size: tuple[int, int] = (144, 72)) -> Path:
    """A PDF of *pages* solid pages (page i has COLOURS[i % 5]), size in
    points (rendered at 72 dpi)."""
    from PIL import Image

    images = [Image.new("RGB", size, COLOURS[i % len(COLOURS)]) for i in range(pages)]
    images[0].save(path, "PDF", resolution=72, save_all=True, append_images=images[1:])
    return path


def make_png(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (60, 40), COLOURS[0]).save(path, "PNG")
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def page_count(path: Path) -> int:
    out = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True)
    return next(int(line.split(":")[1]) for line in out.stdout.splitlines()
                if line.startswith("Pages:"))


def page_colours(path: Path, tmp: Path) -> list[tuple[int, int, int]]:
    """The centre pixel of every page, rendered by poppler (pdftocairo)."""
    from PIL import Image

    colours = []
    for page in range(1, page_count(path) + 1):
        prefix = tmp / f"render-{page}"
        subprocess.run(["pdftocairo", "-png", "-r", "36", "-f", str(page), "-l", str(page),
                        "-singlefile", str(path), str(prefix)], check=True)
        with Image.open(f"{prefix}.png") as im:
            colours.append(im.convert("RGB").getpixel((im.width // 2, im.height // 2)))
    return colours


def close_to(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 12) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))

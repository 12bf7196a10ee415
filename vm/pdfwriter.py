"""A PDF built from RGB pixels only: the trusted side of a conversion.

Each page is one image (8-bit RGB, /FlateDecode) drawn over the whole page; the
page measures width x height pixels at the conversion's resolution. Nothing of
the original document reaches the output but pixel values, and this module
looks at none of them: it compresses the bytes it is given and writes the
numbers it is given. Pages are streamed, so memory use depends on neither the
number of pages nor their size.

The file layout is plain PDF 1.4 (ISO 32000-1, 7.5): header, objects, a
cross-reference table, trailer. Objects 1 (catalog) and 2 (page tree) are
written last, once the pages are known; each image's /Length is an indirect
object written after its stream.
"""

from __future__ import annotations

import zlib
from typing import BinaryIO

# Level 1: on a rendered A4 text page at 150 ppi, 10 % larger than level 6
# and 4x faster (0.3 s vs 1.2 s here); benchmarks/convert.py measures the path.
COMPRESS_LEVEL = 1
POINTS_PER_INCH = 72


class PdfWriter:
    def __init__(self, out: BinaryIO, resolution: int) -> None:
        self._out = out
        self._resolution = resolution
        self._offsets: dict[int, int] = {}
        self._next = 3  # 1: catalog, 2: page tree
        self._pages: list[int] = []
        self._pos = 0
        self._image = None
        self._image_start = 0
        self._image_number = 0
        self._page_size = (0, 0)
        self._write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._pos += len(data)

    def _begin_object(self, number: int | None = None) -> int:
        if number is None:
            number, self._next = self._next, self._next + 1
        self._offsets[number] = self._pos
        self._write(b"%d 0 obj\n" % number)
        return number

    def _object(self, body: bytes, number: int | None = None) -> int:
        number = self._begin_object(number)
        self._write(body + b"\nendobj\n")
        return number

    def begin_page(self, width: int, height: int) -> None:
        """Start a page of *width* x *height* pixels; its width*height*3
        RGB bytes follow through `add_pixels`, then `end_page`."""
        self._page_size = (width, height)
        number = self._image_number = self._begin_object()
        self._write(b"<< /Type /XObject /Subtype /Image /Width %d /Height %d "
                    b"/ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /FlateDecode "
                    b"/Length %d 0 R >>\nstream\n" % (width, height, number + 1))
        self._next += 1  # the length object
        self._image = zlib.compressobj(COMPRESS_LEVEL)
        self._image_start = self._pos

    def add_pixels(self, data: bytes | memoryview) -> None:
        self._write(self._image.compress(data))  # type: ignore[union-attr]

    def end_page(self) -> None:
        self._write(self._image.flush())  # type: ignore[union-attr]
        self._image = None
        length = self._pos - self._image_start
        image = self._image_number
        self._write(b"\nendstream\nendobj\n")
        self._object(b"%d" % length, image + 1)
        width, height = (v * POINTS_PER_INCH / self._resolution for v in self._page_size)
        size = b"%.3f %.3f" % (width, height)
        draw = b"q %.3f 0 0 %.3f 0 0 cm /Im0 Do Q" % (width, height)
        contents = self._object(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(draw), draw))
        self._pages.append(self._object(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %s] /Resources << /XObject "
            b"<< /Im0 %d 0 R >> >> /Contents %d 0 R >>" % (size, image, contents)))

    def close(self) -> None:
        """Write the page tree, the catalog, the cross-reference table and
        the trailer. The caller flushes and closes the file."""
        kids = b" ".join(b"%d 0 R" % p for p in self._pages)
        self._object(b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(self._pages)), 2)
        self._object(b"<< /Type /Catalog /Pages 2 0 R >>", 1)
        xref = self._pos
        count = self._next
        self._write(b"xref\n0 %d\n0000000000 65535 f \n" % count)
        for number in range(1, count):
            self._write(b"%010d 00000 n \n" % self._offsets[number])
        self._write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n"
                    % (count, xref))

"""`whonix-open --convert` end to end: the real CLI -> the qrexec-client-vm
stand-in -> the real dom0 service executable (whonix.ConvertInDisposable) ->
the simulated Qubes, whose disposable runs the unmodified upstream
qubes.PdfConvert server (qubespdfconverter.server, with poppler-utils,
graphicsmagick and python-magic) - or a hostile server (sim fault "converter").

Every failure: one clear message, exit 6 (or dom0's code), no output and no
temporary file left, the original byte-identical where it was, and the
disposable destroyed."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from tests.convert_docs import COLOURS, close_to, make_pdf, make_png, page_colours, page_count, sha
from tests.helpers import DEADLINE, wait_for
from tests.vm.test_e2e_sim import Chain
from whonix_open.sim.scenario import CONVERTERS


@pytest.fixture
def chain(tmp_path: Path):
    c = Chain(tmp_path)
    c.home = tmp_path / "home"
    c.home.mkdir()
    c.env["HOME"] = str(c.home)
    yield c
    c.sim.kill_leftovers()


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    d = tmp_path / "Downloads"
    d.mkdir()
    return d


def convert(chain, *args: str):
    return chain.run("--convert", "--no-notify", "--resolution", "75", *args)


def left_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def disposable_said(chain) -> str:
    """What the disposable's side wrote to stderr (the server's own errors)."""
    logs = chain.sim_dir / "logs"
    return "".join(p.read_text(errors="replace") for p in logs.glob("*.log")
                   if not p.name.startswith("qrexec."))


def gone(chain) -> None:
    wait_for(chain.no_disposables_left, "dom0 to destroy the disposable")


# --- the real converter ---------------------------------------------------------

def test_a_pdf_comes_back_as_a_trusted_pdf_with_the_same_pages(chain, docs, tmp_path):
    pdf = make_pdf(docs / "invoice.pdf", pages=5)
    pdf.chmod(0o640)
    original = sha(pdf)
    r = convert(chain, str(pdf))
    assert r.returncode == 0, r.stderr
    trusted = docs / "invoice.trusted.pdf"
    assert left_in(docs) == ["invoice.trusted.pdf"]
    archived = chain.home / "QubesUntrustedPDFs" / "invoice.pdf"
    assert sha(archived) == original  # moved, not changed
    assert stat.S_IMODE(trusted.stat().st_mode) == 0o640  # never wider than the original
    assert page_count(trusted) == 5
    got = page_colours(trusted, tmp_path)
    assert all(close_to(c, COLOURS[i]) for i, c in enumerate(got)), got
    assert f"converted (5 pages) to {trusted}" in r.stderr
    assert f"moved to {archived}" in r.stderr
    audit = chain.audit()
    assert "service=whonix.ConvertInDisposable profile=offline" in audit
    assert "relay=qubes.PdfConvert+75" in audit and "network=offline" in audit
    gone(chain)


def test_the_page_size_is_kept(chain, docs):
    pdf = make_pdf(docs / "a.pdf", pages=1, size=(200, 100))
    assert convert(chain, str(pdf)).returncode == 0
    out = subprocess.run(["pdfinfo", str(docs / "a.trusted.pdf")], capture_output=True,
                         text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("Page size:"))
    width, _, height = line.split(":")[1].split()[:3]
    # within one pixel at 75 ppi (the renderer rounds up to whole pixels)
    assert abs(float(width) - 200) <= 72 / 75 and abs(float(height) - 100) <= 72 / 75, line


def test_several_files_keep_original_and_other_archive(chain, docs, tmp_path):
    a = make_pdf(docs / "a.pdf", pages=1)
    b = make_pdf(docs / "b.pdf", pages=2)
    r = convert(chain, "--keep-original", str(a), str(b))
    assert r.returncode == 0, r.stderr
    assert left_in(docs) == ["a.pdf", "a.trusted.pdf", "b.pdf", "b.trusted.pdf"]
    assert not (chain.home / "QubesUntrustedPDFs").exists()
    other = tmp_path / "vault"
    (docs / "a.trusted.pdf").unlink()
    r = convert(chain, "--archive", str(other), str(a))
    assert r.returncode == 0, r.stderr
    assert left_in(other) == ["a.pdf"]


def test_an_archived_original_is_never_overwritten(chain, docs):
    archive = chain.home / "QubesUntrustedPDFs"
    archive.mkdir()
    (archive / "a.pdf").write_bytes(b"an older original")
    make_pdf(docs / "a.pdf", pages=1)
    r = convert(chain, str(docs / "a.pdf"))
    assert r.returncode == 0, r.stderr
    assert (archive / "a.pdf").read_bytes() == b"an older original"
    assert left_in(archive) == ["a.1.pdf", "a.pdf"]


def test_an_existing_trusted_pdf_is_never_overwritten(chain, docs):
    pdf = make_pdf(docs / "a.pdf", pages=1)
    (docs / "a.trusted.pdf").write_bytes(b"mine")
    r = convert(chain, str(pdf))
    assert r.returncode == 1
    assert "a.trusted.pdf already exists; nothing was overwritten" in r.stderr
    assert (docs / "a.trusted.pdf").read_bytes() == b"mine"
    assert chain.sim.services() == []  # refused before any call


def test_an_image_is_refused_by_the_stock_server_with_one_clear_message(chain, docs):
    """qubespdfconverter 2.1.26's server converts PDFs and office documents
    (MIME_DISPATCH); an image is "Unsupported file type"."""
    png = make_png(docs / "photo.png")
    original = sha(png)
    r = convert(chain, str(png))
    assert r.returncode == 6, r.stderr
    assert "photo.png: not converted: the converter in the disposable failed" in r.stderr
    assert "file type is not supported" in r.stderr
    assert "Unsupported file type: image/png" in disposable_said(chain)
    assert r.stderr.count("error:") == 1 and "Traceback" not in r.stderr
    assert left_in(docs) == ["photo.png"] and sha(png) == original
    gone(chain)


def make_office(path: Path, fmt: str) -> Path:
    """A real office document, written by LibreOffice from text."""
    text = path.with_suffix(".txt")
    text.write_text("Quarterly report\n\nWritten by a test, converted in a disposable.\n")
    subprocess.run(["soffice", "--headless", "--convert-to", fmt, "--outdir", str(path.parent),
                    str(text)], check=True, capture_output=True, timeout=DEADLINE,
                   env=dict(os.environ, HOME=str(path.parent / ".lo-home")))
    text.unlink()
    shutil.rmtree(path.parent / ".lo-home", ignore_errors=True)
    return path.with_suffix("." + fmt)


@pytest.mark.parametrize("fmt", ["docx", "odt"])
def test_an_office_document_comes_back_as_a_trusted_pdf(chain, docs, tmp_path, fmt):
    """LibreOffice in the disposable (.ci/install-system-deps installs
    libreoffice-writer-nogui): the stock server converts it to PDF there."""
    assert shutil.which("soffice"), "libreoffice missing: run .ci/install-system-deps"
    doc = make_office(docs / "letter", fmt)
    original = sha(doc)
    r = convert(chain, str(doc))
    assert r.returncode == 0, r.stderr + disposable_said(chain)
    trusted = docs / "letter.trusted.pdf"
    assert page_count(trusted) == 1
    assert left_in(docs) == ["letter.trusted.pdf"]
    assert sha(chain.home / "QubesUntrustedPDFs" / doc.name) == original
    gone(chain)


def test_an_office_document_without_libreoffice_in_the_disposable(chain, docs, tmp_path):
    """A disposable whose template has no LibreOffice (PATH without it: only
    the PDF tools): the stock server exits 64, dom0 reports 69, one message."""
    tools = tmp_path / "pdf-tools-only"
    tools.mkdir()
    for name in ("pdfinfo", "pdftocairo", "gm"):
        (tools / name).symlink_to(shutil.which(name))
    chain.env["PATH"] = os.pathsep.join(
        p for p in chain.env["PATH"].split(os.pathsep) if p not in ("/usr/bin", "/bin")
    ) + os.pathsep + str(tools)
    doc = make_office(docs / "letter", "odt")
    original = sha(doc)
    r = convert(chain, str(doc))
    assert r.returncode == 6, r.stderr
    assert "the converter in the disposable failed" in r.stderr
    assert "LibreOffice is required for this file type" in disposable_said(chain)
    assert left_in(docs) == ["letter.odt"] and sha(doc) == original
    gone(chain)


def test_a_network_profile_is_78_and_nothing_is_created(chain, docs):
    pdf = make_pdf(docs / "a.pdf", pages=1)
    r = convert(chain, "--convert-profile", "tor", str(pdf))
    assert r.returncode == 78, r.stderr
    assert "converted only in a profile without a network" in r.stderr
    assert left_in(docs) == ["a.pdf"]
    assert not [c for c in chain.sim.calls() if c["method"].startswith("admin.vm.Create")]


def test_convert_then_open_the_trusted_pdf(chain, docs):
    pdf = make_pdf(docs / "a.pdf", pages=2)
    r = convert(chain, "--open", "--view-only", str(pdf))
    assert r.returncode == 0, r.stderr
    [got] = chain.sim.received()
    assert got["name"] == "a.trusted.pdf" and got["view_only"] is True
    assert got["sha256"] == sha(docs / "a.trusted.pdf")
    audit = chain.audit()
    assert "service=whonix.ConvertInDisposable profile=offline" in audit
    assert "service=whonix.ViewInDisposable profile=tor" in audit
    gone(chain)


def test_progress_is_notified_for_a_multi_page_document(chain, docs):
    pdf = make_pdf(docs / "a.pdf", pages=3)
    r = chain.run("--convert", "--resolution", "75", str(pdf))
    assert r.returncode == 0, r.stderr
    notes = (chain.root / "notify.log").read_text()
    assert "a.pdf: page 0 of 3, in an offline disposable" in notes
    assert "converted (3 pages)" in notes


# --- hostile servers -------------------------------------------------------------

HOSTILE = {
    "oversize": "page 1 is 10001x2 pixels, more than 10000 on a side",
    "short": "page 1 was cut off",
    "extra": "sent more data after the last page",
    "lying_count": "announced 3 pages but sent 2",
    "exit_mid_page": "page 2 was cut off",
    "bad_count": "sent an invalid page count",
    "bad_dimensions": "sent an invalid size of page 1",
    "endless_line": "sent an invalid page count (too long)",
    "hang": "sent nothing for 2 seconds",
}


def test_every_hostile_server_is_tested():
    assert set(HOSTILE) == set(CONVERTERS) - {"real", "held"}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_server_gets_a_clear_error_and_leaves_nothing(chain, docs, kind):
    chain.sim.set_fault("converter", kind)
    pdf = make_pdf(docs / "a.pdf", pages=2)
    original, before = sha(pdf), pdf.stat()
    r = convert(chain, "--timeout", "2", str(pdf))
    assert r.returncode == 6, r.stderr
    assert "a.pdf: not converted: " in r.stderr and HOSTILE[kind] in r.stderr, r.stderr
    assert "The original is untouched." in r.stderr
    assert r.stderr.count("error:") == 1 and "Traceback" not in r.stderr
    assert left_in(docs) == ["a.pdf"]  # no output, no .part file
    assert sha(pdf) == original and pdf.stat().st_mtime_ns == before.st_mtime_ns
    assert not (chain.home / "QubesUntrustedPDFs").exists()
    gone(chain)


def test_a_signal_mid_conversion_leaves_the_original_and_no_output(chain, docs):
    chain.sim.set_fault("converter", "hang")
    pdf = make_pdf(docs / "a.pdf", pages=2)
    original = sha(pdf)
    proc = subprocess.Popen(chain.argv("--convert", "--no-notify", str(pdf)), env=chain.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: chain.sim.disposables() and any(
        p.name.endswith(".part") for p in docs.iterdir()), "the conversion to start")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted; nothing was converted and the original is untouched" in err
    assert left_in(docs) == ["a.pdf"] and sha(pdf) == original
    gone(chain)


def test_a_killed_run_leaves_only_a_part_file_that_recover_removes(chain, docs):
    chain.sim.set_fault("converter", "hang")
    pdf = make_pdf(docs / "a.pdf", pages=2)
    proc = subprocess.Popen(chain.argv("--convert", "--no-notify", str(pdf)), env=chain.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: any(p.name.endswith(".part") for p in docs.iterdir()),
             "the conversion to start")
    wait_for(lambda: chain.sim.disposables(), "the disposable")
    proc.kill()
    proc.wait(DEADLINE)
    gone(chain)  # qrexec-client-vm's end closed: dom0 destroys the disposable
    r = chain.run("--no-notify", "--recover", str(docs))
    assert r.returncode == 0, r.stderr
    assert left_in(docs) == ["a.pdf"]


def test_a_directory_that_cannot_be_written_is_refused_before_any_call(chain, docs):
    if os.geteuid() == 0:
        ro = chain.root / "ro"
        ro.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(ro)],
                       check=False, capture_output=True)
        if not os.path.ismount(ro):
            pytest.fail("cannot mount a tmpfs to make a read-only directory")
        try:
            make_pdf(ro / "a.pdf", pages=1)
            subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
            r = convert(chain, str(ro / "a.pdf"))
        finally:
            subprocess.run(["umount", "-l", str(ro)], check=False)
    else:
        ro = docs
        make_pdf(ro / "a.pdf", pages=1)
        ro.chmod(0o555)
        try:
            r = convert(chain, str(ro / "a.pdf"))
        finally:
            ro.chmod(0o755)
    assert r.returncode == 1, r.stderr
    assert "no trusted PDF can be written beside it" in r.stderr
    assert chain.sim.services() == []



def test_an_original_changed_during_the_conversion_is_not_archived(chain, docs):
    chain.sim.set_fault("converter", "held")  # answers once <sim dir>/release exists
    pdf = make_pdf(docs / "a.pdf", pages=1)
    proc = subprocess.Popen(chain.argv("--convert", "--no-notify", str(pdf)), env=chain.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: chain.sim.disposables(), "the conversion to start")
    with open(pdf, "ab") as f:
        f.write(b"\n% appended by the user\n")
    (chain.sim_dir / "release").touch()
    _, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, err
    assert "not archived: the original was changed or replaced here" in err
    assert left_in(docs) == ["a.pdf", "a.trusted.pdf"]
    assert pdf.read_bytes().endswith(b"% appended by the user\n")
    gone(chain)


def test_a_policy_denial_is_126_with_one_message(chain, docs):
    chain.env["WHONIX_OPEN_SIM_DENY"] = "whonix.ConvertInDisposable"
    pdf = make_pdf(docs / "a.pdf", pages=1)
    r = convert(chain, str(pdf))
    assert r.returncode == 126, r.stderr
    assert "not converted: the qrexec policy denied this call (code 126)" in r.stderr
    assert r.stderr.count("error:") == 1
    assert left_in(docs) == ["a.pdf"]
    assert chain.no_disposables_left()

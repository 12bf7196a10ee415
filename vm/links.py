"""Links for `whonix-open URL...`: tell links from files, and check a link
before anything is sent (DESIGN.md "Links and apps").

dom0 relays the link to the disposable's stock qubes.OpenURL, which reads one
line with `read url` (POSIX sh, no -r) and accepts only lines starting with
http://, https:// or ftp:// (qubes-core-agent-linux qubes-rpc/qubes.OpenURL),
then runs `qubes-open URL`. So, here:

- the scheme must be one of those (any case here; sent in lower case, since
  the disposable's `case` is case-sensitive), followed by "//" and a host;
- no control characters, spaces or backslashes (`read` would split, strip or
  eat them), and at most MAX_LENGTH characters;
- nothing that could be taken as an option: a leading "-" is refused (a
  valid link then always starts with its scheme);
- characters beyond ASCII are percent-encoded as UTF-8 (as browsers do),
  except in the host, where they are refused (give the xn-- form);
- the authority is only a host name and a port: user names or passwords
  before the host (``https://www.whonix.org@evil.example/``, a common way to
  disguise where a link goes), percent signs and anything else but letters,
  digits, ``.``, ``-`` and ``_`` are refused there;
- the disposable's `qubes-open` (qubes-core-agent-linux) waits for the
  browser with ``pidwait -A -f "$URL"``: the link is an extended regular
  expression there, so `( ) * [ ] { } | ^ $` would make it match other
  processes (the disposable stays) or none (it closes under the browser).
  Each of them is percent-encoded in the path, query and fragment, where the
  URL grammar allows percent-encoding; in the host it cannot be, and is
  refused. (`?` and `#` that start the query and fragment, and `+`, cannot
  be encoded without changing the link: they are left, see README "Links".)

Every refusal says what is wrong, and shows the link escaped and shortened.
"""

from __future__ import annotations

import os
import re

SCHEMES = ("http", "https", "ftp")
MAX_LENGTH = 4096  # characters, after percent-encoding
SHOWN_LENGTH = 60  # how much of a link a message shows
# Anything with a scheme (RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":").
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_HOST_RE = re.compile(r"[A-Za-z0-9._-]+(:[0-9]{1,5})?")
REGEX_CHARS = "()*[]{}|^$"  # percent-encoded outside the host (see above)
_WRAP = 64  # characters per line of a link shown whole


class LinkError(ValueError):
    """The link is refused; the message names the problem."""


def shorten(text: str, limit: int = SHOWN_LENGTH) -> str:
    """*text* with control and non-ASCII characters made visible and cut to
    about *limit* characters, for messages and the confirmation dialog."""
    shown = text.encode("ascii", "backslashreplace").decode("ascii")
    shown = _CONTROL_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", shown)
    if len(shown) > limit:
        half = (limit - 3) // 2
        shown = shown[:half] + "..." + shown[-half:]
    return shown


def _encode_regex_chars(text: str) -> str:
    return "".join(f"%{ord(c):02X}" if c in REGEX_CHARS else c for c in text)


def host_of(link: str) -> str:
    """The host (and port) of a link check_link() returned."""
    return re.split(r"[/?#]", link.split("//", 1)[1], maxsplit=1)[0]


def shown_whole(link: str) -> list[str]:
    """A checked link (ASCII, no spaces) cut into lines, nothing left out."""
    return [link[i:i + _WRAP] for i in range(0, len(link), _WRAP)] or [""]


def looks_like_link(arg: str) -> bool:
    """Whether a command-line argument is meant as a link: it has a scheme
    (or "://" anywhere) and is not an existing file (./NAME forces a file)."""
    if not (_SCHEME_RE.match(arg) or "://" in arg):
        return False
    return not os.path.lexists(arg)


def _encode_beyond_ascii(text: str) -> str:
    return "".join(c if c.isascii() else "".join(f"%{b:02X}" for b in c.encode("utf-8",
                                                                               "replace"))
                   for c in text)


def check_link(arg: str) -> str:
    """The link as it will be sent (without the newline), or LinkError."""
    shown = shorten(arg)
    if arg.startswith("-"):
        raise LinkError(f"{shown}: starts with '-' and could be taken as an option")
    if _CONTROL_RE.search(arg):
        raise LinkError(f"{shown}: contains control characters")
    if any(c.isspace() for c in arg):
        raise LinkError(f"{shown}: contains spaces; encode them as %20")
    if "\\" in arg:
        raise LinkError(f"{shown}: contains a backslash")
    match = _SCHEME_RE.match(arg)
    if match is None:
        raise LinkError(f"{shown}: not a link (no scheme such as https:)")
    scheme = match.group(1).lower()
    if scheme not in SCHEMES:
        raise LinkError(f"{shown}: the scheme {shorten(scheme, 20)}: is not allowed "
                        f"(only {', '.join(SCHEMES)})")
    rest = arg[match.end():]
    if not rest.startswith("//"):
        raise LinkError(f"{shown}: {scheme}: must be followed by // and a host")
    authority = re.split(r"[/?#]", rest[2:], maxsplit=1)[0]
    after = rest[2 + len(authority):]
    if "@" in authority:
        raise LinkError(
            f"{shown}: has a user name or password before the host (NAME@HOST), a "
            "common way to disguise where a link goes; open the host directly")
    if not authority or authority.startswith(":"):
        raise LinkError(f"{shown}: has no host")
    if not authority.isascii():
        raise LinkError(f"{shown}: the host has non-ASCII characters; use its xn-- form")
    if not _HOST_RE.fullmatch(authority):
        raise LinkError(
            f"{shown}: the host may only have letters, digits, '.', '-' and '_' (and a "
            ":port); no percent signs, brackets or other characters, which the "
            "disposable's qubes-open would misread")
    link = scheme + "://" + authority + _encode_regex_chars(_encode_beyond_ascii(after))
    if len(link) > MAX_LENGTH:
        raise LinkError(f"{shown}: longer than {MAX_LENGTH} characters")
    return link

"""Constants of the stock qubes.OpenInVM byte protocol (qubes-core-agent-linux
dvm2.h, qopen-in-vm.c, vm-file-editor.c): a fixed 256-byte NUL-padded header
holding the file's basename, then the raw bytes until EOF; the reply is the
whole file again, or nothing when it was not changed."""

HEADER_SIZE = 256
VIEW_ONLY_PREFIX = b"view-only-"

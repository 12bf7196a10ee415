"""The simulated Qubes of the tests and the demo (never shipped to dom0).

state.py      the shared state file (flock + atomic replace)
scenario.py   scenario files (TOML/JSON) -> validated qubes and fault knobs
backend.py    SimBackend: dom0/backend.py's Backend over that state
disposable.py the disposable side of qubes.OpenInVM (like vm-file-editor)
qrexec_client.py + bin/qrexec-client-vm   a qube's qrexec-client-vm stand-in
harness.py    SimQubes, the API the tests and the demo use
"""

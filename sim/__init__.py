"""The simulated Qubes of the tests and the demo (never shipped to dom0).

state.py      the shared state file (flock + atomic replace)
scenario.py   scenario files (TOML/JSON) -> validated qubes and fault knobs
qubesd.py     the model of qubesd: Admin API methods on that state, over
qubes_objects.py (properties, events, power) and preloads.py (R4.3 queue)
backend.py    SimBackend: dom0/backend.py's Backend, calling the model directly
qubesd_server.py  the same model on a Unix socket for the real qubesadmin
dom0_qrexec_client.py + bin/qrexec-client  dom0's qrexec-client stand-in
disposable.py the disposable side of qubes.OpenInVM (like vm-file-editor)
qrexec_client.py + bin/qrexec-client-vm   a qube's qrexec-client-vm stand-in
harness.py    SimQubes, the API the tests and the demo use
"""

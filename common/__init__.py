"""whonix-open: the contract shared by the dom0 broker and the VM helper."""

__version__ = "0.1.0"

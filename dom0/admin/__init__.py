"""whonix-open-admin: the administrator's dom0 command (check, status, reap,
policy explain), in the style of qubes-core-admin-client's qvm-* tools: each
subcommand is a module with a parser and `main(args=None, app=None) -> int`.

It works through the broker's own code (config, resolve, disposable, sessions)
so that what it reports is what the broker would do."""

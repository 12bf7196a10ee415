"""What the user is told for each exit code of the dom0 services and of qrexec
(whonix_open.contract.Exit). One table, so every code has a specific,
actionable message and a new code cannot be forgotten silently
(tests/vm/test_messages.py checks that the table covers the enum)."""

from __future__ import annotations

from whonix_open.contract import Exit

# {profile} is "the profile 'NAME'", or "the default profile" when none was named.
MESSAGES: dict[Exit, str] = {
    Exit.OK: "opened in a disposable and closed.",
    # dom0 answers only a code: 64 is also an unknown caller or a malformed
    # argument, so the profile is named as a possibility, never as the cause.
    Exit.BAD_REQUEST: (
        "dom0 refused the request as malformed (code 64): {profile} may be unknown "
        "there, or dom0 did not accept the call for another reason; its log names "
        "it (journalctl -t whonix-open). `whonix-open --status` lists the profiles "
        "dom0 offers."
    ),
    Exit.MISCONFIGURED: (
        "{profile} is misconfigured in dom0 (its disposable template or "
        "gateway is missing or not Whonix, or /etc/whonix-open/profiles.toml is bad). "
        "The file was NOT opened. Ask your administrator: dom0's log names the "
        "check that failed (journalctl -t whonix-open, and "
        "/var/log/qubes/qrexec.<this qube>.log)."
    ),
    Exit.NETWORK_REFUSED: (
        "dom0 could not guarantee the network for {profile} (the path is not a "
        "Whonix-Gateway, or offline could not be enforced). The file was NOT opened."
    ),
    Exit.TOO_MANY: (
        "too many disposables are open for this qube already. Close one and try "
        "again later."
    ),
    Exit.DISPOSABLE_FAILED: (
        "dom0 could not create or start the disposable (not enough memory?). "
        "The file was NOT opened; try again, or ask your administrator."
    ),
    Exit.VERIFICATION_FAILED: (
        "the disposable failed dom0's verification (not a fresh disposable of the "
        "expected template) and was destroyed. The file was NOT opened. "
        "Report this to your administrator."
    ),
    Exit.NETVM_CHANGED: (
        "the disposable's network was changed while the file was open, so dom0 "
        "killed it. Edits made after that point are lost."
    ),
    Exit.LOOP: (
        "dom0 refused: this qube is itself a disposable opened by whonix-open, and "
        "opening files from it again would loop."
    ),
    Exit.INTERNAL: (
        "internal error in dom0 (qubesd unreachable or an unexpected failure). "
        "Ask your administrator to look at dom0's log (journalctl -t whonix-open)."
    ),
    Exit.SESSION_EXPIRED: (
        "the disposable stayed open longer than dom0 allows (limits.max_session_minutes "
        "in /etc/whonix-open/profiles.toml), so dom0 closed it. Edits not sent back "
        "before that are lost."
    ),
    Exit.CALLER_SILENT: (
        "dom0 received nothing from this qube in time and created no disposable. "
        "Try again."
    ),
    Exit.QREXEC_FAILED: (
        "qrexec failed (code 125): the call to dom0 could not be set up or broke off."
    ),
    Exit.POLICY_DENIED: (
        "the qrexec policy denied this call (code 126), or it was cancelled at the "
        "confirmation prompt. If it should be allowed, ask your administrator "
        "(/etc/qubes/policy.d/30-user-whonix-open.policy in dom0)."
    ),
    Exit.SERVICE_NOT_FOUND: (
        "the whonix-open service is not installed in dom0 (code 127). Ask your "
        "administrator to install the whonix-open dom0 package."
    ),
    Exit.LINK_NEEDS_NETWORK: (
        "dom0 refused: links open only in a profile with a network, and {profile} "
        "is offline. Use --profile tor (or another network profile)."
    ),
    Exit.APP_NOT_ALLOWED: (
        "dom0 refused: that app is not in dom0's allowlist ([apps] in "
        "/etc/whonix-open/profiles.toml). Built in: torbrowser, terminal."
    ),
    Exit.NO_NEW_NETWORK: (
        "dom0 refused: this qube has no network (its netvm is none) and {profile} "
        "has one, so the disposable would give this qube a way out to the network. "
        "Nothing was opened and no disposable was created. Without a network only "
        "offline profiles work (--offline; not for links). If this qube should have "
        "one, the administrator opts it in, in dom0: "
        "qvm-features NAME-OF-THIS-QUBE whonix-open-allow-network 1."
    ),
    Exit.CONVERT_NEEDS_OFFLINE: (
        "dom0 refused: documents are converted only in a profile without a network, "
        "and {profile} has one. Use --convert-profile offline (the default)."
    ),
}


# What the real qrexec-client-vm itself exits with, besides 125-127
# (qubes-core-qrexec agent/qrexec-client-vm.c, libqrexec/process_io.c).
CLIENT_MESSAGES: dict[int, str] = {
    1: (
        "qrexec-client-vm failed (code 1): it could not reach this qube's qrexec "
        "agent, or the connection to dom0 failed."
    ),
    255: (
        "the qrexec connection to dom0 broke off before dom0 reported a result "
        "(qrexec-client-vm code 255)."
    ),
}


def describe(code: int, profile: str | None) -> str:
    """The message for a code returned by qrexec-client-vm: whole sentences,
    ending with a full stop (more may follow)."""
    shown = f"the profile '{profile}'" if profile else "the default profile"
    try:
        template = MESSAGES[Exit(code)]
    except ValueError:
        if code < 0:
            return f"qrexec-client-vm was killed by signal {-code}."
        if code in CLIENT_MESSAGES:
            return CLIENT_MESSAGES[code]
        return f"qrexec-client-vm ended with unexpected code {code}."
    return template.format(profile=shown)

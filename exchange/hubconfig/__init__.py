"""Render and apply the OpenSSH hub: chroot tree, per-login authorized_keys, sshd configuration.

The hub is stock OpenSSH. This package only writes its configuration, exactly right. It is
split into :mod:`.spec` (values and checks), :mod:`.render` (pure text), :mod:`.system`
(applying it to this machine) and :mod:`.run` (``hub run``); import from the package.

Rules:

1. Rendering is pure: :func:`directory_plan`, :func:`render_authorized_keys`,
   :func:`render_sshd_config` and :func:`render_drop_in` take values and return values. Only
   :func:`apply_hub`, :func:`normalise_file_modes` and :func:`ensure_privsep_dir` touch the system.
2. It takes plain values (:class:`HubSpec`), never the configuration loader: the command passes
   them in (STYLE: adapters do not import each other).
3. Every login is a Unix user of the same name with user-private group, no home, no shell and the
   password field ``*`` (no password, not "locked", so sshd with ``UsePAM no`` accepts keys).
   An existing user that was not created by us (GECOS :data:`GECOS`) is never taken over.
4. The permission model (docs/hub.md): a partner chroot is ``root:<partner> 0750``; ``inbox/`` is
   ``<daemon>:<partner> 2750`` (the daemon writes, the partner only reads); ``outbox/`` and
   ``receipts/`` are ``<partner>:<partner> 2770`` (the partner writes; the daemon, a member of every
   partner group, lists, reads and removes). Files are normalised to 0640 by root because clients
   send their local file mode and sftp-server can only mask it (``-u``), not widen it.
5. Re-running is idempotent. A disabled (withdrawn) login keeps its folder but is left out of
   ``AllowUsers``, named in ``DenyUsers`` and gets an authorized_keys file with no keys.
"""

from __future__ import annotations

from exchange.hubconfig.render import (
    directory_plan,
    render_authorized_keys,
    render_drop_in,
    render_sshd_config,
)
from exchange.hubconfig.run import (
    SftpLogRelay,
    check_sshd_config,
    host_key_fingerprints,
    run_sshd,
)
from exchange.hubconfig.spec import (
    CIPHERS,
    DAEMON_DENIED,
    GECOS,
    HOST_KEY_ALGORITHMS,
    KEX_ALGORITHMS,
    KEY_TYPES,
    MACS,
    NOLOGIN,
    PARTNER_DENIED,
    PRIVSEP_DIR,
    SFTP_UMASK,
    SSHD,
    WITHDRAWAL_NOTICE_DAYS,
    AccountKind,
    ApplyReport,
    DirEntry,
    HubAccount,
    HubLayout,
    HubSpec,
    login_enabled,
    parse_listen,
    validate_spec,
)
from exchange.hubconfig.system import (
    apply_hub,
    ensure_privsep_dir,
    normalise_file_modes,
    require_root,
    require_sshd,
)

__all__ = [
    "CIPHERS",
    "DAEMON_DENIED",
    "GECOS",
    "HOST_KEY_ALGORITHMS",
    "KEX_ALGORITHMS",
    "KEY_TYPES",
    "MACS",
    "NOLOGIN",
    "PARTNER_DENIED",
    "PRIVSEP_DIR",
    "SFTP_UMASK",
    "SSHD",
    "WITHDRAWAL_NOTICE_DAYS",
    "AccountKind",
    "ApplyReport",
    "DirEntry",
    "HubAccount",
    "HubLayout",
    "HubSpec",
    "SftpLogRelay",
    "apply_hub",
    "check_sshd_config",
    "directory_plan",
    "ensure_privsep_dir",
    "host_key_fingerprints",
    "login_enabled",
    "normalise_file_modes",
    "parse_listen",
    "render_authorized_keys",
    "render_drop_in",
    "render_sshd_config",
    "require_root",
    "require_sshd",
    "run_sshd",
    "validate_spec",
]

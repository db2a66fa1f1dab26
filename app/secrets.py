"""Secrets (webhook URLs, API keys) in the OS keyring, and nowhere else.

A thin wrapper over ``keyring`` with one service name, ``llmmon``. When the machine has no
secure keyring (a bare Linux box without a Secret Service, or only a plain-text file backend)
:func:`keyring_status` says so in words the settings dialogs show, :func:`set_secret` raises
:class:`KeyringUnavailable`, and nothing is ever written to a file of ours instead.

Secret values are never logged; only the entry *name* (e.g. ``webhook_url``) is.
"""
from __future__ import annotations

import logging

import keyring
import keyring.backend
import keyring.errors

log = logging.getLogger(__name__)

SERVICE = "llmmon"
NO_KEYRING = ("no secure keyring available: install and unlock a Secret Service "
              "(GNOME Keyring, KWallet) to store secrets")

# Backends that are no keyring at all, or keep secrets in a plain file: refused.
_INSECURE = {
    "keyring.backends.fail.Keyring",
    "keyring.backends.null.Keyring",
    "keyrings.alt.file.PlaintextKeyring",
}


class KeyringUnavailable(RuntimeError):
    """There is no secure keyring to keep the secret in."""


def _name(backend: keyring.backend.KeyringBackend) -> str:
    return f"{type(backend).__module__}.{type(backend).__qualname__}"


def _secure_backends(backend: keyring.backend.KeyringBackend) -> list[keyring.backend.KeyringBackend]:
    chained = getattr(backend, "backends", None)  # keyring's ChainerBackend
    if chained is not None:
        return [b for inner in chained for b in _secure_backends(inner)]
    return [] if _name(backend) in _INSECURE else [backend]


def keyring_status() -> tuple[bool, str]:
    """``(True, backend name)`` when secrets can be stored, else ``(False, why not)``."""
    try:
        secure = _secure_backends(keyring.get_keyring())
    except Exception as exc:  # a broken keyring configuration must not break the app
        return False, f"{NO_KEYRING} ({type(exc).__name__})"
    if not secure:
        return False, NO_KEYRING
    return True, ", ".join(getattr(b, "name", type(b).__name__) for b in secure)


def get_secret(name: str) -> str | None:
    """The stored secret, or ``None`` when it is not set or no secure keyring is available."""
    if not keyring_status()[0]:
        return None
    try:
        return keyring.get_password(SERVICE, name)
    except keyring.errors.KeyringError as exc:
        log.warning("cannot read %s from the keyring: %s", name, type(exc).__name__)
        return None


def set_secret(name: str, value: str) -> None:
    """Store a secret; raises :class:`KeyringUnavailable` when it cannot be kept securely."""
    available, why = keyring_status()
    if not available:
        raise KeyringUnavailable(why)
    try:
        keyring.set_password(SERVICE, name, value)
    except keyring.errors.KeyringError as exc:
        raise KeyringUnavailable(f"the keyring refused to store {name}: {type(exc).__name__}") from None
    log.info("stored %s in the keyring", name)


def delete_secret(name: str) -> None:
    """Remove a secret; nothing happens when it was not set or there is no keyring."""
    if not keyring_status()[0]:
        return
    try:
        keyring.delete_password(SERVICE, name)
        log.info("deleted %s from the keyring", name)
    except keyring.errors.PasswordDeleteError:
        pass
    except keyring.errors.KeyringError as exc:
        log.warning("cannot delete %s from the keyring: %s", name, type(exc).__name__)

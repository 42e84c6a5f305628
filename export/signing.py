"""Sign a bundle with the OpenSSF model-signing library (elliptic-curve key method), as the last step
of the atomic bundle build: the signature covers every file, the manifest included, and the bundle
only appears at --out once it is signed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from edgeport.runtime.errors import UsageError
from edgeport.runtime.signing import SIGNATURE_NAME, model_signing_module

__all__ = ["SIGN_KEY_PASSWORD_ENV", "BundleSigner", "sign_bundle"]

#: Password of an encrypted --sign-key (kept off the command line and out of the export report).
SIGN_KEY_PASSWORD_ENV = "EDGEPORT_SIGN_KEY_PASSWORD"


class BundleSigner:
    """A loaded private key, checked up front so that a bad key fails before a minute of export, not after."""

    def __init__(self, private_key: str | os.PathLike):
        ms = model_signing_module("edge-export --sign-key")
        self.key = Path(private_key)
        if not self.key.is_file():
            raise UsageError(f"--sign-key {self.key} does not exist; pass the PEM private key of the release pipeline")
        password = os.environ.get(SIGN_KEY_PASSWORD_ENV)
        try:
            self._config = ms.signing.Config().use_elliptic_key_signer(private_key=self.key, password=password)
        except (ValueError, TypeError) as exc:  # not PEM, wrong password, or a curve the standard does not allow
            raise UsageError(f"--sign-key {self.key}: not a usable elliptic-curve private key ({exc}); use a P-256/P-384/P-521 "
                             f"PEM key (encrypted keys take their password from ${SIGN_KEY_PASSWORD_ENV})") from exc
        self._config.set_hashing_config(ms.hashing.Config().set_ignored_paths(paths=[SIGNATURE_NAME], ignore_git_paths=False))

    def sign(self, bundle: Path) -> Path:
        """Write ``bundle/model.sig`` over every other file of ``bundle``; returns its path."""
        signature = Path(bundle) / SIGNATURE_NAME
        self._config.sign(Path(bundle), signature)
        return signature


def sign_bundle(bundle: str | os.PathLike, private_key: str | os.PathLike, log: Callable[[str], Any] = lambda _: None) -> Path:
    """Sign an existing bundle in place (re-signing replaces the old signature)."""
    signature = BundleSigner(private_key).sign(Path(bundle))
    log(f"signed {bundle} with {private_key} → {signature.name}")
    return signature

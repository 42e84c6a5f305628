"""Sign a bundle with the OpenSSF model-signing library (elliptic-curve key or certificate method), as the last step
of the atomic bundle build: the signature covers every file, the manifest included, and the bundle
only appears at --out once it is signed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from edgeport.runtime.errors import UsageError
from edgeport.runtime.signing import SIGNATURE_NAME, model_signing_module

__all__ = ["SIGN_KEY_PASSWORD_ENV", "BundleSigner", "sign_bundle"]

#: Password of an encrypted --sign-key (kept off the command line and out of the export report).
SIGN_KEY_PASSWORD_ENV = "EDGEPORT_SIGN_KEY_PASSWORD"


class BundleSigner:
    """A loaded private key (and signing certificate), checked up front so that a bad key fails before a
    minute of export, not after. With ``certificate`` the library's certificate method is used: the
    signature carries the certificate and ``chain``, and devices verify it against their CA certificate."""

    def __init__(self, private_key: str | os.PathLike, certificate: str | os.PathLike | None = None,
                 chain: Sequence[str | os.PathLike] = ()):
        ms = model_signing_module("edge-export --sign-key")
        self.key = Path(private_key)
        for option, path in (("--sign-key", self.key), ("--sign-cert", certificate), *(("--sign-cert-chain", c) for c in chain)):
            if path is not None and not Path(path).is_file():
                raise UsageError(f"{option} {path} does not exist; pass a PEM file of the release pipeline")
        if chain and certificate is None:
            raise UsageError("--sign-cert-chain goes with --sign-cert (the certificate method)")
        if certificate is not None and not chain:  # model-signing 1.1 cannot load an empty chain
            raise UsageError("--sign-cert needs --sign-cert-chain: the issuing CA's certificate at least (and any intermediates)")
        password = os.environ.get(SIGN_KEY_PASSWORD_ENV)
        try:
            if certificate is None:
                self._config = ms.signing.Config().use_elliptic_key_signer(private_key=self.key, password=password)
            else:
                self._config = ms.signing.Config().use_certificate_signer(
                    private_key=self.key, signing_certificate=Path(certificate), certificate_chain=[Path(c) for c in chain])
        except (ValueError, TypeError) as exc:  # not PEM, wrong password, a curve the standard does not allow, key ≠ cert
            raise UsageError(f"--sign-key {self.key}: not a usable elliptic-curve private key{' for ' + str(certificate) if certificate else ''} "
                             f"({exc}); use a P-256/P-384/P-521 PEM key (encrypted keys take their password from "
                             f"${SIGN_KEY_PASSWORD_ENV}, key method only)") from exc
        self._config.set_hashing_config(ms.hashing.Config().set_ignored_paths(paths=[SIGNATURE_NAME], ignore_git_paths=False))

    def sign(self, bundle: Path) -> Path:
        """Write ``bundle/model.sig`` over every other file of ``bundle``; returns its path."""
        signature = Path(bundle) / SIGNATURE_NAME
        self._config.sign(Path(bundle), signature)
        return signature


def sign_bundle(bundle: str | os.PathLike, private_key: str | os.PathLike, log: Callable[[str], Any] = lambda _: None,
                certificate: str | os.PathLike | None = None, chain: Sequence[str | os.PathLike] = ()) -> Path:
    """Sign an existing bundle in place (re-signing replaces the old signature)."""
    signature = BundleSigner(private_key, certificate, chain).sign(Path(bundle))
    log(f"signed {bundle} with {private_key} → {signature.name}")
    return signature

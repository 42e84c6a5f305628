"""Verify a bundle's OpenSSF model-signing signature (elliptic-curve key or certificate method) before it is served.

The manifest's sha256 catches corruption, not an attacker: whoever can write the bundle can rewrite
the manifest. The signature (``model.sig``, a Sigstore bundle holding a DSSE envelope over an in-toto
statement of every file's sha256, written by the ``model-signing`` library) covers every file of the
bundle, the manifest included, so a file changed after signing fails even when the manifest was
rewritten to match. The same file verifies with the library's own CLI::

    model_signing verify key BUNDLE --signature BUNDLE/model.sig --public_key PUB.pem

A verify key is a PEM public key (the key method) or PEM CA certificates (the certificate method: the
signing certificate must chain to them and allow digital signatures). ``model-signing`` is the
``[signing]`` extra and is imported only when a verify key is set.
"""

from __future__ import annotations

import base64
import json
import os
import re
import tempfile
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import MissingDependencyError, SignatureError, UsageError
from .manifest import MANIFEST_NAME, bundle_root_of, sha256_file

__all__ = ["SIGNATURE_NAME", "VERIFY_KEY_ENV", "SignatureCheck", "verify_key_from", "device_key_ignored", "verify_bundle", "require_signed",
           "model_signing_module"]

#: The signature's file name inside the bundle (the library CLI's default name).
SIGNATURE_NAME = "model.sig"
#: A device-wide verify key: every edge-predict, Classifier and edge-bench on the device refuses unsigned bundles.
VERIFY_KEY_ENV = "EDGEPORT_VERIFY_KEY"
_INSTALL = "pip install 'edgeport[signing]'"


def model_signing_module(why: str) -> Any:
    """The ``model_signing`` package, or an error saying which extra to install."""
    try:
        import model_signing
    except ImportError as exc:  # the library itself or one of its imports (it needs pyOpenSSL)
        raise MissingDependencyError(f"{why} needs the model-signing library ({exc}): {_INSTALL}") from exc
    return model_signing


_BUILDING: ContextVar[bool] = ContextVar("edgeport_building_bundle", default=False)


@contextmanager
def device_key_ignored() -> Iterator[None]:
    """While edge-export builds a bundle, its checks load the unsigned staging files: ``$EDGEPORT_VERIFY_KEY``
    (a device setting) does not apply to them. An explicit ``verify_key`` still does."""
    token = _BUILDING.set(True)
    try:
        yield
    finally:
        _BUILDING.reset(token)


def verify_key_from(key: str | os.PathLike | None | bool) -> Path | None:
    """The verify key to use: ``key`` itself, else ``$EDGEPORT_VERIFY_KEY``; ``False`` turns verification off."""
    if key is False:
        return None
    if key is None or key is True:
        key = None if _BUILDING.get() else os.environ.get(VERIFY_KEY_ENV)
        if key is None:
            return None
    if not str(key).strip():  # a device told to verify must never fail open on an empty setting
        raise UsageError(f"the verify key is set but empty (--verify-key or ${VERIFY_KEY_ENV}={key!r}): give the PEM "
                         f"public key's path, or unset {VERIFY_KEY_ENV} to serve unsigned bundles")
    path = Path(key)
    if not path.is_file():
        raise UsageError(f"verify key {path} does not exist (from --verify-key or ${VERIFY_KEY_ENV}); "
                         "pass the PEM public key that matches the release pipeline's --sign-key")
    return path


@dataclass(frozen=True)
class SignatureCheck:
    """A verified bundle: its real directory, the key it was verified with, and the files the signature covers."""

    bundle: Path
    key: Path
    signed_files: dict[str, str]  # name → sha256 hex, as signed

    def vouch_for(self, manifest: dict[str, Any], names: list[str]) -> None:
        """``manifest`` (as read for loading) lists the signed sha256 for each of ``names``: then the runtime's own
        sha256 check of those files against it checks them against the signature, even if the manifest on disk
        was swapped after the signature was verified."""
        for name in names:
            listed = (manifest.get("files", {}).get(name) or {}).get("sha256")
            if listed != self.signed_files.get(name):
                raise SignatureError(f"{self.bundle / MANIFEST_NAME} lists a sha256 for {name} that is not the signed one "
                                     f"(changed after verification?); restore the bundle from the release")


def _short(text: str) -> str:
    """The library's mismatch message without its digests (bytes reprs, 64-hex strings)."""
    return re.sub(r"(Expected|Actual) 'Digest\(.*?\)'|\b[0-9a-f]{64}\b", "…", text)


def _statement(signature: bytes) -> dict[str, Any]:
    """The in-toto statement inside the signature (read after the library verified it)."""
    return json.loads(base64.b64decode(json.loads(signature)["dsseEnvelope"]["payload"]))


def _signed_files(signature: bytes) -> dict[str, str]:
    """name → sha256 of every file in the signature's in-toto statement."""
    return {r["name"]: r["digest"] for r in _statement(signature)["predicate"]["resources"]}


def _mismatch(root: Path, signature: bytes) -> str | None:
    """Which files changed, appeared or vanished since signing, by name (None when the signature hashed
    something other than whole files with sha256, e.g. the library's shards: its own message is used)."""
    serialization = _statement(signature)["predicate"]["serialization"]
    if serialization.get("method") != "files" or serialization.get("hash_type") != "sha256":
        return None
    signed = _signed_files(signature)
    ignored = {SIGNATURE_NAME, ".git", ".gitattributes", ".github", ".gitignore", *serialization.get("ignore_paths", [])}
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*")
               if p.is_file() and not any(Path(i) in (p.relative_to(root), *p.relative_to(root).parents) for i in ignored)}
    parts = [(what, sorted(names)) for what, names in (
        ("changed", [n for n in signed.keys() & on_disk if sha256_file(root / n) != signed[n]]),
        ("added", on_disk - signed.keys()), ("removed", signed.keys() - on_disk)) if names]
    return "; ".join(f"{what}: {', '.join(names)}" for what, names in parts) or None


def _key_method(key: Path) -> str:
    """``"key"`` for a PEM public key (the elliptic-curve key method), ``"certificate"`` for PEM CA certificates
    (the certificate method: the signature's certificate chain must lead to one of them)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    data = key.read_bytes()
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            x509.load_pem_x509_certificates(data)
            return "certificate"
        load_pem_public_key(data)
        return "key"
    except (ValueError, TypeError) as exc:
        raise UsageError(f"verify key {key} is not a PEM public key nor PEM CA certificates ({exc}); pass the .pub.pem "
                         "of the signing key pair, or the CA certificate(s) of the signing certificate") from exc


def verify_bundle(bundle: str | os.PathLike, key: str | os.PathLike) -> SignatureCheck:
    """Check ``bundle``'s signature with the public ``key``; raise ``SignatureError`` naming what failed.

    Refuses an unsigned bundle, a signature made by another key or not parseable, any file added,
    removed or changed since signing (the manifest too), and a signature that does not cover the
    manifest. The signature bytes are read once: the copy the library verifies is the copy parsed here.
    """
    ms = model_signing_module("verifying a signed bundle")
    root, key = Path(bundle).resolve(), Path(key)  # a symlink switch: verify the real folder (the library refuses links)
    sig_path = root / SIGNATURE_NAME
    if not sig_path.is_file():
        raise SignatureError(f"{root} is not signed (no {SIGNATURE_NAME}) but a verify key is set; "
                             f"export it with edge-export --sign-key, or sign it with: model_signing sign key {root} "
                             f"--signature {sig_path} --private_key KEY.pem")
    method = _key_method(key)
    data = sig_path.read_bytes()
    try:
        json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # before the library: its error would blame the key
        truncated = isinstance(exc, json.JSONDecodeError) and exc.pos >= len(exc.doc.rstrip())
        raise SignatureError(f"{sig_path}: bad signature: the file is {'truncated' if truncated else 'damaged'} "
                             f"({len(data)} bytes, not a complete signature); restore it from the release") from exc
    with tempfile.TemporaryDirectory(prefix="edgeport-sig-") as tmp:
        copy = Path(tmp) / SIGNATURE_NAME
        copy.write_bytes(data)
        config = ms.verifying.Config()
        if method == "key":
            config.use_elliptic_key_verifier(public_key=key)
        else:
            config.use_certificate_verifier(certificate_chain=[key])
        try:
            config.verify(root, copy)
        except ValueError as exc:
            message = str(exc)
            if message.startswith("Signature mismatch"):  # the signature is genuine, the files are not what it signed
                detail = _mismatch(root, data) or _short(message.split(":", 1)[1].strip())
                raise SignatureError(f"{root}: files changed after signing ({detail}); restore the bundle from the release") from exc
            raise SignatureError(f"{sig_path}: bad signature: not made by a key that {key} vouches for ({message})") from exc
        except Exception as exc:  # InvalidSignature, OpenSSL's chain errors, pydantic/JSON errors of a mangled file
            raise SignatureError(f"{sig_path}: bad signature ({type(exc).__name__}: {exc or 'does not verify'}); "
                                 f"it was not made by a key that {key} vouches for, or the file is damaged") from exc
    signed = _signed_files(data)
    if MANIFEST_NAME not in signed:
        raise SignatureError(f"{sig_path} does not cover {MANIFEST_NAME}; re-sign the whole bundle (edge-export --sign-key)")
    unsigned = _unsigned_files(root, signed)
    if unsigned:  # model-signing skips .git, .gitattributes …; a served bundle holds only what was signed
        raise SignatureError(f"{root}: files added after signing ({', '.join(unsigned[:5])}"
                             f"{' …' if len(unsigned) > 5 else ''}); a signed bundle holds only the signed files: "
                             "remove them or restore the bundle from the release")
    return SignatureCheck(root, key, signed)


def _unsigned_files(root: Path, signed: dict[str, str]) -> list[str]:
    """Every file or link under ``root`` (not followed) that the signature does not cover, the signature aside."""
    found = []
    for folder, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            rel = Path(folder, name).relative_to(root).as_posix()
            if rel != SIGNATURE_NAME and rel not in signed:
                found.append(rel)
    return sorted(found)


def require_signed(path: str | os.PathLike, key: str | os.PathLike) -> SignatureCheck:
    """``path`` (a bundle, or a model file inside one) must be in a bundle signed by ``key``.

    A bare model file has nothing to vouch for it, so with a verify key set it is refused.
    """
    path = Path(path)
    if path.is_dir():
        return verify_bundle(path, key)
    root = bundle_root_of(path)
    if root is None:
        raise SignatureError(f"{path} is a bare model file and a verify key is set: only files inside a signed bundle "
                             "are served; pass the bundle directory")
    check = verify_bundle(root, key)
    rel = path.resolve().relative_to(check.bundle).as_posix()
    if rel not in check.signed_files:
        raise SignatureError(f"{path} is not covered by {check.bundle / SIGNATURE_NAME}; pass the bundle directory")
    if sha256_file(path) != check.signed_files[rel]:  # hashed again now, just before the backend loads it
        raise SignatureError(f"{path} changed after its signature was verified; restore the bundle from the release")
    return check

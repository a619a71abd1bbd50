"""Payload encryption: AES-256-GCM, a key id in each payload, several keys for rotation.

Temporal stores every payload a run produces (the goal in its input, prompts and tool outputs in
activity arguments and results, the answer) in its history, readable by anyone who can read the
namespace. With keys configured, every client and worker stakeflow makes encodes each payload into an
encrypted one before it leaves the process, and decodes on the way in, so the server (or Temporal
Cloud) only ever holds ciphertext.

- **Keys** come from a file (``STAKEFLOW_CODEC_KEYS_FILE``: one ``<key id> <base64 of 32 bytes>`` per
  line, ``#`` comments) or the environment (``STAKEFLOW_CODEC_KEYS="<id>:<base64>,<id>:<base64>"``),
  never from stakeflow.toml. The **last** key listed encrypts; every listed key decrypts. To rotate:
  append a new key everywhere (workers, webhook and codec servers, CLI), restart; keep the old keys for
  as long as histories encrypted with them may be read (the namespace's retention, and longer for
  runs still open).
- **Format**: the whole original payload (its metadata and data) is serialised and sealed; the new
  payload says ``encoding: binary/encrypted`` and ``encryption-key-id: <id>`` (the names Temporal's
  samples use) and carries nonce + ciphertext. The key id is authenticated (GCM associated data), so a
  payload cannot be passed off under another key's id.
- **Reading** a payload that is not encrypted returns it unchanged: histories written before the keys
  were configured stay readable. A payload under a key id that is not configured fails with
  ``CodecKeyError`` naming the id and the fix; a worker then fails the workflow task and Temporal
  retries it until the key is back, so nothing is lost or misread.
- **Failures**: with keys on, failure messages and stack traces are moved into an encoded payload too
  (the SDK's ``DefaultFailureConverterWithEncodedAttributes``): a tool error quoting a file's content
  would otherwise sit in clear in the history.

Not encrypted (Temporal reads them itself): search attributes, workflow and activity ids and types,
task queue names, timestamps, failure *types*. See docs/reliability.md, "Encrypted payloads".

**Public values.** The SDK sends memo values through the codec like every payload, so a memo would only
be readable through the codec server. A value wrapped in ``Public`` (a ``str``, ``stakeflow.core.contracts``) is marked by the payload
converter and left in clear, for what the Web UI should show without keys and that is no secret: a
webhook seal's run id (already its workflow id, which is never encrypted), a run's cost line. Nothing a
run reads or writes may be wrapped.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

from stakeflow.core.contracts import PUBLIC_KEY, Public
from stakeflow.core.errors import ConfigError, StakeflowError

if TYPE_CHECKING:
    from stakeflow.config import Settings

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
KEY_BYTES = 32


class PublicAwarePayloadConverter(PydanticPayloadConverter):
    """The pydantic payload converter, marking ``Public`` values so that ``EncryptionCodec`` leaves them in clear."""

    def to_payloads(self, values: Sequence[object]) -> list[Payload]:
        payloads = super().to_payloads(values)
        for value, payload in zip(values, payloads, strict=True):
            if isinstance(value, Public):
                payload.metadata[PUBLIC_KEY] = b"true"
        return payloads


class CodecKeyError(StakeflowError):
    """A payload this process cannot decrypt: an unknown key id, or a key that does not open it."""


@dataclasses.dataclass(frozen=True)
class Keyring:
    """The configured keys, oldest first; the last one encrypts. Repr shows ids only."""

    keys: tuple[tuple[str, bytes], ...]
    source: str  # where they came from, for messages

    def __post_init__(self) -> None:
        if not self.keys:
            raise ConfigError(
                f"no codec keys in {self.source}: add a line '<key id> <base64 of 32 bytes>' "
                "(`stakeflow codec-key` prints one)"
            )

    @property
    def current(self) -> tuple[str, bytes]:
        return self.keys[-1]

    @property
    def ids(self) -> list[str]:
        return [k for k, _ in self.keys]

    def key(self, key_id: str) -> bytes | None:
        for k, v in self.keys:
            if k == key_id:
                return v
        return None

    def __repr__(self) -> str:
        return f"Keyring(ids={self.ids}, source={self.source!r})"


def parse_keys(text: str, source: str, *, separator: str | None = None) -> Keyring:
    """Keys from a key file (one ``id key`` per line) or the variable (``id:key`` separated by commas)."""
    entries: list[tuple[str, bytes]] = []
    items = text.split(",") if separator == ":" else text.splitlines()
    for n, raw in enumerate(items, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(":", 1) if separator == ":" else line.split()
        where = f"{source}, entry {n}"
        if len(parts) != 2 or not parts[0].strip():
            shape = "'<id>:<base64>'" if separator == ":" else "'<key id> <base64>'"
            raise ConfigError(f"{where} is not {shape}: write each key as {shape}")
        key_id, encoded = parts[0].strip(), parts[1].strip()
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{where} (key id '{key_id}'): the key is not base64") from None
        if len(key) != KEY_BYTES:
            raise ConfigError(
                f"{where} (key id '{key_id}'): a key is {KEY_BYTES} bytes (AES-256), this one is "
                f"{len(key)}: make one with `stakeflow codec-key`"
            )
        if any(key_id == k for k, _ in entries):
            raise ConfigError(f"{where}: key id '{key_id}' is listed twice: give each key its own id")
        entries.append((key_id, key))
    return Keyring(tuple(entries), source)


def load_keyring(settings: Settings) -> Keyring | None:
    """The configured keys, or None when encryption is off. ConfigError naming the fix for a bad source."""
    if settings.codec_keys is not None:
        return parse_keys(settings.codec_keys.get_secret_value(), "STAKEFLOW_CODEC_KEYS", separator=":")
    if settings.codec_keys_file is not None:
        path = settings.codec_keys_file.expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(
                f"cannot read the codec key file {path} (STAKEFLOW_CODEC_KEYS_FILE): {e.strerror}"
            ) from None
        return parse_keys(text, str(path))
    return None


def new_key_line(key_id: str) -> str:
    """A fresh key as a key-file line."""
    return f"{key_id} {base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over whole payloads, with the key id in the metadata (module docstring)."""

    def __init__(self, keyring: Keyring) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._keyring = keyring
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keyring.keys}

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get(PUBLIC_KEY) == b"true":
            return payload
        key_id, _ = self._keyring.current
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, payload.SerializeToString(), key_id.encode())
        return Payload(metadata={"encoding": ENCODING, KEY_ID: key_id.encode()}, data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before encryption was on (or by Temporal itself): as it is
        from cryptography.exceptions import InvalidTag

        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise CodecKeyError(
                f"a payload is encrypted with key id '{key_id}', which is not configured here (configured: "
                f"{', '.join(self._keyring.ids)}, from {self._keyring.source}): add that key back to "
                "STAKEFLOW_CODEC_KEYS_FILE / STAKEFLOW_CODEC_KEYS (retired keys stay listed until no history needs them)"
            )
        try:
            plain = cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise CodecKeyError(
                f"a payload under key id '{key_id}' does not open with the key configured under that id "
                f"({self._keyring.source}): the id names another key than the one that encrypted it, or the payload "
                "was altered"
            ) from None
        original = Payload()
        original.ParseFromString(plain)
        return original


def data_converter(settings: Settings) -> DataConverter:
    """The pydantic data converter, encrypting when keys are configured (one per process, keys read once)."""
    from temporalio.contrib.pydantic import pydantic_data_converter

    keyring = load_keyring(settings)
    if keyring is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_converter_class=PublicAwarePayloadConverter,
        payload_codec=EncryptionCodec(keyring),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )

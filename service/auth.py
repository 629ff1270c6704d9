"""Who is calling: API keys as Bearer tokens, stored only as SHA-256 hashes; open mode when configured so.

Settings.api_keys holds "<key id>:<sha256 hex of the key>" entries (`m4v keys create` prints a new key once,
with its entry); Settings.api_keys_file names a file of more such entries, one per line, that the API
re-reads when it changes (service/keys_file.py), so keys rotate without a restart. Keys from both are valid.
A job belongs to the id of the key that created it; reads with another key answer 404
(service.jobs.load_job). Keys are 256-bit random tokens, so a plain (unsalted) SHA-256 is enough: there is
nothing to brute-force, and a hash leaked from the config cannot be used as a key.

auth_mode=open (the `m4v up` default) makes every caller the anonymous owner None and logs a WARNING at start.
Every authenticated request also counts against its caller's rate limit (service.ratelimit): per key id,
or per client IP in open mode.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from m4v_core import ApiSettings
from service.errors import AuthenticationError
from service.keys_file import KeysFile, LabelledEntry
from service.ratelimit import RateLimiter

log = logging.getLogger(__name__)

OPEN_OWNER = "open"  # the owner segment of idempotency keys in open mode (never a key id)
TOKEN_PREFIX = "m4v_"
KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")

bearer = HTTPBearer(
    auto_error=False, description="API key: Authorization: Bearer m4v_... (`m4v keys create`)"
)


def new_api_key() -> str:
    """A fresh key: m4v_ + 43 URL-safe characters (256 random bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_entry(key_id: str, key: str) -> str:
    """The Settings.api_keys entry for key: "<key id>:<sha256 hex>"."""
    if not KEY_ID.match(key_id) or key_id == OPEN_OWNER:
        raise ValueError(f"key id {key_id!r}: use 1-64 of A-Z a-z 0-9 _ . - (not {OPEN_OWNER!r})")
    return f"{key_id}:{hash_api_key(key)}"


@dataclass(frozen=True)
class KeyRegistry:
    """sha256 hex -> key id."""

    by_hash: dict[str, str]

    @classmethod
    def from_entries(cls, entries: list[str]) -> KeyRegistry:
        """Parse "<id>:<sha256 hex>" entries; errors name the entry's position, never its text."""
        return cls({}).merged((f"M4V_API_KEYS entry {index}", entry) for index, entry in enumerate(entries))

    def merged(self, entries: Iterable[LabelledEntry]) -> KeyRegistry:
        """These keys plus (where, entry) pairs; errors name `where`, never the entry's text. A hash listed
        twice (in one source or both) must name the same key id."""
        by_hash = dict(self.by_hash)
        for where, entry in entries:
            key_id, _, digest = entry.strip().partition(":")
            digest = digest.lower()
            if not KEY_ID.match(key_id) or key_id == OPEN_OWNER or not SHA256_HEX.match(digest):
                raise ValueError(f"{where} is not '<key id>:<64 hex digits>'")
            if by_hash.setdefault(digest, key_id) != key_id:
                raise ValueError(f"{where} repeats the hash of key {by_hash[digest]!r}")
        return KeyRegistry(by_hash)

    def key_ids(self) -> list[str]:
        return sorted(set(self.by_hash.values()))

    def identify(self, token: str) -> str | None:
        """The key id of token, or None. A dict lookup on the token's SHA-256 leaks nothing useful in its
        timing: the caller cannot steer the digest."""
        return self.by_hash.get(hash_api_key(token))


class Keyring:
    """The keys in force: M4V_API_KEYS plus, when set, M4V_API_KEYS_FILE as last read. A file that cannot be
    read or parsed after start leaves the previous keys in force and logs an ERROR naming the line number."""

    def __init__(self, fixed: KeyRegistry, file: KeysFile | None) -> None:
        self.fixed = fixed  # M4V_API_KEYS: set at start
        self.file = file
        # At start a bad file raises, as a bad M4V_API_KEYS does: there are no previous keys to keep.
        self.registry = fixed if file is None else fixed.merged(file.read())

    def current(self) -> KeyRegistry:
        """The keys in force now, after re-reading the file if it is due and changed."""
        if self.file is None:
            return self.registry
        try:
            entries = self.file.poll()
            if entries is None:
                return self.registry
            registry = self.fixed.merged(entries)
        except (OSError, ValueError) as exc:
            log.error(
                "api keys file not reloaded, the previous keys stay in force: %s",
                exc,
                extra={"path": self.file.path, "key_ids": self.registry.key_ids()},
            )
            return self.registry
        before, after = set(self.registry.key_ids()), set(registry.key_ids())
        log.info(
            "api keys reloaded",
            extra={
                "path": self.file.path,
                "key_ids": sorted(after),
                "added": sorted(after - before),
                "removed": sorted(before - after),
                "keys": len(registry.by_hash),
            },
        )
        self.registry = registry
        return registry


@dataclass(frozen=True)
class Authenticator:
    open_mode: bool
    keys: Keyring
    limiter: RateLimiter

    @classmethod
    def from_settings(cls, settings: ApiSettings, limiter: RateLimiter) -> Authenticator:
        fixed = KeyRegistry.from_entries([k.get_secret_value() for k in settings.api_keys])
        file = settings.api_keys_file
        keys = Keyring(fixed, KeysFile(file, settings.api_keys_reload_s) if file else None)
        open_mode = settings.auth_mode == "open"
        if open_mode:
            log.warning(
                "auth_mode=open: no API keys are checked and every caller shares one owner; "
                "set M4V_AUTH_MODE=keys and M4V_API_KEYS or M4V_API_KEYS_FILE wherever others can reach it"
            )
        elif not keys.registry.by_hash:
            log.error(
                "auth_mode=keys but M4V_API_KEYS is empty%s: every job request will answer 401",
                " and M4V_API_KEYS_FILE has no entries (yet)" if file else " and M4V_API_KEYS_FILE is unset",
            )
        else:
            log.info("api keys loaded", extra={"key_ids": keys.registry.key_ids(), "path": file})
        return cls(open_mode, keys, limiter)

    async def owner(self, credentials: HTTPAuthorizationCredentials | None, client_ip: str) -> str | None:
        """The caller's owner id (None in open mode), after counting it against its rate limit."""
        if self.open_mode:
            await self.limiter.check(f"ip:{client_ip}")
            return None
        if credentials is None:
            raise AuthenticationError("missing API key: send the header 'Authorization: Bearer <key>'")
        key_id = self.keys.current().identify(credentials.credentials)
        if key_id is None:
            log.info("rejected an unknown API key", extra={"client": client_ip})
            raise AuthenticationError("invalid API key")
        await self.limiter.check(f"key:{key_id}")
        return key_id


async def current_owner(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str | None:
    """The caller's owner id; None in open mode. 401 without a known key, 429 over the rate limit."""
    auth: Authenticator = request.app.state.m4v.auth
    client_ip = request.client.host if request.client else "unknown"
    return await auth.owner(credentials, client_ip)


def owner_key(owner: str | None) -> str:
    return owner or OPEN_OWNER

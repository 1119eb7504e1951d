"""Password hashing and policy: argon2id as argon2-cffi intends, nothing home-made.

* argon2-cffi's defaults (argon2id, t=3, 64 MiB, p=4) are above the OWASP minimum; a hash made
  with older parameters is replaced at the next successful login (``check_needs_rehash``).
* Policy (OWASP/NIST, reliability.md): at least 8 characters, no composition rules, not in the
  common-password list, and at most ``MAX_BYTES`` -- checked BEFORE any hashing, so a 1 MB
  "password" costs nothing.
* argon2 is deliberately expensive (64 MiB each): a semaphore bounds how many run at once and
  they run in a worker thread, so the event loop keeps proxying meanwhile.
* An unknown email is verified against a dummy hash, so login costs the same either way.
"""

from __future__ import annotations

import asyncio
import functools
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

T = TypeVar("T")
MIN_LENGTH = 8
MAX_BYTES = 1024
CONCURRENT_HASHES = 2


@functools.cache
def common_passwords() -> frozenset[str]:
    """zxcvbn's 30,000 most frequent leaked passwords (the same source Authelia's zxcvbn
    policy uses); only those long enough to pass the length rule matter."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(p for p in FREQUENCY_LISTS["passwords"] if len(p) >= MIN_LENGTH)


def policy_error(password: str, email: str = "") -> str | None:
    """Return why ``password`` is refused, or None. Never hashes anything."""
    if len(password.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        return f"Passwords can be at most {MAX_BYTES} bytes long."
    if len(password) < MIN_LENGTH:
        return f"Passwords need at least {MIN_LENGTH} characters."
    lowered = password.lower()
    if lowered in common_passwords():
        return "That password is one of the most common ones; please choose another."
    if email and lowered == email.lower():
        return "Your password cannot be your email address."
    return None


class Passwords:
    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()
        self._semaphore = asyncio.Semaphore(CONCURRENT_HASHES)
        self._dummy: str | None = None
        self.hashes = 0  # how many argon2 operations ran: visible to tests and status

    async def _run(self, func: functools.partial[T]) -> T:
        async with self._semaphore:
            self.hashes += 1
            return await asyncio.to_thread(func)

    async def hash(self, password: str) -> str:
        if len(password.encode("utf-8", "surrogatepass")) > MAX_BYTES:
            raise ValueError("password too long to hash")  # policy_error() runs first
        return await self._run(functools.partial(self.hasher.hash, password))

    def hash_sync(self, password: str) -> str:
        """For the CLI, which has no event loop to protect."""
        self.hashes += 1
        return self.hasher.hash(password)

    async def verify(self, stored: str | None, password: str) -> tuple[bool, str | None]:
        """Check ``password``; returns (ok, new_hash_if_parameters_changed).

        ``stored`` None means an unknown account: verify against a dummy hash anyway.
        """
        if len(password.encode("utf-8", "surrogatepass")) > MAX_BYTES:
            return False, None
        if stored is None:
            if self._dummy is None:
                self._dummy = await self.hash("dummy password, never matches")
            await self._run(functools.partial(self._check, self._dummy, password))
            return False, None
        ok = await self._run(functools.partial(self._check, stored, password))
        if not ok:
            return False, None
        if self.hasher.check_needs_rehash(stored):
            return True, await self.hash(password)
        return True, None

    def _check(self, stored: str, password: str) -> bool:
        try:
            return bool(self.hasher.verify(stored, password))
        except (VerificationError, InvalidHashError):
            return False

"""Brute-force regulation, per account and per client IP (Authelia's and ASVS's numbers).

* Per account: 3 failures within 2 minutes ban the account for 5 minutes (Authelia), and
  never more than 100 failures an hour (ASVS 2.2.1).
* Accounts are counted by their canonical address (NFKC + casefold), so ``ANN@``, a
  fullwidth ``\\uff41nn@`` and ``ann@`` share one count, as they share one account.
* Per client IP: 30 failures within 10 minutes ban the address for 10 minutes, which stops
  one machine from spraying many accounts.

Counted in memory: the gateway is one process, and a restart forgetting failures costs an
attacker a restart's worth of guesses at most. The client IP comes from ``X-Forwarded-For``
only when the TCP peer is a configured trusted proxy (the rightmost untrusted hop).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from gateway.auth.accounts import canonical_email
from gateway.forwarded import client_ip as client_ip  # where the client IP is worked out


@dataclass(frozen=True)
class Rule:
    failures: int
    window: float
    ban: float


ACCOUNT_RULES = (Rule(3, 120.0, 300.0), Rule(100, 3600.0, 3600.0))
IP_RULES = (Rule(30, 600.0, 600.0),)


class Throttle:
    def __init__(
        self,
        account_rules: tuple[Rule, ...] = ACCOUNT_RULES,
        ip_rules: tuple[Rule, ...] = IP_RULES,
    ) -> None:
        self.rules = {"account": account_rules, "ip": ip_rules}
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._banned: dict[tuple[str, str], float] = {}

    def retry_after(self, account: str, ip: str) -> int:
        """Seconds until this account or IP may try again; 0 when allowed now."""
        now = time.monotonic()
        wait = 0.0
        for key in (("account", canonical_email(account)), ("ip", ip)):
            until = self._banned.get(key, 0.0)
            if until > now:
                wait = max(wait, until - now)
            elif until:
                del self._banned[key]
        return int(wait + 0.999)

    def failed(self, account: str, ip: str) -> None:
        now = time.monotonic()
        for key in (("account", canonical_email(account)), ("ip", ip)):
            rules = self.rules[key[0]]
            longest = max(r.window for r in rules)
            times = self._failures.setdefault(key, deque())
            times.append(now)
            while times and now - times[0] > longest:
                times.popleft()
            for rule in rules:
                recent = sum(1 for t in times if now - t <= rule.window)
                if recent >= rule.failures:
                    self._banned[key] = max(self._banned.get(key, 0.0), now + rule.ban)
        if len(self._failures) > 100_000:  # bound memory; bans are kept
            self._failures.clear()

    def succeeded(self, account: str) -> None:
        self._failures.pop(("account", canonical_email(account)), None)

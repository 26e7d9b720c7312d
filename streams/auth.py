"""The bearer-token check of every HTTP endpoint that takes one (the OTLP receiver, the gateway's admin
endpoints, the policy agent's pages): one implementation, compared in constant time."""

from __future__ import annotations

import hmac


def bearer_matches(authorization: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer <token>``. False when no token is configured
    (or it is empty): a caller that leaves an endpoint open without a token decides that itself."""
    if not token:
        return False
    return hmac.compare_digest((authorization or "").encode(), f"Bearer {token}".encode())

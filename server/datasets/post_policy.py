"""S3-style POST policies signed by tympan itself, for the local blob store.

With S3 the client POSTs its form to the S3 service, which checks the policy; with the local
store tympan serves the same kind of form, so that one client code (``requests.post(upload_url,
data=fields, files={"file": f})``) works on both. The fields are S3's: ``key``, ``policy`` (the
base64 JSON of the expiry and the conditions), ``x-amz-algorithm``, ``x-amz-credential``,
``x-amz-date``, ``x-amz-signature`` and ``Content-Type``. The signature is an HMAC-SHA256 of
the policy under the server's persisted secret (as the media upload grants are signed), so a
changed policy is worthless, and every other field must match its condition in the policy.

A client may leave out the fields that only repeat the policy (``Content-Type`` and the
``x-amz-*`` ones but the signature): Relay's own curl example sends only ``key``, ``policy`` and
``x-amz-signature``. What it sends must match; ``key`` is required, unknown fields are refused
(S3's "extra input fields"), except S3's ``x-ignore-*``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from protocol.errors import Forbidden

__all__ = ["ALGORITHM", "FormPolicy", "PostPolicySigner"]

ALGORITHM = "TYMPAN-HMAC-SHA256"
_CONTEXT = b"tympan post policy\x00"  # this secret signs nothing else with the same layout
_CREDENTIAL = "tympan/local/upload"
MAX_POLICY_CHARS = 8192
_SIGNED = ("key", "content-type", "x-amz-algorithm", "x-amz-credential", "x-amz-date")
_UNCHECKED = ("policy", "x-amz-signature")


@dataclass(frozen=True)
class FormPolicy:
    """What a verified form allows: one key, a size range, a content type."""

    key: str
    min_bytes: int
    max_bytes: int
    content_type: str
    expires_at_s: int


def _iso(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _amz_date(epoch_s: int) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y%m%dT%H%M%SZ")


class PostPolicySigner:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the policy signing secret must be at least 16 bytes")
        self._secret = secret

    def _mac(self, policy: str) -> str:
        return hmac.new(self._secret, _CONTEXT + policy.encode(), hashlib.sha256).hexdigest()

    def sign(self, policy: FormPolicy, now_s: int) -> dict[str, str]:
        """The form's fields, in the order S3 lists them."""
        fields = {
            "key": policy.key,
            "Content-Type": policy.content_type,
            "x-amz-algorithm": ALGORITHM,
            "x-amz-credential": _CREDENTIAL,
            "x-amz-date": _amz_date(now_s),
        }
        document = {
            "expiration": _iso(policy.expires_at_s),
            "conditions": [
                *({name: value} for name, value in fields.items()),
                ["content-length-range", policy.min_bytes, policy.max_bytes],
            ],
        }
        encoded = base64.b64encode(json.dumps(document, separators=(",", ":")).encode()).decode()
        return {**fields, "policy": encoded, "x-amz-signature": self._mac(encoded)}

    def verify(self, fields: Mapping[str, str], now_s: float) -> FormPolicy:
        """The policy the form's fields carry; ``Forbidden`` when a field was changed, one is
        missing or extra, or the policy has expired (checked after the signature, so a client
        that edits the expiry is told the form is invalid, not that it expired)."""
        invalid = Forbidden(
            "this upload form is invalid: a field was altered or it was not issued here"
        )
        by_name = {name.lower(): value for name, value in fields.items()}
        encoded, signature = by_name.get("policy", ""), by_name.get("x-amz-signature", "")
        if not encoded or not signature or len(encoded) > MAX_POLICY_CHARS:
            raise Forbidden("the upload form needs its policy and x-amz-signature fields")
        if not hmac.compare_digest(signature.encode(), self._mac(encoded).encode()):
            raise invalid
        try:
            document = json.loads(base64.b64decode(encoded, validate=True))
            conditions = _conditions(document["conditions"])
            expires_at_s = int(
                datetime.strptime(document["expiration"], "%Y-%m-%dT%H:%M:%S.000Z")
                .replace(tzinfo=UTC)
                .timestamp()
            )
            low, high = conditions.pop("content-length-range")
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise invalid from None
        signed = {name.lower(): value for name, value in conditions.items()}
        for name, value in fields.items():
            lowered = name.lower()  # S3 reads form field names case-insensitively
            if lowered in _UNCHECKED or lowered.startswith("x-ignore-"):
                continue
            if lowered not in _SIGNED:
                raise Forbidden(f"the upload form has a field its policy does not allow: {name!r}")
            if signed.get(lowered) != value:
                raise Forbidden(f"the upload form's {name!r} does not match its policy")
        if "key" not in {name.lower() for name in fields}:
            raise Forbidden("the upload form needs its key field")
        if now_s >= expires_at_s:
            raise Forbidden("this upload form has expired; ask for a new upload URL")
        return FormPolicy(
            str(conditions["key"]),
            int(low),
            int(high),
            str(conditions["Content-Type"]),
            expires_at_s,
        )


def _conditions(raw: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in raw:
        if isinstance(item, dict) and len(item) == 1:
            found.update(item)
        elif isinstance(item, list) and len(item) == 3 and item[0] == "content-length-range":
            found["content-length-range"] = (int(item[1]), int(item[2]))
        else:
            raise ValueError("unknown condition")
    return found

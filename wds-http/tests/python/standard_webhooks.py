#!/usr/bin/env python3
"""An independent Standard Webhooks implementation (symmetric "v1" scheme),
written from the specification's text with the standard library only, to
cross-check wds-http's signatures.

Spec points implemented:
- the secret is "whsec_" + base64; the HMAC key is the decoded part;
- the signed content is "{webhook-id}.{webhook-timestamp}.{body}";
- the signature is "v1," + base64(HMAC-SHA256(key, content));
- webhook-signature is a space-delimited list; any matching "v1" entry
  verifies, compared in constant time;
- the timestamp must be within a tolerance (5 minutes) of now.

stdin:  {"verify": [{"secret", "id", "timestamp", "body_b64", "signature", "now"}],
         "sign":   [{"secret", "id", "timestamp", "body_b64"}]}
stdout: {"verified": [bool, ...], "signed": ["v1,...", ...]}
"""
import base64
import hashlib
import hmac
import json
import sys

PREFIX = "whsec_"
TOLERANCE_SECONDS = 5 * 60


def key_of(secret):
    if not secret.startswith(PREFIX):
        raise ValueError("secret without whsec_ prefix")
    return base64.b64decode(secret[len(PREFIX):], validate=True)


def sign(secret, msg_id, timestamp, body):
    content = b".".join([msg_id.encode(), timestamp.encode(), body])
    digest = hmac.new(key_of(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret, msg_id, timestamp, body, header, now):
    if abs(now - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    expected = sign(secret, msg_id, timestamp, body).split(",", 1)[1]
    for entry in header.split(" "):
        version, _, signature = entry.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return True
    return False


def main():
    request = json.load(sys.stdin)
    verified = [
        verify(c["secret"], c["id"], c["timestamp"], base64.b64decode(c["body_b64"]),
               c["signature"], c["now"])
        for c in request.get("verify", [])
    ]
    signed = [
        sign(c["secret"], c["id"], c["timestamp"], base64.b64decode(c["body_b64"]))
        for c in request.get("sign", [])
    ]
    json.dump({"verified": verified, "signed": signed}, sys.stdout)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Checks wds-http's signatures with the official Standard Webhooks Python
package (`standardwebhooks` on PyPI), which scripts/test installs.

stdin:  {"cases": [{"secret", "id", "timestamp", "body", "signature"}]}
stdout: {"verified": [bool, ...], "signed": ["v1,...", ...]}
"""
import json
import sys
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

request = json.load(sys.stdin)
verified, signed = [], []
for case in request["cases"]:
    hook = Webhook(case["secret"])
    headers = {
        "webhook-id": case["id"],
        "webhook-timestamp": case["timestamp"],
        "webhook-signature": case["signature"],
    }
    try:
        hook.verify(case["body"], headers)
        verified.append(True)
    except WebhookVerificationError:
        verified.append(False)
    when = datetime.fromtimestamp(int(case["timestamp"]), tz=timezone.utc)
    signed.append(hook.sign(case["id"], when, case["body"]))
json.dump({"verified": verified, "signed": signed}, sys.stdout)

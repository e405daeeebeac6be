#!/usr/bin/env python3
"""Daydream's own Python SDK (PyPI `daydream-sdk`, pinned in .ci/run)
pointed at DreamStream: create, update, read, list and delete a stream with
the SDK's methods, which validate every answer against Daydream's models.
The SDK has no status call; the status is read with the SDK's bearer over
plain HTTP, as Daydream documents it.

DAYDREAM_BASE_URL and DAYDREAM_API_KEY say where and with which key.
"""

import json
import os
import sys
import urllib.request

from daydream import Daydream

BASE = os.environ["DAYDREAM_BASE_URL"].rstrip("/")
KEY = os.environ["DAYDREAM_API_KEY"]

dd = Daydream(bearer=KEY, server_url=BASE)

stream = dd.streams.create_stream(request={
    "pipeline": "streamdiffusion",
    "params": {"model_id": "stabilityai/sd-turbo", "prompt": "superman", "seed": 42},
})
assert stream.id and stream.stream_key and stream.whip_url, stream

updated = dd.streams.update_stream(id=stream.id, body={
    "pipeline": "streamdiffusion",
    "params": {
        "model_id": "stabilityai/sd-turbo",
        "prompt": [["a watercolor city", 0.6], ["neon lights", 0.4]],
        "guidance_scale": 1.2,
    },
})
assert updated.id == stream.id, updated

got = dd.streams.get_stream_by_id(id=stream.id)
assert got.id == stream.id, got

listed = dd.streams.get_all_streams()
assert listed.success and any(s["id"] == stream.id for s in listed.data), listed

req = urllib.request.Request(f"{BASE}/v1/streams/{stream.id}/status")
req.add_header("Authorization", "Bearer " + KEY)
with urllib.request.urlopen(req, timeout=30) as resp:
    status = json.loads(resp.read())
last = status["data"]["inference_status"]["last_params"]
assert status["success"] and last["guidance_scale"] == 1.2, status

deleted = dd.streams.delete_stream(id=stream.id)
assert deleted.success, deleted

print("daydream sdk: created, updated, read, listed, status read, deleted")
sys.exit(0)

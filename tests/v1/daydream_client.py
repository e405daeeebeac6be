#!/usr/bin/env python3
"""A client written for Daydream's API (api.daydream.live), run against
DreamStream by changing the base URL: the calls Daydream's SDK makes
(create, update, status, delete by query) with Python's standard library.

DAYDREAM_BASE_URL and DAYDREAM_API_KEY say where and with which key.
Exits non-zero, saying why, when an answer is not what Daydream answers.
"""

import json
import os
import sys
import urllib.error
import urllib.request

BASE = os.environ["DAYDREAM_BASE_URL"].rstrip("/")
KEY = os.environ["DAYDREAM_API_KEY"]


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + KEY)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def expect(cond, what, answer):
    if not cond:
        sys.exit(f"{what}: {json.dumps(answer)}")


# Create a StreamDiffusion stream, as Daydream's quick start does.
status, stream = call("POST", "/v1/streams", {
    "pipeline": "streamdiffusion",
    "params": {
        "model_id": "stabilityai/sd-turbo",
        "prompt": "superman",
        "negative_prompt": "blurry, low quality, flat, 2d",
        "num_inference_steps": 50,
        "seed": 42,
        "t_index_list": [0, 8, 17],
        "width": 512,
        "height": 512,
    },
})
expect(status == 201, "create answers 201", stream)
for field in ("id", "stream_key", "created_at", "output_playback_id", "whip_url", "name", "params"):
    expect(field in stream, f"create answers {field}", stream)
expect(stream["whip_url"].startswith("http"), "whip_url is a URL", stream)
stream_id = stream["id"]

# Update the prompt and the seed, weighted, as the SDK's update sends them.
status, updated = call("PATCH", f"/v1/streams/{stream_id}", {
    "pipeline": "streamdiffusion",
    "params": {
        "model_id": "stabilityai/sd-turbo",
        "prompt": [["a watercolor city", 0.7], ["neon lights", 0.3]],
        "seed": [[42, 0.5], [7, 0.5]],
        "guidance_scale": 1.2,
        "delta": 0.7,
    },
})
expect(status == 200, "update answers 200", updated)
expect(updated["params"]["prompt"][0][0] == "a watercolor city", "update keeps the prompt list", updated)

# Read the status: Daydream's envelope and inference_status.
status, st = call("GET", f"/v1/streams/{stream_id}/status")
expect(status == 200 and st["success"] is True, "status succeeds", st)
inference = st["data"]["inference_status"]
for field in ("input_fps", "output_fps", "last_params", "last_params_update_time", "restart_count", "last_error"):
    expect(field in inference, f"inference_status has {field}", st)
expect(inference["last_params"]["guidance_scale"] == 1.2, "status shows the new params", st)
expect("whep_url" in st["data"]["gateway_status"], "gateway_status has whep_url", st)

# Delete the way the SDK does, then the stream is gone.
status, deleted = call("DELETE", f"/v1/streams?id={stream_id}")
expect(status == 200 and deleted.get("success") is True, "delete succeeds", deleted)
status, gone = call("GET", f"/v1/streams/{stream_id}")
expect(status == 404 and gone["success"] is False and gone["code"] == "STREAMS/NOT_FOUND", "a deleted stream is not found", gone)

print("daydream script: created, patched, status read, deleted")

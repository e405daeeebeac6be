"""Send a photo to a DreamStream stream and save five restyled frames (the seed protocol).
usage: python3 seed_client.py http://127.0.0.1:8080 STREAM STREAM_KEY photo.jpg"""
import asyncio, base64, json, sys
import websockets

async def main(server, stream, key, photo):
    ws, auth = server.replace("http", "ws", 1), {"Authorization": f"Bearer {key}"}
    frame = json.dumps({"type": "frame", "frame": base64.b64encode(open(photo, "rb").read()).decode()})
    async with websockets.connect(f"{ws}/ws/viewer/{stream}", max_size=None) as viewer, \
            websockets.connect(f"{ws}/ws/broadcaster/{stream}", additional_headers=auth) as camera:
        async def send():  # ten frames a second, like a small camera
            while True:
                await camera.send(frame)
                await asyncio.sleep(0.1)
        sender, saved = asyncio.create_task(send()), 0
        while saved < 5:
            message = json.loads(await viewer.recv())
            if message["type"] == "frame":  # the restyled picture, as a data URL
                saved += 1
                open(f"restyled-{saved}.jpg", "wb").write(base64.b64decode(message["frame"].split(",", 1)[1]))
        sender.cancel()
        await camera.send(json.dumps({"type": "stop"}))
    print(f"saved {saved} restyled frames")

asyncio.run(main(*sys.argv[1:5]))

// A plain WebSocket relay with the `ws` package: what one would write in Node
// without DreamStream. A broadcaster on /ws/broadcast/NAME sends binary frames;
// every viewer on /ws/watch/NAME gets each frame as it is (no processing).
// Slow viewers are skipped while their buffer is over 1 MB (so the relay does
// not queue without bound either).
const http = require("http");
const { WebSocketServer } = require("ws");

const port = Number(process.env.PORT || 8090);
const rooms = new Map(); // name -> Set of viewer sockets
const server = http.createServer((req, res) => {
  if (req.url === "/healthz") { res.end("ok"); return; }
  res.statusCode = 404; res.end();
});
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 4 << 20 });

server.on("upgrade", (req, socket, head) => {
  const m = /^\/ws\/(broadcast|watch)\/([a-z0-9_]{1,64})$/.exec(req.url || "");
  if (!m) { socket.destroy(); return; }
  wss.handleUpgrade(req, socket, head, ws => {
    const [, role, name] = m;
    if (!rooms.has(name)) rooms.set(name, new Set());
    const viewers = rooms.get(name);
    if (role === "watch") {
      viewers.add(ws);
      ws.on("close", () => viewers.delete(ws));
      return;
    }
    ws.on("message", (data, isBinary) => {
      if (!isBinary) return;
      for (const v of viewers) {
        if (v.readyState === 1 && v.bufferedAmount < (1 << 20)) v.send(data, { binary: true });
      }
    });
  });
});
server.listen(port, "127.0.0.1", () => console.log(`relay on ${port}`));

// The studio: camera → canvas → JPEG (with the DSF1 header) → WebSocket,
// restyled frames back for the preview, style controls, live status.
(function () {
  const $ = id => document.getElementById(id);
  const video = $("camera"), out = $("output"), grab = $("grab");
  const form = $("golive"), nameInput = $("name"), startBtn = $("start"), stopBtn = $("stop");
  let ws = null, timer = null, seq = 0, wanted = false, cameraReady = null, retry = 1000;

  nameInput.addEventListener("input", () => { $("url-name").textContent = nameInput.value.toLowerCase() || "your_name"; });
  $("strength").addEventListener("input", e => { $("strength-value").textContent = Number(e.target.value).toFixed(2); });

  function notice(text, isError) {
    const n = $("notice");
    n.textContent = text || ""; n.hidden = !text; n.classList.toggle("error", !!isError);
  }
  function setState(text, live) {
    const s = $("state"); s.textContent = text; s.classList.toggle("live", !!live);
  }

  async function camera() {
    if (!cameraReady) {
      cameraReady = navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false })
        .then(stream => { video.srcObject = stream; return video.play(); });
    }
    return cameraReady;
  }

  function style() {
    return { type: "style", style: $("style").value, strength: Number($("strength").value), preserve_color: $("preserve").checked };
  }
  ["style", "strength", "preserve"].forEach(id => $(id).addEventListener("change", () => {
    if (ws && ws.readyState === 1) ws.send(JSON.stringify(style()));
  }));
  $("show-output").addEventListener("change", e => { $("output-pane").hidden = !e.target.checked; });
  ["size", "fps"].forEach(id => $(id).addEventListener("change", () => { if (timer) startCapture(); }));

  function startCapture() {
    clearInterval(timer);
    const [w, h] = $("size").value.split("x").map(Number);
    grab.width = w; grab.height = h;
    const g = grab.getContext("2d");
    const fps = Number($("fps").value);
    let inFlight = false;
    timer = setInterval(() => {
      if (!ws || ws.readyState !== 1 || inFlight || video.readyState < 2) return;
      // Freshness over completeness: skip a frame rather than queue behind a slow uplink.
      if (ws.bufferedAmount > 2 * 64 * 1024) return;
      inFlight = true;
      g.drawImage(video, 0, 0, w, h);
      const captured = Date.now();
      grab.toBlob(blob => {
        inFlight = false;
        if (!blob || !ws || ws.readyState !== 1) return;
        blob.arrayBuffer().then(buf => ws.send(DSF.encode(++seq, captured, buf)));
      }, "image/jpeg", 0.8);
    }, 1000 / fps);
  }

  function connect(name) {
    ws = new WebSocket(DSF.wsUrl("/ws/broadcast/" + encodeURIComponent(name)));
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      retry = 1000;
      setState("LIVE", true);
      ws.send(JSON.stringify(style()));
      startCapture();
      const link = $("watch-link"); link.href = "/s/" + name; link.hidden = false;
    };
    ws.onmessage = ev => {
      if (typeof ev.data !== "string") {
        if ($("show-output").checked) DSF.show(out, DSF.decode(ev.data).jpeg);
        return;
      }
      const m = JSON.parse(ev.data);
      switch (m.type) {
        case "viewer_count": $("viewers").textContent = m.count; break;
        case "latency":
          $("latency").textContent = m.p50_ms.toFixed(0) + " ms";
          $("fps-in").textContent = m.fps_in.toFixed(1);
          $("fps-out").textContent = m.fps_out.toFixed(1);
          $("dropped").textContent = m.dropped;
          break;
        case "error": notice(m.message, true); break;
        case "notice": notice(m.message, false); break;
        case "ended": wanted = false; notice("The stream ended (" + m.reason + ").", false); break;
      }
    };
    ws.onclose = ev => {
      clearInterval(timer); timer = null;
      setState(wanted ? "Reconnecting…" : "Offline", false);
      if (ev.code === 1009) notice("A frame was too big for the server: choose a smaller frame size.", true);
      if (wanted) { setTimeout(() => connect(name), retry); retry = Math.min(retry * 2, 10000); }
      else { startBtn.disabled = false; stopBtn.disabled = true; }
    };
  }

  form.addEventListener("submit", async e => {
    e.preventDefault();
    const name = nameInput.value.trim().toLowerCase();
    notice("");
    try { await camera(); } catch (err) { notice("The camera is not available: " + err.message, true); return; }
    wanted = true; startBtn.disabled = true; stopBtn.disabled = false;
    connect(name);
  });
  stopBtn.addEventListener("click", () => {
    wanted = false;
    if (ws && ws.readyState === 1) ws.send(JSON.stringify({ type: "stop" }));
  });
  camera().catch(() => {}); // show the preview early when allowed
})();

// The viewer page: frames and events over /ws/watch, reconnect after a blip,
// wait for the streamer when offline.
(function () {
  const root = document.querySelector(".watch");
  const user = root.dataset.user;
  const $ = id => document.getElementById(id);
  const img = $("frame"), overlay = $("overlay"), overlayText = $("overlay-text");
  let retry = 1000;

  function offline(text) {
    overlayText.textContent = text; overlay.hidden = false;
    $("state").textContent = "Offline"; $("state").classList.remove("live");
  }

  function connect() {
    const ws = new WebSocket(DSF.wsUrl("/ws/watch/" + encodeURIComponent(user)));
    ws.binaryType = "arraybuffer";
    let ended = false;
    ws.onmessage = ev => {
      if (typeof ev.data !== "string") {
        const f = DSF.decode(ev.data);
        DSF.show(img, f.jpeg);
        overlay.hidden = true;
        if (f.latencyUs) $("latency").textContent = (f.latencyUs / 1000).toFixed(0) + " ms";
        return;
      }
      const m = JSON.parse(ev.data);
      switch (m.type) {
        case "hello":
          retry = 1000;
          $("state").textContent = "LIVE"; $("state").classList.add("live");
          if (m.style) $("style").textContent = m.style;
          break;
        case "viewer_count": $("viewers").textContent = m.count; break;
        case "style_changed": $("style").textContent = m.style + (m.by ? " (by @" + m.by + ")" : ""); break;
        case "offline": ended = true; offline(user + " is offline. This page starts playing when they go live."); break;
        case "ended": ended = true; offline("The stream has ended. This page starts playing when " + user + " goes live again."); break;
      }
    };
    ws.onclose = () => {
      if (!ended) offline("Connection lost — reconnecting…");
      setTimeout(connect, ended ? 5000 : retry);
      retry = Math.min(retry * 2, 10000);
    };
  }
  connect();
})();

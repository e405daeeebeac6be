// The viewer page: frames and events over /ws/watch, reconnect after a blip,
// wait for the streamer when offline; chat and style requests.
(function () {
  const root = document.querySelector(".watch");
  const user = root.dataset.user, csrf = root.dataset.csrf;
  const $ = id => document.getElementById(id);
  const img = $("frame"), overlay = $("overlay"), overlayText = $("overlay-text");
  const list = $("comments");
  const api = "/api/streams/" + encodeURIComponent(user);
  let retry = 1000;
  const player = window.DSWebRTC ? DSWebRTC.watch(user) : null;

  function offline(text) {
    overlayText.textContent = text; overlay.hidden = false;
    $("state").textContent = "Offline"; $("state").classList.remove("live");
  }
  function note(el, text, isError) {
    el.textContent = text || ""; el.hidden = !text;
    el.classList.toggle("error", !!isError);
  }
  function switches(s) {
    $("request-panel").hidden = !s.requests;
    $("chat-off").hidden = s.comments;
    const f = $("comment-form"); if (f) f.hidden = !s.comments;
  }

  async function loadChat() {
    try {
      const comments = await fetch(api + "/comments").then(r => r.ok ? r.json() : []);
      comments.forEach(c => Community.addComment(list, c));
      const r = await fetch(api + "/requests").then(r => r.ok ? r.json() : null);
      if (r) switches(r.settings);
    } catch (_) { /* offline */ }
  }

  function connect() {
    const ws = new WebSocket(DSF.wsUrl("/ws/watch/" + encodeURIComponent(user) + "?cid=" + Community.tabId()));
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
          loadChat();
          if (player) player.live();
          break;
        case "viewer_count": $("viewers").textContent = m.count; break;
        case "style_changed": $("style").textContent = m.style + (m.by ? " (style by @" + m.by + ")" : ""); break;
        case "comment": Community.addComment(list, m); break;
        case "comment_deleted": Community.removeComment(list, m.id); break;
        case "community_settings": switches(m); break;
        case "request_decided":
          if (m.by === root.dataset.me) note($("request-note"), "Your request " + m.label + " was " + m.status + ".");
          break;
        case "offline": if (player) player.ended(); ended = true; offline(user + " is offline. This page starts playing when they go live."); break;
        case "ended": if (player) player.ended(); ended = true; offline("The stream has ended. This page starts playing when " + user + " goes live again."); break;
      }
    };
    ws.onclose = () => {
      if (!ended) offline("Connection lost — reconnecting…");
      setTimeout(connect, ended ? 5000 : retry);
      retry = Math.min(retry * 2, 10000);
    };
  }

  const cf = $("comment-form");
  if (cf) cf.addEventListener("submit", async e => {
    e.preventDefault();
    const input = $("comment-text"), text = input.value.trim();
    if (!text) return;
    try { await Community.call("POST", api + "/comments", { text }, csrf); input.value = ""; note($("chat-note"), ""); }
    catch (err) { note($("chat-note"), err.message, true); }
  });
  const rf = $("request-form");
  if (rf) rf.addEventListener("submit", async e => {
    e.preventDefault();
    try { const r = await Community.call("POST", api + "/requests", { style: $("req-style").value }, csrf); note($("request-note"), "Requested " + r.label + ": waiting for " + user + "."); }
    catch (err) { note($("request-note"), err.message, true); }
  });
  const pf = $("prompt-form");
  if (pf) pf.addEventListener("submit", async e => {
    e.preventDefault();
    try { const r = await Community.call("POST", api + "/requests", { prompt: $("req-prompt").value }, csrf); note($("request-note"), "Requested " + r.label + "."); }
    catch (err) { note($("request-note"), err.message, true); }
  });
  const picf = $("picture-form");
  if (picf) picf.addEventListener("submit", async e => {
    e.preventDefault();
    const file = $("req-picture").files[0];
    if (!file) return;
    try { const r = await Community.call("POST", api + "/requests/picture", undefined, csrf, file); note($("request-note"), "Requested " + r.label + "."); }
    catch (err) { note($("request-note"), err.message, true); }
  });
  connect();
})();

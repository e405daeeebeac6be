// The viewer page: frames and events over /ws/watch, reconnect after a blip,
// wait for the streamer when offline; chat and style requests.
//
// What the page shows is always the channel's true state: LIVE only while the
// streamer's camera is connected ("reconnecting…" over the last frame during
// an outage), and nothing left over from a stream that ended (viewers,
// latency, style, an open chat box).
(function () {
  const root = document.querySelector(".watch");
  const user = root.dataset.user, csrf = root.dataset.csrf;
  const $ = id => document.getElementById(id);
  const img = $("frame"), overlay = $("overlay"), overlayText = $("overlay-text");
  const video = $("webrtc-video");
  const list = $("comments");
  const api = "/api/streams/" + encodeURIComponent(user);
  let retry = 1000, live = false, switchesNow = { comments: true, requests: true };
  // The WebSocket's pictures: off while WHEP plays (the WHEP session is this
  // tab's viewer then; the socket stays for events and chat). Always sent:
  // the server turns them off by itself when this tab's WHEP starts.
  let sock = null, pictures = true;
  function setPictures(on) {
    pictures = on;
    if (sock && sock.readyState === WebSocket.OPEN) sock.send(JSON.stringify({ type: "frames", send: on }));
    if (!on && hasPicture()) uncoverIfLive();
  }
  const rtc = window.DSWebRTC ? DSWebRTC.watch(user, setPictures) : null;
  // A picture to show: a JPEG from the socket, or the WHEP video's.
  function hasPicture() {
    return !!img.getAttribute("src") || (!!video && !video.hidden && video.videoWidth > 0);
  }
  function uncoverIfLive() {
    if (live && $("state").classList.contains("live")) overlay.hidden = true;
  }
  // WHEP's first picture uncovers the player as a JPEG's does.
  if (video) ["playing", "resize"].forEach(e => video.addEventListener(e, () => { if (hasPicture()) uncoverIfLive(); }));

  // Screen readers hear changes of state, never the numbers that tick.
  function announce(text) { $("announce").textContent = text; }
  function setState(text, cls) {
    const s = $("state");
    s.textContent = text;
    s.classList.toggle("live", cls === "live");
    s.classList.toggle("waiting", cls === "waiting");
  }
  function cover(text) { overlayText.textContent = text; overlay.hidden = false; }
  function note(el, text, isError) {
    el.textContent = text || ""; el.hidden = !text;
    el.classList.toggle("error", !!isError);
  }
  // The chat box and the request panel follow the streamer's switches, and
  // are closed while the channel is offline.
  function switches(s) {
    if (s) switchesNow = s;
    const chatOpen = live && switchesNow.comments;
    $("request-panel").hidden = !(live && switchesNow.requests);
    $("chat-off").hidden = chatOpen;
    $("chat-off").textContent = live ? "Comments are off." : "The chat opens when " + user + " is live.";
    const f = $("comment-form"); if (f) f.hidden = !chatOpen;
  }
  function offline(text) {
    live = false;
    cover(text);
    setState("Offline", null);
    $("viewers").textContent = "0";
    $("latency").textContent = "–";
    $("style").textContent = "–";
    switches();
  }
  img.addEventListener("error", () => img.removeAttribute("src"));

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
    sock = ws;
    ws.onopen = () => { if (!pictures) ws.send(JSON.stringify({ type: "frames", send: false })); };
    let ended = false;
    ws.onmessage = ev => {
      if (typeof ev.data !== "string") {
        const f = DSF.decode(ev.data);
        DSF.show(img, f.jpeg);
        uncoverIfLive();
        if (f.latencyUs) $("latency").textContent = (f.latencyUs / 1000).toFixed(0) + " ms";
        return;
      }
      const m = JSON.parse(ev.data);
      switch (m.type) {
        case "hello":
          retry = 1000;
          // A new stream: its own frames (the newest follows at once), not the last one's.
          if (!live) img.removeAttribute("src");
          live = true;
          if (m.style) $("style").textContent = m.style;
          if (m.viewers != null) $("viewers").textContent = m.viewers;
          if (m.broadcaster === false) {
            setState("Starting…", "waiting");
            cover("Waiting for " + user + "'s camera…");
          } else {
            setState("LIVE", "live");
            if (hasPicture()) overlay.hidden = true; else cover("Connecting…");
          }
          announce(user + " is live.");
          switches();
          loadChat();
          if (rtc) rtc.live();
          break;
        case "broadcaster":
          if (m.connected) {
            setState("LIVE", "live");
            if (hasPicture()) overlay.hidden = true; else cover("Connecting…");
            announce(user + " is back.");
          } else {
            setState("Reconnecting…", "waiting");
            cover(user + "'s connection dropped — reconnecting…");
            $("latency").textContent = "–";
            announce(user + "'s connection dropped. Waiting for it to come back.");
          }
          break;
        case "viewer_count": $("viewers").textContent = m.count; break;
        // While WHEP plays no frame carries its latency: the stream's median does.
        case "latency": if (!pictures) $("latency").textContent = m.p50_ms.toFixed(0) + " ms"; break;
        case "style_changed": $("style").textContent = m.style + (m.by ? " (style by @" + m.by + ")" : ""); break;
        case "comment": Community.addComment(list, m); break;
        case "comment_deleted": Community.removeComment(list, m.id); break;
        case "community_settings": switches(m); break;
        case "request_decided":
          if (m.by === root.dataset.me) note($("request-note"), "Your request " + m.label + " was " + m.status + ".");
          break;
        case "offline":
          if (rtc) rtc.ended();
          ended = true;
          offline(user + " is offline. This page starts playing when they go live.");
          break;
        case "ended":
          if (rtc) rtc.ended();
          ended = true;
          offline("The stream has ended. This page starts playing when " + user + " goes live again.");
          announce("The stream has ended.");
          break;
      }
    };
    ws.onclose = () => {
      if (!ended) {
        cover("Connection lost — reconnecting…");
        setState("Reconnecting…", "waiting");
      }
      setTimeout(connect, ended ? 5000 : retry);
      retry = Math.min(retry * 2, 10000);
    };
  }

  // Full screen: the player (picture and overlay) fills the screen.
  const player = $("player"), fs = $("fullscreen");
  if (!player.requestFullscreen) fs.hidden = true;
  fs.addEventListener("click", () => {
    if (document.fullscreenElement) document.exitFullscreen();
    else player.requestFullscreen().catch(() => {});
  });
  document.addEventListener("fullscreenchange", () => {
    const on = document.fullscreenElement === player;
    fs.textContent = on ? "Exit full screen" : "Full screen";
    fs.setAttribute("aria-pressed", String(on));
  });

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
  live = root.dataset.live === "true";
  switchesNow = { comments: root.dataset.comments === "true", requests: root.dataset.requests === "true" };
  connect();
})();

// The studio: camera → canvas → JPEG (with the DSF1 header) → WebSocket,
// restyled frames back for the preview, style controls, live status.
//
// Sections: announcements · credits and time left · audience (chat, requests,
// styles shown) · style controls · frame size · the stream's life (start,
// broadcaster socket, end). The server decides whether a start is allowed;
// the page only disables Go live when the account has neither credits nor
// paid time left, and shows the server's refusal once.
(function () {
  const $ = id => document.getElementById(id);
  const video = $("camera"), out = $("output"), grab = $("grab");
  const form = $("golive"), startBtn = $("start"), stopBtn = $("stop");
  const root = document.querySelector(".studio"), username = root.dataset.user;
  const csrf = root.dataset.csrf, api = "/api/streams/" + encodeURIComponent(username);
  let ws = null, timer = null, seq = 0, wanted = false, cameraReady = null, retry = 1000;

  // ---- announcements: state changes only (never the numbers that tick) ----
  function announce(text) { $("announce").textContent = text; }
  function notice(text, isError, link) {
    const n = $("notice");
    n.textContent = text || "";
    if (link) {
      const a = document.createElement("a");
      a.href = link.href; a.textContent = link.text;
      if (link.newTab) { a.target = "_blank"; a.rel = "noopener"; }
      n.append(" ", a);
    }
    n.hidden = !text; n.classList.toggle("error", !!isError);
  }
  function setState(text, live) {
    const s = $("state"); s.textContent = text; s.classList.toggle("live", !!live);
  }
  function resetStats() {
    $("viewers").textContent = "0";
    $("latency").textContent = "–";
    $("fps-in").textContent = "–";
    $("fps-out").textContent = "–";
  }

  // ---- credits and time left ----
  // `seconds_left` (from the server) is all the streaming time left: the rest
  // of the paid period plus what the balance buys. It counts down here
  // between the server's pushes while live.
  const Credits = (function () {
    let left = null, tick = null, lowLeft = null, lowTick = null, balance = null, paid = 0, quiet = false;
    function clock(s) {
      s = Math.max(0, Math.floor(s));
      const h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60), sec = s % 60;
      const mm = h ? String(m).padStart(2, "0") : String(m);
      return (h ? h + " h " : "") + mm + " min " + String(sec).padStart(2, "0") + " s";
    }
    function paint() { if (left != null) $("time-left").textContent = clock(left); }
    function run() {
      clearInterval(tick);
      tick = setInterval(() => { if (left > 0) left--; paint(); }, 1000);
    }
    // What the account has, before or between streams (`GET /api/me`).
    function account(me) {
      balance = me.balance; paid = me.paid_seconds_left || 0;
      $("balance").textContent = balance;
      left = paid + balance * me.period_minutes * 60; paint();
      const none = balance <= 0 && paid <= 0;
      // One message at a time: an "out of credits" end or a refusal from the
      // server already says it.
      $("no-credits").hidden = !none || quiet;
      if (!wanted) startBtn.disabled = none;
    }
    function pushed(m) { balance = m.balance; $("balance").textContent = m.balance; left = m.seconds_left; paint(); run(); }
    function low(seconds) {
      lowLeft = seconds;
      const paintLow = () => {
        const n = $("notice");
        n.hidden = false; n.classList.add("error");
        n.textContent = "Out of credits: the stream ends in " + clock(lowLeft) + ". ";
        const a = document.createElement("a");
        a.href = "/credits"; a.target = "_blank"; a.rel = "noopener"; a.textContent = "Buy credits (opens a new tab)";
        n.append(a, " to keep going.");
      };
      paintLow();
      announce("Out of credits: the stream ends in " + Math.round(seconds) + " seconds unless you buy credits.");
      clearInterval(lowTick);
      lowTick = setInterval(() => { if (lowLeft > 0) lowLeft--; paintLow(); }, 1000);
    }
    function stop() { clearInterval(tick); clearInterval(lowTick); lowTick = null; }
    // While another message says why the stream cannot go on, the
    // "no credits" line stays hidden.
    function saidElsewhere(on) { quiet = on; if (on) $("no-credits").hidden = true; }
    return { account, pushed, low, stop, clock, saidElsewhere };
  })();
  async function refreshAccount() {
    const me = await fetch("/api/me").then(r => r.ok ? r.json() : null).catch(() => null);
    if (me) Credits.account(me);
    return me;
  }

  // Why a stream ended, in words, with what to do next.
  const ENDED = {
    out_of_credits: ["You ran out of credits, so the stream ended.", { href: "/credits", text: "Buy credits to go live again." }],
    stopped: ["You stopped the stream.", null],
    broadcaster_gone: ["The stream ended: your camera was disconnected for too long.", null, "Check your connection, then press Go live."],
    admin: ["An administrator ended your stream.", null],
    shutdown: ["The server restarted, so your stream ended.", null, "Press Go live to start again."],
    crashed: ["Your stream stopped after an error on the server.", null, "Press Go live to start again."],
  };
  function ended(reason) {
    Credits.saidElsewhere(reason === "out_of_credits");
    const [text, link, next] = ENDED[reason] || ["The stream ended.", null];
    notice(text + (next ? " " + next : ""), reason === "out_of_credits" || reason === "crashed", link);
    announce(text);
  }

  // ---- audience: switches, the request queue, the chat with moderation ----
  const list = $("comments"), queue = $("queue");
  function modNote(text) { $("mod-note").textContent = text || ""; }
  function moderate(li, c) {
    const box = document.createElement("span"); box.className = "mod";
    const del = document.createElement("button");
    del.className = "button tiny secondary"; del.textContent = "Delete"; del.setAttribute("aria-label", "Delete this comment by @" + c.user);
    del.onclick = () => Community.call("DELETE", api + "/comments/" + c.id, undefined, csrf).catch(e => modNote(e.message));
    const ban = document.createElement("button");
    ban.className = "button tiny danger"; ban.textContent = "Ban"; ban.setAttribute("aria-label", "Ban @" + c.user + " from your chat");
    ban.onclick = () => Community.call("POST", api + "/bans", { username: c.user }, csrf)
      .then(() => modNote("@" + c.user + " is banned from your chat.")).catch(e => modNote(e.message));
    if (c.user !== username) box.append(del, ban); else box.append(del);
    li.prepend(box);
  }
  function addRequest(r) {
    if (queue.querySelector('[data-id="' + r.id + '"]')) return;
    const li = document.createElement("li"); li.dataset.id = r.id;
    const what = document.createElement("span"); what.textContent = r.label + " — @" + r.by;
    const ok = document.createElement("button"); ok.className = "button tiny"; ok.textContent = "Approve";
    ok.onclick = () => Community.call("POST", api + "/requests/" + r.id + "/approve", undefined, csrf).catch(e => modNote(e.message));
    const no = document.createElement("button"); no.className = "button tiny secondary"; no.textContent = "Reject";
    no.onclick = () => Community.call("POST", api + "/requests/" + r.id + "/reject", undefined, csrf).catch(e => modNote(e.message));
    const b = document.createElement("span"); b.append(ok, no);
    li.append(what, b); queue.append(li);
    $("queue-empty").hidden = true;
  }
  function dropRequest(id) {
    const li = queue.querySelector('[data-id="' + id + '"]'); if (li) li.remove();
    $("queue-empty").hidden = queue.children.length > 0;
  }
  // "Styles shown": one line per change of style in this stream (the server
  // sends `style_changed` only for those), newest first.
  function addHistory(style, by) {
    const li = document.createElement("li"); li.textContent = style + (by ? " — @" + by : "");
    $("history").prepend(li);
    while ($("history").children.length > 20) $("history").lastElementChild.remove();
  }
  function showStyle(style, by) {
    $("current-style").textContent = style + (by ? " (by @" + by + ")" : "");
    StyleControls.showing(style);
  }
  async function loadAudience() {
    try {
      const r = await fetch(api + "/requests").then(r => r.ok ? r.json() : null);
      if (r) {
        queue.textContent = ""; r.queue.forEach(addRequest); $("queue-empty").hidden = queue.children.length > 0;
        $("history").textContent = "";
        r.history.forEach(h => addHistory(h.style, h.by));
        const last = r.history[r.history.length - 1];
        showStyle(r.style, last && last.style === r.style ? last.by : null);
      }
      const comments = await fetch(api + "/comments").then(r => r.ok ? r.json() : []);
      comments.forEach(c => Community.addComment(list, c, moderate));
    } catch (_) { /* not live yet */ }
  }
  [["sw-comments", "comments"], ["sw-requests", "requests"], ["sw-auto", "auto_approve"]].forEach(([id, key]) => {
    $(id).addEventListener("change", e => {
      Community.call("PUT", api + "/community", { [key]: e.target.checked }, csrf).catch(err => { modNote(err.message); e.target.checked = !e.target.checked; });
    });
  });
  $("ban-form").addEventListener("submit", e => {
    e.preventDefault();
    const name = $("ban-name").value.trim(); if (!name) return;
    Community.call("POST", api + "/bans", { username: name }, csrf)
      .then(() => { modNote("@" + name + " is banned from your chat."); $("ban-name").value = ""; }).catch(err => modNote(err.message));
  });
  $("make-key").addEventListener("click", async e => {
    const r = await fetch("/api/me/stream-key", { method: "POST", headers: { "X-CSRF-Token": e.target.dataset.csrf } });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) { notice(body.error || "Could not make a key", true); return; }
    const k = $("key"); k.textContent = body.key; k.hidden = false;
    e.target.textContent = "Replace stream key";
  });

  // ---- style controls ----
  // Each control edits the live style: it sends only what it changes, so
  // touching Strength after approving a viewer's request keeps that style.
  const StyleControls = (function () {
    let diffusion = false;
    function send(update) {
      if (ws && ws.readyState === 1) ws.send(JSON.stringify(Object.assign({ type: "style" }, update)));
    }
    function usePrompt() { return diffusion && $("use-prompt").checked && $("prompt").value.trim() !== ""; }
    function promptFields() {
      return {
        processor: "diffusion", prompt: $("prompt").value.trim(),
        negative_prompt: $("negative-prompt").value.trim(),
        model: $("model").value, steps: Number($("steps").value),
      };
    }
    // Everything the controls say: a new stream starts with it.
    function full() {
      const common = { strength: Number($("strength").value), preserve_color: $("preserve").checked };
      if (usePrompt()) return Object.assign(common, promptFields());
      const style = $("style").value;
      return style ? Object.assign(common, { style }) : common;
    }
    // The dropdown follows the live style: a preset by name, otherwise "A requested style".
    function showing(name) {
      const sel = $("style"), req = $("style-requested");
      const match = Array.from(sel.options).find(o => o.value !== "" && o.textContent.split(" · ")[1] === name);
      if (match) { sel.value = match.value; req.hidden = true; }
      else if (name && !usePrompt()) { req.hidden = false; sel.value = ""; }
    }
    // Settings a reconnected socket reports (the stream kept its style).
    function adopt(settings) {
      if (!settings) return;
      if (typeof settings.strength === "number") { $("strength").value = settings.strength; paintStrength(); }
      if (typeof settings.preserve_color === "boolean") $("preserve").checked = settings.preserve_color;
    }
    function paintStrength() { $("strength-value").textContent = Number($("strength").value).toFixed(2); }
    async function loadDiffusion() {
      const d = await fetch("/api/diffusion").then(r => r.ok ? r.json() : null).catch(() => null);
      diffusion = !!(d && d.diffusion);
      $("diffusion").hidden = !diffusion;
      if (!diffusion) return;
      const sel = $("model"), keep = sel.value;
      sel.textContent = "";
      d.models.forEach(m => { const o = document.createElement("option"); o.value = m; o.textContent = m; sel.appendChild(o); });
      if (d.models.includes(keep)) sel.value = keep;
    }
    $("strength").addEventListener("input", paintStrength);
    $("steps").addEventListener("input", e => { $("steps-value").textContent = e.target.value; });
    $("style").addEventListener("change", () => { if ($("style").value) { $("style-requested").hidden = true; send({ style: $("style").value }); } });
    $("strength").addEventListener("change", () => send({ strength: Number($("strength").value) }));
    $("preserve").addEventListener("change", () => send({ preserve_color: $("preserve").checked }));
    ["use-prompt", "prompt", "negative-prompt", "model", "steps"].forEach(id => $(id).addEventListener("change", () => {
      if (usePrompt()) send(promptFields());
      else if (id === "use-prompt" && $("style").value) send({ style: $("style").value });
    }));
    loadDiffusion();
    setInterval(loadDiffusion, 30000);
    return { full, send, showing, adopt };
  })();
  $("show-output").addEventListener("change", e => { $("output-pane").hidden = !e.target.checked; });

  // ---- frame size ----
  // The starting size comes from the server (`/api/frame-size`: the measured
  // job time of the workers that will serve the stream). While live, an output
  // rate that stays well below the input rate suggests a smaller size.
  const FrameSize = (function () {
    const sizes = ["320x240", "480x360", "640x480"];
    let behind = 0;
    const label = v => v.replace("x", " × ");
    async function suggest() {
      const fps = Number($("fps").value);
      const s = await fetch("/api/frame-size?fps=" + fps).then(r => r.ok ? r.json() : null).catch(() => null);
      if (!s || !sizes.includes(s.size)) return;
      if (!timer) $("size").value = s.size;
      $("size-note").textContent = s.explanation || "";
    }
    // One `latency` event a second while live.
    function observe(m) {
      const i = sizes.indexOf($("size").value);
      const falling = m.fps_in >= 3 && m.fps_out < 0.8 * m.fps_in;
      behind = falling ? behind + 1 : 0;
      if (behind >= 5 && i > 0 && $("size-advice").hidden) {
        const smaller = sizes[i - 1];
        $("size-advice-text").textContent = "The worker restyles " + m.fps_out.toFixed(1) + " of your " + m.fps_in.toFixed(1) +
          " frames a second at " + label($("size").value) + ": a smaller frame keeps up (the skipped ones count as dropped).";
        $("size-advice-use").textContent = "Use " + label(smaller);
        $("size-advice-use").dataset.size = smaller;
        $("size-advice").hidden = false;
        announce("Output falls behind: a smaller frame size is suggested.");
      }
    }
    $("size-advice-use").addEventListener("click", e => {
      $("size").value = e.target.dataset.size; $("size-advice").hidden = true; behind = 0;
      if (timer) startCapture();
    });
    $("fps").addEventListener("change", () => { if (!timer) suggest(); });
    return { suggest, observe, reset() { behind = 0; $("size-advice").hidden = true; } };
  })();
  ["size", "fps"].forEach(id => $(id).addEventListener("change", () => { FrameSize.reset(); if (timer) startCapture(); }));

  // ---- the stream ----
  async function camera() {
    if (!cameraReady) {
      cameraReady = navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false })
        .then(stream => { video.srcObject = stream; return video.play(); });
    }
    return cameraReady;
  }

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
  function stopCapture() { clearInterval(timer); timer = null; }

  // The stream this page has set up (a reconnect to the same stream keeps
  // its live style; a new stream gets the controls' style).
  // A stream that was live before this page pressed Go live (a crashed or
  // reloaded tab coming back) keeps its style too.
  let streamId = null, resuming = false;
  function onEvent(m) {
    switch (m.type) {
      case "hello":
        if (m.stream_id !== streamId && !resuming) {
          streamId = m.stream_id;
          StyleControls.send(StyleControls.full());
          $("history").textContent = "";
        } else {
          streamId = m.stream_id; resuming = false;
          StyleControls.adopt(m.settings);
        }
        loadAudience();
        break;
      case "viewer_count": $("viewers").textContent = m.count; break;
      case "latency":
        $("latency").textContent = m.p50_ms.toFixed(0) + " ms";
        $("fps-in").textContent = m.fps_in.toFixed(1);
        $("fps-out").textContent = m.fps_out.toFixed(1);
        $("dropped").textContent = m.dropped;
        FrameSize.observe(m);
        break;
      case "credits": Credits.pushed(m); break;
      case "credits_low": Credits.low(m.seconds_left); break;
      case "comment": Community.addComment(list, m, moderate); break;
      case "comment_deleted": Community.removeComment(list, m.id); break;
      case "request_queued": addRequest(m); break;
      case "request_decided": dropRequest(m.id); break;
      case "style_changed": addHistory(m.style, m.by); showStyle(m.style, m.by); break;
      case "error": notice(m.message, true); break;
      case "notice": notice(m.message, false); break;
      case "ended": wanted = false; Credits.stop(); resetStats(); ended(m.reason); break;
    }
  }

  // WHIP when the browser can; `?transport=websocket` keeps the JPEG
  // WebSocket (whose frame size and rate the studio's controls set; a WHIP
  // publisher sends the camera's own size).
  const wantRtc = new URLSearchParams(location.search).get("transport") !== "websocket";
  const rtc = window.DSWebRTC && wantRtc ? DSWebRTC.studio(username, csrf, video, startCapture) : null;
  function connect(name) {
    let opened = false;
    ws = new WebSocket(DSF.wsUrl("/ws/broadcast/" + encodeURIComponent(name)));
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      opened = true; retry = 1000;
      setState("LIVE", true);
      announce("You are live.");
      if (rtc) rtc.start(); else startCapture();
      const link = $("watch-link"); link.href = "/s/" + name; link.hidden = false;
    };
    ws.onmessage = ev => {
      if (typeof ev.data !== "string") {
        if ($("show-output").checked) DSF.show(out, DSF.decode(ev.data).jpeg);
        return;
      }
      onEvent(JSON.parse(ev.data));
    };
    ws.onclose = ev => {
      stopCapture();
      if (rtc) rtc.stop();
      if (ev.code === 1009) notice("A frame was too big for the server: choose a smaller frame size.", true);
      if (!opened && wanted) {
        // Refused at the handshake (live from another tab or device?): say so once.
        wanted = false;
        notice("Could not connect to your stream. Is it live from another tab or device?", true);
      }
      if (wanted) {
        setState("Reconnecting…", false);
        announce("Connection lost. Reconnecting…");
        setTimeout(() => connect(name), retry); retry = Math.min(retry * 2, 10000);
        return;
      }
      setState("Offline", false);
      resetStats(); Credits.stop();
      stopBtn.disabled = true; startBtn.disabled = false;
      refreshAccount();
    };
  }

  form.addEventListener("submit", async e => {
    e.preventDefault();
    notice("");
    try { await camera(); } catch (err) { notice("The camera is not available: " + err.message, true); return; }
    startBtn.disabled = true;
    // The server decides: 201 started, 409 already live (a crashed tab
    // coming back), anything else is a refusal said once.
    const r = await fetch(api + "/start", { method: "POST", headers: { "X-CSRF-Token": csrf } }).catch(() => null);
    if (!r || !(r.ok || r.status === 409)) {
      const body = r ? await r.json().catch(() => ({})) : {};
      Credits.saidElsewhere(true);
      notice(body.error || "Could not go live: the server cannot be reached.", true,
        r && r.status === 402 ? { href: "/credits", text: "Buy credits" } : null);
      announce("Could not go live.");
      startBtn.disabled = false;
      refreshAccount();
      return;
    }
    Credits.saidElsewhere(false);
    resuming = r.status === 409;
    $("no-credits").hidden = true;
    wanted = true; stopBtn.disabled = false;
    FrameSize.reset();
    connect(username);
  });
  stopBtn.addEventListener("click", () => {
    wanted = false;
    if (ws && ws.readyState === 1) ws.send(JSON.stringify({ type: "stop" }));
  });
  refreshAccount();
  FrameSize.suggest();
  camera().catch(() => {}); // show the preview early when allowed
})();

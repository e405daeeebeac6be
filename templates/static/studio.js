// The studio: camera → canvas → JPEG (with the DSF1 header) → WebSocket,
// restyled frames back for the preview, style controls, live status.
(function () {
  const $ = id => document.getElementById(id);
  const video = $("camera"), out = $("output"), grab = $("grab");
  const form = $("golive"), startBtn = $("start"), stopBtn = $("stop");
  const root = document.querySelector(".studio"), username = root.dataset.user;
  let ws = null, timer = null, seq = 0, wanted = false, cameraReady = null, retry = 1000;
  let secondsLeft = null, countdown = null;

  function showCredits(balance, seconds) {
    $("balance").textContent = balance;
    secondsLeft = seconds;
    const paint = () => {
      if (secondsLeft == null) return;
      const m = Math.floor(secondsLeft / 60), s = secondsLeft % 60;
      $("time-left").textContent = m + " min " + String(s).padStart(2, "0") + " s";
    };
    paint();
    clearInterval(countdown);
    countdown = setInterval(() => { if (secondsLeft > 0) secondsLeft--; paint(); }, 1000);
  }
  // Audience: switches, the request queue, the chat with moderation.
  const csrf = root.dataset.csrf, api = "/api/streams/" + encodeURIComponent(username);
  const list = $("comments"), queue = $("queue");
  function modNote(text) { $("mod-note").textContent = text || ""; }
  function moderate(li, c) {
    const box = document.createElement("span"); box.className = "mod";
    const del = document.createElement("button");
    del.className = "button tiny secondary"; del.textContent = "Delete"; del.title = "Delete this comment";
    del.onclick = () => Community.call("DELETE", api + "/comments/" + c.id, undefined, csrf).catch(e => modNote(e.message));
    const ban = document.createElement("button");
    ban.className = "button tiny danger"; ban.textContent = "Ban"; ban.title = "Ban @" + c.user + " from your chat";
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
  function showStyle(style, by) {
    $("current-style").textContent = style + (by ? " (by @" + by + ")" : "");
    const li = document.createElement("li"); li.textContent = style + (by ? " — @" + by : "");
    $("history").prepend(li);
    while ($("history").children.length > 20) $("history").lastElementChild.remove();
  }
  async function loadAudience() {
    try {
      const r = await fetch(api + "/requests").then(r => r.ok ? r.json() : null);
      if (r) {
        r.queue.forEach(addRequest);
        $("history").textContent = "";
        r.history.forEach(h => showStyle(h.style, h.by));
        $("current-style").textContent = r.style;
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
    const body = await r.json();
    if (!r.ok) { notice(body.error || "Could not make a key", true); return; }
    const k = $("key"); k.textContent = body.key; k.hidden = false;
    e.target.textContent = "Replace stream key";
  });
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

  // Diffusion controls appear when a diffusion worker is in the cluster (/api/diffusion).
  let diffusion = false;
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
  function usePrompt() {
    return diffusion && $("use-prompt").checked && $("prompt").value.trim() !== "";
  }
  function style() {
    const common = { type: "style", strength: Number($("strength").value), preserve_color: $("preserve").checked };
    if (usePrompt()) {
      return Object.assign(common, {
        processor: "diffusion", prompt: $("prompt").value.trim(),
        negative_prompt: $("negative-prompt").value.trim(),
        model: $("model").value, steps: Number($("steps").value),
      });
    }
    return Object.assign(common, { style: $("style").value });
  }
  $("steps").addEventListener("input", e => { $("steps-value").textContent = e.target.value; });
  ["style", "strength", "preserve", "use-prompt", "prompt", "negative-prompt", "model", "steps"].forEach(id => $(id).addEventListener("change", () => {
    if (ws && ws.readyState === 1) ws.send(JSON.stringify(style()));
  }));
  loadDiffusion();
  setInterval(loadDiffusion, 30000);
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

  const rtc = window.DSWebRTC ? DSWebRTC.studio(username, csrf, video, startCapture) : null;
  function connect(name) {
    ws = new WebSocket(DSF.wsUrl("/ws/broadcast/" + encodeURIComponent(name)));
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      retry = 1000;
      setState("LIVE", true);
      ws.send(JSON.stringify(style()));
      if (rtc) rtc.start(); else startCapture();
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
        case "credits": showCredits(m.balance, m.seconds_left); break;
        case "hello": loadAudience(); break;
        case "comment": Community.addComment(list, m, moderate); break;
        case "comment_deleted": Community.removeComment(list, m.id); break;
        case "request_queued": addRequest(m); break;
        case "request_decided": dropRequest(m.id); break;
        case "style_changed": showStyle(m.style, m.by); break;
        case "credits_low":
          notice("Out of credits: the stream ends in " + m.seconds_left + " s. Buy credits to keep going.", true);
          break;
        case "error": notice(m.message, true); break;
        case "notice": notice(m.message, false); break;
        case "ended": wanted = false; notice("The stream ended (" + m.reason + ").", false); break;
      }
    };
    ws.onclose = ev => {
      clearInterval(timer); timer = null;
      if (rtc) rtc.stop();
      setState(wanted ? "Reconnecting…" : "Offline", false);
      if (ev.code === 1009) notice("A frame was too big for the server: choose a smaller frame size.", true);
      if (wanted) { setTimeout(() => connect(name), retry); retry = Math.min(retry * 2, 10000); }
      else { startBtn.disabled = false; stopBtn.disabled = true; clearInterval(countdown); }
    };
  }

  form.addEventListener("submit", async e => {
    e.preventDefault();
    const name = username;
    notice("");
    const me = await fetch("/api/me").then(r => r.json()).catch(() => null);
    if (me && me.balance < 1) { notice("You have no credits left: buy credits to go live.", true); return; }
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

// WebRTC for the pages: the studio publishes its camera (+ microphone) by
// WHIP, the viewer page plays WHEP. Both fall back to the WebSocket when
// anything fails (no RTCPeerConnection, WHIP/WHEP off on the server, no ICE
// within a few seconds). The answer carries every candidate (ICE-lite, no
// trickle), so one POST sets a session up.
window.DSWebRTC = (function () {
  const supported = typeof RTCPeerConnection === "function";

  // Gathering is quick on a host candidate; do not wait for slow STUN.
  function gathered(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise(resolve => {
      const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 1000);
    });
  }

  function connected(pc, ms) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const s = pc.connectionState;
        if (s === "connected") resolve();
        else if (s === "failed" || s === "closed") reject(new Error("WebRTC " + s));
      };
      pc.addEventListener("connectionstatechange", check);
      setTimeout(() => reject(new Error("WebRTC did not connect")), ms);
      check();
    });
  }

  // POSTs the offer; returns the session URL. Throws with the server's words.
  async function exchange(pc, url, headers) {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const r = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: Object.assign({ "Content-Type": "application/sdp" }, headers || {}),
      body: pc.localDescription.sdp,
    });
    const text = await r.text();
    if (r.status !== 201) {
      let why = text;
      try { why = JSON.parse(text).error || text; } catch (_) { /* SDP or plain text */ }
      throw new Error(why || ("HTTP " + r.status));
    }
    await pc.setRemoteDescription({ type: "answer", sdp: text });
    return new URL(r.headers.get("Location"), location.href).toString();
  }

  function session(pc, resource) {
    return {
      pc, resource,
      stop() {
        try { pc.close(); } catch (_) { /* closed */ }
        if (resource) fetch(resource, { method: "DELETE", credentials: "same-origin" }).catch(() => {});
      },
    };
  }

  // H.264 first: the server decodes H.264 (and Opus) only.
  function preferH264(transceiver) {
    if (!RTCRtpSender.getCapabilities || !transceiver.setCodecPreferences) return;
    const codecs = RTCRtpSender.getCapabilities("video").codecs;
    const h264 = codecs.filter(c => c.mimeType.toLowerCase() === "video/h264");
    if (h264.length) transceiver.setCodecPreferences(h264.concat(codecs.filter(c => !h264.includes(c))));
  }

  // The studio: the camera's video track (and the microphone if allowed) to
  // /whip/{user}?companion=1; the studio's WebSocket stays its control channel.
  async function publish(user, csrf, cameraStream) {
    if (!supported) throw new Error("this browser has no WebRTC");
    const pc = new RTCPeerConnection();
    const video = cameraStream.getVideoTracks()[0];
    if (!video) throw new Error("no camera track");
    preferH264(pc.addTransceiver(video, { direction: "sendonly" }));
    try {
      const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
      mic.getAudioTracks().forEach(t => pc.addTransceiver(t, { direction: "sendonly" }));
    } catch (_) { /* no microphone: video only */ }
    const resource = await exchange(pc, "/whip/" + encodeURIComponent(user) + "?companion=1", { "X-CSRF-Token": csrf });
    const s = session(pc, resource);
    try { await connected(pc, 8000); } catch (e) { s.stop(); throw e; }
    return s;
  }

  // The viewer page: /whep/{user} into a muted <video> (a click unmutes).
  // `tab`: the page's tab id: the server turns that tab's WebSocket pictures
  // off (and counts this session instead) when the session starts.
  async function play(user, videoEl, tab) {
    if (!supported) throw new Error("this browser has no WebRTC");
    const pc = new RTCPeerConnection();
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const media = new MediaStream();
    pc.ontrack = ev => { media.addTrack(ev.track); videoEl.srcObject = media; };
    const resource = await exchange(pc, "/whep/" + encodeURIComponent(user) + (tab ? "?cid=" + encodeURIComponent(tab) : ""));
    const s = session(pc, resource);
    try { await connected(pc, 8000); } catch (e) { s.stop(); throw e; }
    videoEl.muted = true;
    videoEl.play().catch(() => {});
    return s;
  }

  return { supported, publish, play };
})();

// The viewer page's player: WHEP when it works, the WebSocket's pictures
// otherwise; the page says which. (Hooked from watch.js by `DSWebRTC.watch`.)
// `pictures(on)` turns the WebSocket's pictures on or off: off while WHEP
// plays (no JPEG twice), on whenever the page falls back to the WebSocket.
window.DSWebRTC.watch = function (user, pictures) {
  const $ = id => document.getElementById(id);
  const video = $("webrtc-video"), img = $("frame"), transport = $("transport"), unmute = $("unmute");
  if (!video || !transport) return;
  let current = null, trying = false;
  function useWebSocket(why) {
    if (pictures) pictures(true);
    video.hidden = true; img.hidden = false; if (unmute) unmute.hidden = true;
    transport.textContent = "WebSocket (JPEG)";
    transport.title = why || "";
  }
  async function tryWebRTC() {
    if (trying || current || !window.DSWebRTC.supported) return;
    trying = true;
    try {
      current = await window.DSWebRTC.play(user, video, window.Community ? Community.tabId() : "");
      video.hidden = false; img.hidden = true; if (unmute) unmute.hidden = false;
      transport.textContent = "WebRTC (WHEP)"; transport.title = "";
      if (pictures) pictures(false);
      current.pc.addEventListener("connectionstatechange", () => {
        const s = current && current.pc.connectionState;
        if (s === "failed" || s === "closed" || s === "disconnected") {
          current.stop(); current = null; useWebSocket("WebRTC connection lost");
        }
      });
    } catch (e) {
      useWebSocket(e.message);
    } finally {
      trying = false;
    }
  }
  if (unmute) unmute.addEventListener("click", () => {
    video.muted = !video.muted; unmute.textContent = video.muted ? "Unmute" : "Mute";
  });
  useWebSocket("");
  return {
    live() { tryWebRTC(); },
    ended() { if (current) { current.stop(); current = null; } useWebSocket("offline"); },
  };
};

// The studio's media path: WHIP when it works, JPEGs over the WebSocket
// (`fallback`, the studio's own capture loop) otherwise; the page says which.
window.DSWebRTC.studio = function (user, csrf, videoEl, fallback) {
  const transport = document.getElementById("transport");
  let current = null;
  function say(text, why) { if (transport) { transport.textContent = text; transport.title = why || ""; } }
  return {
    start() {
      const stream = videoEl.srcObject;
      if (!window.DSWebRTC.supported || !stream) { say("WebSocket (JPEG)"); fallback(); return; }
      window.DSWebRTC.publish(user, csrf, stream).then(s => {
        current = s; say("WebRTC (WHIP)");
        s.pc.addEventListener("connectionstatechange", () => {
          const st = s.pc.connectionState;
          if (current === s && (st === "failed" || st === "closed")) { s.stop(); current = null; say("WebSocket (JPEG)", "WebRTC connection lost"); fallback(); }
        });
      }).catch(e => { say("WebSocket (JPEG)", e.message); fallback(); });
    },
    stop() { if (current) { current.stop(); current = null; } say("–"); },
  };
};

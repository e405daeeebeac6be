// Keeps the home page's live list and thumbnails fresh without a reload.
(function () {
  const grid = document.getElementById("live-grid");
  const empty = document.getElementById("live-empty");
  const count = document.getElementById("live-count");
  function card(s) {
    const a = document.createElement("a");
    a.className = "card"; a.href = "/s/" + s.username; a.dataset.user = s.username;
    a.innerHTML = '<img class="thumb" alt=""><span class="badge live">LIVE</span>' +
      '<div class="card-body"><strong></strong><span class="muted"><span class="style"></span> · <span class="viewers"></span> watching</span></div>';
    a.querySelector("img").alt = "Latest frame of " + s.username + "'s stream";
    a.querySelector("strong").textContent = s.username;
    return a;
  }
  async function refresh() {
    try {
      const list = await (await fetch("/api/streams")).json();
      const seen = new Set();
      for (const s of list) {
        seen.add(s.username);
        let el = grid.querySelector('[data-user="' + s.username + '"]');
        if (!el) { el = card(s); grid.appendChild(el); }
        const st = el.querySelector(".style"); if (st) st.textContent = s.style;
        el.querySelector(".viewers").textContent = s.viewers;
        el.querySelector("img").src = "/s/" + s.username + "/frame.jpg?t=" + Date.now();
      }
      grid.querySelectorAll(".card").forEach(el => { if (!seen.has(el.dataset.user)) el.remove(); });
      count.textContent = list.length;
      empty.hidden = list.length > 0;
    } catch (e) { /* offline for a moment: try again next round */ }
  }
  setInterval(refresh, 3000);
})();

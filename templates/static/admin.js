// The admin dashboard: polls /admin/api/overview and /admin/chart.svg and
// updates the page in place (formatting as src/web/admin.rs does).
"use strict";
(() => {
  const root = document.getElementById("admin");
  if (!root) return;
  const EVERY_MS = 3000;
  const $ = (id) => document.getElementById(id);

  const int = (n) => Math.round(Number(n) || 0).toLocaleString("en-US");
  const one = (x) => (Number(x) || 0).toFixed(1);
  const ago = (ms, now) => {
    const s = Math.floor(Math.max(0, now - ms) / 1000);
    if (s < 5) return "just now";
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  };
  const span = (ms) => {
    const s = Math.floor(Math.max(0, ms) / 1000);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min`;
    return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  };
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const when = (ms) => {
    if (ms == null) return "";
    const d = new Date(ms);
    const hh = String(d.getUTCHours()).padStart(2, "0");
    const mm = String(d.getUTCMinutes()).padStart(2, "0");
    return `${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${hh}:${mm} UTC`;
  };
  const SYMBOLS = { usd: "$", eur: "€", gbp: "£" };
  const money = (cents, currency) => {
    const amount = `${int(Math.trunc(cents / 100))}.${String(Math.abs(cents % 100)).padStart(2, "0")}`;
    const c = String(currency || "").toLowerCase();
    return SYMBOLS[c] ? `${SYMBOLS[c]}${amount}` : `${amount} ${c.toUpperCase()}`;
  };

  // A cell: text, or [text, {class, title, href, tag}] for decorated ones.
  const cell = (value, numeric) => {
    const td = document.createElement("td");
    if (numeric) td.className = "num";
    const [text, opt] = Array.isArray(value) ? value : [value, {}];
    let target = td;
    if (opt.href) {
      const a = document.createElement("a");
      a.href = opt.href;
      td.append(a);
      target = a;
    } else if (opt.state) {
      const s = document.createElement("span");
      s.className = `state ${opt.state}`;
      td.append(s);
      target = s;
    }
    target.textContent = text;
    if (opt.title) td.title = opt.title;
    if (opt.tag) {
      const t = document.createElement("span");
      t.className = `tag ${opt.tagClass || ""}`;
      t.textContent = opt.tag;
      td.append(" ", t);
    }
    return td;
  };

  // Replaces a table's rows; `numeric` lists the right-aligned columns.
  const fill = (id, rows, numeric) => {
    const table = $(id);
    if (!table) return;
    const body = table.tBodies[0];
    body.replaceChildren(...rows.map((r) => {
      const tr = document.createElement("tr");
      r.forEach((v, i) => tr.append(cell(v, numeric.includes(i))));
      return tr;
    }));
    const empty = root.querySelector(`[data-empty="${id}"]`);
    if (empty) empty.hidden = rows.length > 0;
  };

  const card = (key, value, sub) => {
    const el = root.querySelector(`[data-card="${key}"]`);
    if (!el) return;
    el.querySelector(".value").textContent = value;
    el.querySelector(".sub").textContent = sub;
  };

  const render = (o) => {
    const now = o.generated_at_ms;
    const a = o.audience;
    $("backend").textContent = a.backend;
    $("updated").textContent = when(now);
    card("live", int(o.live.length), `${o.queue.length} waiting for a worker`);
    card("viewers", int(a.viewers_now), `${int(a.tune_ins_today)} tune-ins today · ${int(a.tune_ins_all)} all time`);
    card("peak", int(a.peak.viewers), a.peak.at_ms == null ? "nobody yet" : `${when(a.peak.at_ms)} (${ago(a.peak.at_ms, now)})`);
    card("created", int(o.streams_created.today), `${int(o.streams_created.week)} in 7 days · ${int(o.streams_created.all)} all time`);
    card("ips", int(a.unique_ips_today), `${int(a.unique_ips_7d)} in 7 days · ${int(a.unique_ips_all)} all time`);
    const ws = o.worker_states;
    card("workers", int(ws.busy + ws.idle), `${ws.busy} busy · ${ws.idle} idle · ${ws.lost} lost`);
    card("credits", int(o.users.credits_burned_today), `${int(o.users.credits_outstanding)} held by ${int(o.users.total)} users`);

    $("live-n").textContent = o.live.length;
    fill("live", o.live.map((s) => [
      [s.username, { href: `/s/${encodeURIComponent(s.username)}`, tag: s.broadcaster_connected ? "" : "no camera", tagClass: "warn" }],
      ago(s.started_at_ms, now), int(s.viewers),
      [int(s.peak.viewers), { title: s.peak.at_ms == null ? "" : ago(s.peak.at_ms, now) }],
      int(s.unique_ips), `${one(s.fps_in)} / ${one(s.fps_out)}`, `${one(s.dropped_pct)}%`,
      s.latency_p50_ms == null ? "–" : `${Math.round(s.latency_p50_ms)} ms`,
      int(s.credits_burned), s.style,
    ]), [2, 3, 4, 5, 6, 7, 8]);

    $("jobs").textContent = int(o.jobs_dispatched);
    const ce = $("control-error");
    ce.hidden = !o.control_plane_error;
    ce.textContent = o.control_plane_error || "";
    fill("workers", o.workers.map((w) => [
      w.id, w.node, w.device ? `${w.processor} · ${w.device}` : w.processor,
      w.models && w.models.length ? w.models.join(", ") : "–", [w.state, { state: w.state }],
      `${w.in_flight}/${w.capacity}`, int(w.jobs_done), int(w.jobs_failed), `${one(w.job_p50_ms)} ms`, `${one(w.busy_pct)}%`,
      w.lost_at_ms != null ? `lost ${ago(w.lost_at_ms, now)}` : w.last_heartbeat_ms != null ? `${Math.round(w.last_heartbeat_ms)} ms ago` : "in process",
    ]), [5, 6, 7, 8, 9]);
    $("queue-n").textContent = o.queue.length;
    fill("queue", o.queue.map((q) => [q.username, `${Math.round(q.waiting_ms)} ms`, q.needs]), [1]);

    const peakAt = (s) => (s.peak_at == null ? "" : when(s.peak_at));
    fill("top", o.top_streams.map((s) => [s.username, int(s.peak_viewers), peakAt(s), int(s.unique_viewers)]), [1, 3]);
    fill("recent", o.recent_streams.map((s) => [
      s.username, when(s.started_at), s.ended_at == null ? `live, ${span(now - s.started_at)}` : span(s.ended_at - s.started_at),
      (s.end_reason || "").replaceAll("_", " "), int(s.peak_viewers), int(s.unique_viewers), int(s.credits_charged),
    ]), [4, 5, 6]);

    const u = o.users;
    $("users-total").textContent = int(u.total);
    $("users-admins").textContent = int(u.admins);
    $("credits-held").textContent = int(u.credits_outstanding);
    $("credits-burned").textContent = int(u.credits_burned_all);
    fill("users", u.recent.map((r) => [
      [r.username, { tag: r.is_admin ? "admin" : "" }], ago(r.created_at_ms, now), int(r.balance), int(r.streams), int(r.credits_burned),
    ]), [2, 3, 4]);
    fill("payments", o.payments.map((p) => [
      p.username, int(p.credits), money(p.amount_cents, p.currency), [p.status, { state: p.status }], ago(p.created_at_ms, now),
    ]), [1, 2]);
  };

  let failures = 0;
  const poll = async () => {
    try {
      const [o, svg] = await Promise.all([
        fetch(root.dataset.overview, { credentials: "same-origin" }).then((r) => {
          if (r.status === 401 || r.status === 403) throw new Error("signed out");
          if (!r.ok) throw new Error(`HTTP ${r.status}`);
          return r.json();
        }),
        fetch(root.dataset.chart, { credentials: "same-origin" }).then((r) => (r.ok ? r.text() : null)),
      ]);
      render(o);
      if (svg && svg.startsWith("<svg")) $("chart").innerHTML = svg;
      failures = 0;
      $("stale").hidden = true;
      root.dataset.polls = String(Number(root.dataset.polls || 0) + 1);
    } catch (e) {
      failures += 1;
      $("stale").hidden = false;
      $("stale").textContent = `· not updating (${e.message})`;
      if (e.message === "signed out") return; // stop: the page needs a login
    }
    setTimeout(poll, failures ? Math.min(30000, EVERY_MS * 2 ** failures) : EVERY_MS);
  };
  poll();
})();

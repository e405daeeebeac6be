// Shared by the viewer page and the studio: JSON calls with the CSRF header,
// and the chat list.
window.Community = (function () {
  async function call(method, url, body, csrf, raw) {
    const headers = { "X-CSRF-Token": csrf };
    let payload;
    if (raw) { payload = raw; headers["Content-Type"] = raw.type || "application/octet-stream"; }
    else if (body !== undefined) { payload = JSON.stringify(body); headers["Content-Type"] = "application/json"; }
    const r = await fetch(url, { method, headers, body: payload, credentials: "same-origin" });
    let data = null;
    try { data = await r.json(); } catch (_) { /* empty body */ }
    if (!r.ok) throw new Error((data && data.error) || ("request failed (" + r.status + ")"));
    return data;
  }

  // Adds a comment to a list; `moderate(li, c)` may add controls.
  function addComment(list, c, moderate) {
    if (list.querySelector('[data-id="' + c.id + '"]')) return;
    const li = document.createElement("li");
    li.dataset.id = c.id;
    const who = document.createElement("strong");
    who.textContent = "@" + c.user;
    const text = document.createElement("span");
    text.textContent = " " + c.text;
    li.append(who, text);
    if (moderate) moderate(li, c);
    list.append(li);
    while (list.children.length > 200) list.firstElementChild.remove();
    list.scrollTop = list.scrollHeight;
  }

  function removeComment(list, id) {
    const li = list.querySelector('[data-id="' + id + '"]');
    if (li) li.remove();
  }

  // One id per browser tab: a refresh replaces this tab's viewer, never adds one.
  function tabId() {
    let id = sessionStorage.getItem("ds-tab");
    if (!id) {
      id = Array.from(crypto.getRandomValues(new Uint8Array(12)), b => b.toString(16).padStart(2, "0")).join("");
      sessionStorage.setItem("ds-tab", id);
    }
    return id;
  }

  return { call, addComment, removeComment, tabId };
})();

// The header's menu on narrow screens: a button that opens and closes the
// navigation (wide screens show the links inline; CSS decides).
(function () {
  const bar = document.querySelector(".topbar");
  const toggle = bar && bar.querySelector(".menu-toggle");
  if (!toggle) return;
  bar.classList.add("has-menu");
  toggle.hidden = false;
  function set(open) {
    bar.classList.toggle("open", open);
    toggle.setAttribute("aria-expanded", String(open));
  }
  toggle.addEventListener("click", () => set(!bar.classList.contains("open")));
  document.addEventListener("keydown", e => {
    if (e.key === "Escape" && bar.classList.contains("open")) { set(false); toggle.focus(); }
  });
  document.addEventListener("click", e => { if (!bar.contains(e.target)) set(false); });
})();

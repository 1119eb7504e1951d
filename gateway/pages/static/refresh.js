// Keeps a page's <main data-refresh="N"> current by fetching the page again every N seconds
// and swapping its content in place. Unlike <meta http-equiv="refresh"> (axe: meta-refresh,
// WCAG 2.2.1) the reader can pause it, and focus and scroll stay put. Without JavaScript the
// page is simply static; reloading shows the latest.
(() => {
  const main = document.querySelector("main[data-refresh]");
  if (!main) return;
  const every = Math.max(Number(main.dataset.refresh) || 5, 2) * 1000;
  let paused = false;
  const bar = document.createElement("p");
  bar.className = "refresh muted";
  const note = document.createElement("span");
  note.setAttribute("aria-live", "polite");
  note.textContent = `Updates every ${every / 1000} s. `;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "secondary";
  button.textContent = "Pause updates";
  button.setAttribute("aria-pressed", "false");
  button.addEventListener("click", () => {
    paused = !paused;
    button.textContent = paused ? "Resume updates" : "Pause updates";
    button.setAttribute("aria-pressed", String(paused));
    note.textContent = paused ? "Updates paused. " : `Updates every ${every / 1000} s. `;
  });
  bar.append(note, button);
  main.before(bar);
  const tick = async () => {
    if (!paused) {
      try {
        const r = await fetch(location.href, { headers: { accept: "text/html" }, credentials: "same-origin" });
        if (r.ok) {
          const fresh = new DOMParser().parseFromString(await r.text(), "text/html").querySelector("main");
          if (fresh) {
            main.innerHTML = fresh.innerHTML;
            if (!fresh.hasAttribute("data-refresh")) {  // e.g. every team is up now
              bar.remove();
              return;
            }
          }
        }
      } catch (err) {
        note.textContent = "Could not update; retrying. ";
      }
    }
    setTimeout(tick, every);
  };
  setTimeout(tick, every);
})();

// The inspector's only script (CSP: script-src 'self'). On a session's page it follows
// the session's feed (server-sent events) and, on each change, fetches the page's body
// again: HTML the server escaped, never text of ours put together here.
"use strict";
(function () {
  const live = document.getElementById("live");
  if (!live || !window.EventSource) return;
  let running = false, again = false, updates = 0;
  async function refresh() {
    if (running) { again = true; return; }
    running = true;
    try {
      do {
        again = false;
        const answer = await fetch(live.dataset.fragment, { credentials: "same-origin",
          headers: { "Accept": "text/html" } });
        if (!answer.ok) throw new Error("HTTP " + answer.status);
        const body = document.getElementById("session");
        const next = new DOMParser().parseFromString(await answer.text(), "text/html")
          .getElementById("session");
        if (body && next) body.replaceWith(document.adoptNode(next));
        updates += 1;
        live.dataset.updates = String(updates);
        live.textContent = "live · updated " + new Date().toLocaleTimeString();
      } while (again);
    } catch (error) {
      live.textContent = "live · refresh failed (" + error.message + ")";
    } finally {
      running = false;
    }
  }
  const source = new EventSource(live.dataset.events);
  source.addEventListener("open", function () { live.classList.remove("lost"); });
  source.addEventListener("change", refresh);
  source.addEventListener("failed", function () {
    live.classList.add("lost"); live.textContent = "live updates stopped"; source.close();
  });
  source.addEventListener("error", function () {
    live.classList.add("lost"); live.textContent = "live · reconnecting";
  });
})();

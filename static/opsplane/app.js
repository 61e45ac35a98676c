// opsplane's own browser code. No inline scripts anywhere (Content-Security-Policy):
// behaviour hangs off data- attributes.
"use strict";

document.addEventListener("change", (event) => {
  // <select data-autosubmit> submits its form on change (the language switch).
  const target = event.target;
  if (target instanceof HTMLSelectElement && target.hasAttribute("data-autosubmit")) {
    target.form.requestSubmit();
  }
});

document.addEventListener("submit", (event) => {
  // <form data-confirm="..."> asks before a destructive or production-affecting action.
  const form = event.target;
  const question = form.getAttribute && form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
}, true);

// Times: every <time data-relative datetime="..."> shows "3 min ago" in the page's
// language with the exact time in the browser's time zone on hover; <time data-exact>
// shows the exact local time. The server renders a UTC fallback for both (no script:
// still correct). Rendered on load, after every htmx swap, and every 30 s.
window.opsplane = window.opsplane || {};
(() => {
  const lang = document.documentElement.lang || undefined;
  const exact = new Intl.DateTimeFormat(lang, {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    second: "2-digit", timeZoneName: "short",
  });
  const relative = new Intl.RelativeTimeFormat(lang, { numeric: "auto" });
  const STEPS = [[60, "second"], [60, "minute"], [24, "hour"], [30, "day"], [12, "month"],
                 [Infinity, "year"]];

  function ago(date) {
    let value = (date.getTime() - Date.now()) / 1000;
    for (const [size, unit] of STEPS) {
      if (Math.abs(value) < size) {
        return relative.format(Math.round(value), unit);
      }
      value /= size;
    }
    return "";
  }

  function renderTimes(root) {
    for (const el of (root || document).querySelectorAll("time[data-relative], time[data-exact]")) {
      const date = new Date(el.getAttribute("datetime"));
      if (Number.isNaN(date.getTime())) {
        continue;
      }
      el.title = exact.format(date);
      el.textContent = el.hasAttribute("data-relative") ? ago(date) : exact.format(date);
    }
  }

  window.opsplane.renderTimes = renderTimes;
  document.addEventListener("DOMContentLoaded", () => renderTimes(document));
  document.addEventListener("htmx:afterSettle", (event) => renderTimes(event.target));
  setInterval(() => renderTimes(document), 30000);
})();

// The viewer's time zone: the server renders times in the zone the opsplane_tz cookie
// names (opsplane.middleware.TimezoneMiddleware). Set it once from the browser's own
// zone; a zone the viewer picked on a page (?tz=, kept in the cookie) is left alone. A
// page that says which zone it used (data-viewer-tz) is reloaded once if that differs.
(() => {
  if (document.cookie.split("; ").some((c) => c.startsWith("opsplane_tz="))) {
    return;
  }
  let zone = "";
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch (e) {
    return;
  }
  if (!/^[A-Za-z0-9_+\/-]+$/.test(zone)) {
    return;
  }
  document.cookie = "opsplane_tz=" + zone + "; path=/; max-age=31536000; samesite=lax";
  document.addEventListener("DOMContentLoaded", () => {
    const shown = document.querySelector("[data-viewer-tz]");
    const url = new URL(window.location.href);
    if (shown && zone !== shown.getAttribute("data-viewer-tz") && !url.searchParams.has("tz")
        && document.cookie.includes("opsplane_tz=")) {
      window.location.reload();
    }
  });
})();

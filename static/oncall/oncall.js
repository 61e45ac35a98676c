// On-call pages: show times in the browser's own time zone unless the viewer chose one.
// The server reads ?tz=, then the opsplane_tz cookie, then the site's zone; this sets the
// cookie from the browser once and reloads if the page used another zone.
"use strict";

(function () {
  const picker = document.querySelector("[data-viewer-tz]");
  if (!picker || document.cookie.split("; ").some((c) => c.startsWith("opsplane_tz="))) {
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
  const url = new URL(window.location.href);
  if (zone !== picker.getAttribute("data-viewer-tz") && !url.searchParams.has("tz")
      && document.cookie.includes("opsplane_tz=")) {
    window.location.reload();
  }
})();

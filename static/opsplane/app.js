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

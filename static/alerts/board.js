// The live alert board and the incident page (no inline script: strict CSP).
//
// Times (<time data-relative>, <time data-exact>) are rendered by app.js.
//
// Board (#board): ws/alerts/board/ says when something changed; the rows (the view's
// "body" partial) are then fetched again with the page's filters. One fetch at a time,
// a change during a fetch queues one more; after a reconnect (backoff with jitter) the
// board is fetched again, so nothing said while the socket was down is lost. A slow
// periodic refetch covers a message the channel layer dropped.
// Keys: j/k select, a/u/r acknowledge/unacknowledge/resolve the selection (htmx forms
// in the row), Enter opens it, / focuses the search, ? lists the keys.
"use strict";

(() => {
  const renderTimes = window.opsplane.renderTimes;  // app.js

  function startBoard(board) {
    const live = document.getElementById("board-live");
    const refreshUrl = board.getAttribute("data-refresh");
    let selectedId = null;
    let fetching = false;
    let again = false;
    let marked = new Set();
    // The message an action answered with ("#7 acknowledged."): the refetch its own
    // change causes over the socket must not wipe it before it could be read.
    let flash = null;
    const FLASH_MS = 10000;

    function rows() {
      return Array.from(board.querySelectorAll("tr[data-incident]"));
    }

    function select(row, focus) {
      for (const other of board.querySelectorAll("tr.selected")) {
        other.classList.remove("selected");
        other.removeAttribute("aria-selected");
      }
      if (!row) {
        selectedId = null;
        return;
      }
      row.classList.add("selected");
      row.setAttribute("aria-selected", "true");
      selectedId = row.getAttribute("data-incident");
      if (focus) {
        row.querySelector("a.incident-link").focus({ preventScroll: true });
        row.scrollIntoView({ block: "nearest" });
      }
    }

    function selected() {
      return selectedId && board.querySelector(`tr[data-incident="${selectedId}"]`);
    }

    // After every swap of the rows: keep the selection, mark what changed, fix times.
    function keepFlash() {
      const body = document.getElementById("board-body");
      if (!body) {
        return;
      }
      const message = body.querySelector(":scope > .message");
      if (message) {
        flash = { node: message.cloneNode(true), until: Date.now() + FLASH_MS };
      } else if (flash && Date.now() < flash.until) {
        body.prepend(flash.node.cloneNode(true));
      } else {
        flash = null;
      }
    }

    function afterSwap() {
      keepFlash();
      const all = rows();
      const row = selected();
      if (row) {
        select(row, false);
      } else if (selectedId !== null) {
        select(all[0] || null, false);
      }
      for (const id of marked) {
        const changed = board.querySelector(`tr[data-incident="${id}"]`);
        if (changed) {
          changed.classList.add("changed");
        }
      }
      marked = new Set();
      renderTimes(board);
      const body = document.getElementById("board-body");
      const triggered = body ? Number(body.getAttribute("data-triggered") || 0) : 0;
      document.title = document.title.replace(/^\(\d+\) /, "");
      if (triggered > 0) {
        document.title = `(${triggered}) ${document.title}`;
      }
    }

    // An action (ack, resolve...) in flight swaps its answer into #board-body: a refetch
    // landing first would replace that element and the answer would go nowhere. Refetches
    // wait for the action, but never longer than ACTION_MS (a request that hangs must not
    // stop the board). htmx fires afterRequest of a form swapped out meanwhile on its
    // nearest ancestor still in the page, so #board hears the end of every action.
    let actionSince = 0;
    const ACTION_MS = 10000;

    function actionInFlight() {
      return actionSince !== 0 && Date.now() - actionSince < ACTION_MS;
    }

    // The element that made the request (detail.elt is the ancestor an event was
    // re-fired on when that element left the page).
    function isAction(event) {
      const config = event.detail.requestConfig;
      return (config ? config.elt : event.detail.elt) instanceof HTMLFormElement;
    }

    board.addEventListener("htmx:beforeRequest", (event) => {
      if (isAction(event)) {
        actionSince = Date.now();
      }
    });
    board.addEventListener("htmx:afterRequest", (event) => {
      if (isAction(event)) {
        actionSince = 0;
        if (again && !fetching) {
          again = false;
          refresh();
        }
      }
    });

    function refresh() {
      if (fetching || actionInFlight()) {
        again = true;
        if (!fetching) {
          // htmx says when the action ended (afterRequest, also for a swapped-out form);
          // this is only the backstop.
          setTimeout(() => {
            if (again && !fetching && !actionInFlight()) {
              again = false;
              refresh();
            }
          }, ACTION_MS);
        }
        return;
      }
      fetching = true;
      const keep = document.activeElement && board.contains(document.activeElement);
      htmx.ajax("GET", refreshUrl, { target: "#board-body", swap: "outerHTML" })
        .catch(() => {})
        .finally(() => {
          fetching = false;
          if (keep && selected()) {
            select(selected(), true);
          }
          if (again) {
            again = false;
            refresh();
          }
        });
    }

    board.addEventListener("htmx:afterSwap", afterSwap);
    board.addEventListener("htmx:afterSettle", () => renderTimes(board));
    board.addEventListener("click", (event) => {
      const row = event.target.closest && event.target.closest("tr[data-incident]");
      if (row) {
        select(row, false);
      }
    });

    // --- the socket --------------------------------------------------------------------
    let socket = null;
    let attempt = 0;
    let opened = false;

    function setState(state) {
      live.setAttribute("data-state", state);
      live.textContent = live.getAttribute(`data-label-${state}`) || state;
    }

    function connect() {
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      socket = new WebSocket(`${scheme}//${location.host}${board.getAttribute("data-ws")}`);
      socket.addEventListener("message", (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch (_error) {
          return;
        }
        if (message.type === "hello") {
          attempt = 0;
          setState("live");
          // The first hello follows the page's own render; any later one is a
          // reconnect, and the board may have changed meanwhile.
          if (opened) {
            refresh();
          }
          opened = true;
        } else if (message.type === "changed") {
          for (const id of message.incidents || []) {
            marked.add(String(id));
          }
          refresh();
        }
      });
      socket.addEventListener("close", (event) => {
        socket = null;
        if (event.code === 4401 || event.code === 4403) {
          setState("reconnecting");
          return; // signed out or no longer allowed: reloading shows why
        }
        setState("reconnecting");
        const delay = Math.min(15000, 500 * 2 ** attempt) * (0.75 + Math.random() / 2);
        attempt += 1;
        setTimeout(connect, delay);
      });
    }

    connect();
    // A dropped channel-layer message must not leave the board stale for long.
    setInterval(() => {
      if (!document.hidden) {
        refresh();
      }
    }, 60000);

    // --- keys ----------------------------------------------------------------------------
    const keys = document.getElementById("board-keys");
    document.getElementById("board-keys-open").addEventListener("click", () => keys.showModal());

    function act(action) {
      const row = selected();
      const button = row && row.querySelector(`button[data-action="${action}"]`);
      if (button) {
        // Rows swapped in a moment ago are wired to htmx only when they settle: without
        // this, a key pressed just after a live refresh submitted the plain form (a
        // full reload of the board, and "r" without its confirmation).
        htmx.process(button.form);
        button.form.requestSubmit(button);
      }
    }

    document.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey || keys.open) {
        return;
      }
      const target = event.target;
      if (target instanceof HTMLInputElement || target instanceof HTMLSelectElement
          || target instanceof HTMLTextAreaElement || target.isContentEditable) {
        if (event.key === "Escape") {
          target.blur();
        }
        return;
      }
      const all = rows();
      const index = all.indexOf(selected());
      switch (event.key) {
        case "j":
          select(all[Math.min(all.length - 1, index + 1)] || null, true);
          break;
        case "k":
          select(all[Math.max(0, index - 1)] || null, true);
          break;
        case "a":
          act("acknowledge");
          break;
        case "u":
          act("unacknowledge");
          break;
        case "r":
          act("resolve");
          break;
        case "Enter":
          if (selected() && !(target instanceof HTMLButtonElement)) {
            location.href = selected().getAttribute("data-href");
          } else {
            return;
          }
          break;
        case "/":
          document.getElementById("board-q").focus();
          break;
        case "?":
          keys.showModal();
          break;
        default:
          return;
      }
      event.preventDefault();
    });
    afterSwap();
  }

  document.addEventListener("DOMContentLoaded", () => {
    renderTimes(document);
    const board = document.getElementById("board");
    if (board) {
      startBoard(board);
    }
  });
})();

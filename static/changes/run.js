// The run page's output viewer. No inline script or style anywhere (Content-Security-
// Policy): configuration and translated strings come from data- attributes on #run-view.
//
// Lines are numbered per run (seq 1, 2, ...) across all hosts. The page never holds the
// whole log: the websocket (ws/runs/<id>/?after=<seq>) brings the tail and then live
// events; the merged view renders only the rows on screen and fetches older pages of
// lines from the server as they scroll into view; the host view (xterm.js) shows one
// host's tail; search runs on the server.
"use strict";

(function () {
  const root = document.getElementById("run-view");
  if (!root) return;

  const TAIL_LINES = 2000;      // what the first connection asks for
  const KEEP_LINES = 20000;     // live lines kept in memory for the merged view
  const PAGE = 500;             // lines per fetched page (older parts of the merged view)
  const CACHE_PAGES = 40;
  const HOST_LINES = 5000;      // tail shown when a host's terminal opens
  const MAX_PX = 15000000;      // browsers cap element heights; beyond it rows are scaled
  const BEHIND_AFTER = 2;       // seconds of lag before "N s behind" shows

  const data = root.dataset;
  const t = (key, n) => (data["t" + key.replace(/(^|-)(\w)/g, (m, d, c) => c.toUpperCase())] || key)
    .replace("%(n)s", n === undefined ? "" : String(n));
  const outputUrl = data.outputUrl;

  // --- line store ------------------------------------------------------------------------
  let lastSeq = 0;                 // every line up to this came over the websocket (or before `start`)
  let start = 0;                   // the first connection asked for lines after this
  let tail = [];                   // recent lines: {seq, host, stream, text}
  const pages = new Map();         // page index -> array of lines (older parts, fetched)
  const loading = new Set();

  function splitEvent(ev) {
    const [seq, host, step, stream, text] = ev;
    const parts = text.split("\n");
    if (text.endsWith("\n")) parts.pop();
    return parts.map((line, i) => ({seq: seq + i, host, step, stream, text: line}));
  }

  function tailStart() { return tail.length ? tail[0].seq : lastSeq + 1; }

  function lineAt(seq) {
    if (seq >= tailStart() && seq <= lastSeq) return tail[seq - tailStart()];
    const page = pages.get(Math.floor((seq - 1) / PAGE));
    return page ? page[(seq - 1) % PAGE] : undefined;
  }

  function fetchPage(index) {
    if (pages.has(index) || loading.has(index)) return;
    loading.add(index);
    fetch(`${outputUrl}?after=${index * PAGE}&limit=${PAGE}`, {credentials: "same-origin"})
      .then((r) => r.ok ? r.json() : Promise.reject(r.status))
      .then((body) => {
        const lines = [];
        for (const ev of body.events) for (const line of splitEvent(ev)) {
          if (line.seq > index * PAGE && line.seq <= (index + 1) * PAGE) lines[line.seq - 1 - index * PAGE] = line;
        }
        pages.set(index, lines);
        if (pages.size > CACHE_PAGES) pages.delete(pages.keys().next().value);
      })
      .catch(() => {})
      .finally(() => { loading.delete(index); schedule(); });
  }

  // --- ANSI SGR to spans (merged view) ------------------------------------------------------
  const SGR = /\x1b\[([0-9;]*)m/g;
  const OTHER_ESCAPES = /\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b\[[0-9;?]*[A-Za-ln-z]|\x1b[()][A-Za-z0-9]|\x1b[=>78]/g;

  function renderAnsi(text, into) {
    into.textContent = "";
    const cr = text.lastIndexOf("\r", text.length - 2);
    if (cr >= 0) text = text.slice(cr + 1);   // a progress bar: what the line shows last
    text = text.replace(OTHER_ESCAPES, "");
    if (text.indexOf("\x1b") < 0) { into.textContent = text; return; }
    let state = {fg: null, bg: null, b: false, d: false, i: false, u: false};
    let pos = 0;
    const emit = (chunk) => {
      if (!chunk) return;
      const cls = [];
      if (state.fg !== null) cls.push("a-f" + state.fg);
      if (state.bg !== null) cls.push("a-k" + state.bg);
      if (state.b) cls.push("a-b");
      if (state.d) cls.push("a-d");
      if (state.i) cls.push("a-i");
      if (state.u) cls.push("a-u");
      if (!cls.length) { into.appendChild(document.createTextNode(chunk)); return; }
      const span = document.createElement("span");
      span.className = cls.join(" ");
      span.textContent = chunk;
      into.appendChild(span);
    };
    for (const m of text.matchAll(SGR)) {
      emit(text.slice(pos, m.index));
      pos = m.index + m[0].length;
      const codes = m[1] === "" ? [0] : m[1].split(";").map(Number);
      for (let k = 0; k < codes.length; k++) {
        const c = codes[k];
        if (c === 0) state = {fg: null, bg: null, b: false, d: false, i: false, u: false};
        else if (c === 1) state.b = true;
        else if (c === 2) state.d = true;
        else if (c === 3) state.i = true;
        else if (c === 4) state.u = true;
        else if (c === 22) { state.b = false; state.d = false; }
        else if (c === 23) state.i = false;
        else if (c === 24) state.u = false;
        else if (c >= 30 && c <= 37) state.fg = c - 30;
        else if (c >= 90 && c <= 97) state.fg = c - 90 + 8;
        else if (c === 39) state.fg = null;
        else if (c >= 40 && c <= 47) state.bg = c - 40;
        else if (c >= 100 && c <= 107) state.bg = c - 100;
        else if (c === 49) state.bg = null;
        else if ((c === 38 || c === 48) && codes[k + 1] === 5) {
          const n = codes[k + 2];
          if (n < 16) { if (c === 38) state.fg = n; else state.bg = n % 8; }
          k += 2;
        } else if ((c === 38 || c === 48) && codes[k + 1] === 2) k += 4;
      }
    }
    emit(text.slice(pos));
  }

  // --- merged view (virtualised) ---------------------------------------------------------------
  const merged = document.getElementById("merged");
  const spacer = merged.querySelector(".merged-spacer");
  const rows = merged.querySelector(".merged-rows");
  const followBox = document.getElementById("output-follow");
  let lineHeight = 18;
  let follow = true;
  let highlight = 0;
  let scheduled = false;
  let programmaticScroll = false;

  function measure() {
    const probe = document.createElement("div");
    probe.className = "ln";
    probe.textContent = "x";
    rows.appendChild(probe);
    lineHeight = probe.getBoundingClientRect().height || 18;
    probe.remove();
  }

  function schedule() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => { scheduled = false; render(); });
  }

  function geometry() {
    const total = lastSeq;
    const height = Math.min(total * lineHeight, MAX_PX);
    const view = merged.clientHeight;
    const visible = Math.ceil(view / lineHeight) + 1;
    return {total, height, view, visible, scaled: total * lineHeight > MAX_PX};
  }

  function render() {
    if (merged.hidden) return;
    const g = geometry();
    spacer.style.height = g.height + "px";
    if (follow) {
      const bottom = Math.max(0, g.height - merged.clientHeight);
      if (Math.abs(merged.scrollTop - bottom) > 1) {
        programmaticScroll = true;
        merged.scrollTop = bottom;
      }
    }
    let first;
    let offset;
    if (g.scaled) {
      const range = Math.max(1, g.height - g.view);
      first = Math.round(merged.scrollTop / range * Math.max(0, g.total - g.visible + 1)) + 1;
      offset = merged.scrollTop;
    } else {
      first = Math.floor(merged.scrollTop / lineHeight) + 1;
      offset = (first - 1) * lineHeight;
    }
    rows.style.transform = `translateY(${offset}px)`;
    const last = Math.min(g.total, first + g.visible);
    while (rows.children.length < last - first + 1) {
      const div = document.createElement("div");
      div.className = "ln";
      const n = document.createElement("span"); n.className = "n";
      const h = document.createElement("span"); h.className = "h";
      const tx = document.createElement("span"); tx.className = "t";
      div.append(n, h, tx);
      rows.appendChild(div);
    }
    while (rows.children.length > Math.max(0, last - first + 1)) rows.lastChild.remove();
    for (let seq = first, i = 0; seq <= last; seq++, i++) {
      const div = rows.children[i];
      const line = lineAt(seq);
      if (div.dataset.seq === String(seq) && div.dataset.loaded === String(!!line)) {
        div.classList.toggle("hit", seq === highlight);
        continue;
      }
      div.dataset.seq = String(seq);
      div.dataset.loaded = String(!!line);
      div.children[0].textContent = seq;
      if (line) {
        div.className = "ln s-" + line.stream + (seq === highlight ? " hit" : "");
        div.children[1].textContent = line.host;
        div.children[1].dataset.host = line.host;
        renderAnsi(line.text, div.children[2]);
      } else {
        div.className = "ln missing";
        div.children[1].textContent = "";
        div.children[2].textContent = "…";
        fetchPage(Math.floor((seq - 1) / PAGE));
      }
    }
    empty.hidden = g.total > 0;
  }

  const empty = document.createElement("div");
  empty.className = "ln missing merged-empty";
  empty.textContent = data.expired ? t("expired") : t("no-output");
  merged.appendChild(empty);

  function setFollow(on) {
    follow = on;
    followBox.checked = on;
    if (on) schedule();
  }

  merged.addEventListener("scroll", () => {
    if (programmaticScroll) { programmaticScroll = false; schedule(); return; }
    const atBottom = merged.scrollTop + merged.clientHeight >= merged.scrollHeight - lineHeight;
    if (follow !== atBottom) setFollow(atBottom);
    schedule();
  });
  followBox.addEventListener("change", () => setFollow(followBox.checked));
  rows.addEventListener("click", (event) => {
    const host = event.target.dataset && event.target.dataset.host;
    if (host) openHost(host);
  });

  function jumpTo(seq) {
    setFollow(false);
    highlight = seq;
    showMerged();
    const g = geometry();
    programmaticScroll = merged.scrollHeight > merged.clientHeight;
    if (g.scaled) {
      merged.scrollTop = (seq - 1) / Math.max(1, g.total - g.visible + 1) * Math.max(1, g.height - g.view);
    } else {
      merged.scrollTop = Math.max(0, (seq - 1) * lineHeight - g.view / 3);
    }
    schedule();
  }

  // --- host grid ------------------------------------------------------------------------------
  const grid = document.getElementById("host-grid");
  const tiles = new Map();
  for (const li of grid.children) tiles.set(li.firstChild.textContent, li);
  let filter = new URLSearchParams(location.search).get("state") || "";

  function setTileState(host, state) {
    const li = tiles.get(host);
    if (!li || !state) return;
    li.className = li.className.replace(/\bhs-\S+/, "hs-" + state);
    li.hidden = Boolean(filter) && state !== filter;
  }

  function applyFilter() {
    for (const li of tiles.values()) {
      const m = /\bhs-(\S+)/.exec(li.className);
      li.hidden = Boolean(filter) && (!m || m[1] !== filter);
    }
    for (const a of document.querySelectorAll("#hosts .state-filter a[data-state]")) {
      a.classList.toggle("active", a.dataset.state === filter);
    }
  }

  document.addEventListener("click", (event) => {
    const a = event.target.closest && event.target.closest("#hosts .state-filter a[data-state]");
    if (!a) return;
    event.preventDefault();
    filter = a.dataset.state;
    const url = new URL(location.href);
    if (filter) url.searchParams.set("state", filter); else url.searchParams.delete("state");
    history.replaceState(null, "", url);
    applyFilter();
  });
  document.body.addEventListener("htmx:afterSwap", applyFilter);

  grid.addEventListener("click", (event) => {
    const a = event.target.closest("a");
    if (!a || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    openHost(a.textContent);
  });

  function visibleTiles() { return [...tiles.values()].filter((li) => !li.hidden); }

  function moveSelection(step) {
    const list = visibleTiles();
    if (!list.length) return;
    let index = list.findIndex((li) => li.firstChild === document.activeElement);
    if (index < 0) index = list.findIndex((li) => li.classList.contains("open"));
    index = index < 0 ? (step > 0 ? 0 : list.length - 1) : Math.min(list.length - 1, Math.max(0, index + step));
    list[index].firstChild.focus();
    list[index].scrollIntoView({block: "nearest"});
  }

  // --- host terminal (xterm.js) ---------------------------------------------------------------
  const termBox = document.getElementById("terminal");
  const hostTab = root.querySelector('.tab[data-show="host"]');
  const mergedTab = root.querySelector('.tab[data-show="merged"]');
  const hostHead = root.querySelector(".host-head");
  let term = null;
  let fit = null;
  let openName = null;
  let hostSeq = 0;          // the last line written to the terminal
  let hostBuffer = null;    // live events that came while the host's tail was loading
  let hostAtLineStart = true;

  // xterm's DOM renderer writes <style> elements and style attributes, which our policy
  // (style-src 'self') refuses. It creates elements through `documentOverride`, so give
  // it a document whose <style> elements feed constructed style sheets (CSSOM is not
  // inline style) and whose spans set style attributes through CSSOM.
  function cspDocument() {
    function styleSheetElement() {
      const element = document.createElement("template");
      const sheet = new CSSStyleSheet();
      document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
      let css = "";
      Object.defineProperty(element, "textContent", {
        get() { return css; },
        set(value) { css = String(value); sheet.replaceSync(css); },
      });
      return element;
    }
    function styledViaCssom(element) {
      const setAttribute = element.setAttribute;
      element.setAttribute = function (name, value) {
        if (String(name).toLowerCase() === "style") this.style.cssText = value;
        else setAttribute.call(this, name, value);
      };
      return element;
    }
    return new Proxy(document, {
      get(target, prop) {
        if (prop === "createElement") {
          return (tag, options) => {
            const name = String(tag).toLowerCase();
            if (name === "style") return styleSheetElement();
            const element = target.createElement(tag, options);
            return name === "span" || name === "div" ? styledViaCssom(element) : element;
          };
        }
        const value = Reflect.get(target, prop, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
  }

  function ensureTerminal() {
    if (term) return;
    term = new window.Terminal({
      convertEol: true, disableStdin: true, scrollback: HOST_LINES * 2, fontSize: 12.5,
      fontFamily: 'ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace',
      theme: {background: "#0f1522", foreground: "#d8dee9"},
      documentOverride: cspDocument(),
    });
    fit = new window.FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(termBox);
    window.addEventListener("resize", () => { if (!termBox.hidden) fit.fit(); });
  }

  const META = {cmd: "\x1b[1;36m", result: "\x1b[2m", host: "\x1b[1;33m", stderr: "\x1b[31m", diff: "\x1b[35m"};

  function writeHostEvent(ev) {
    const [seq, , , stream, text] = ev;
    let lines = text.split("\n").length - (text.endsWith("\n") ? 1 : 0);
    const last = seq + lines - 1;
    if (last <= hostSeq) return;
    let body = text;
    if (seq <= hostSeq) {  // overlaps what is written: drop the lines already there
      let skip = hostSeq - seq + 1;
      let pos = 0;
      while (skip-- > 0) pos = body.indexOf("\n", pos) + 1;
      body = body.slice(pos);
    }
    hostSeq = last;
    let prefix = "";
    if (stream !== "stdout" && stream !== "stderr" && !hostAtLineStart) prefix = "\n";
    if (stream === "host") body = "● " + body;
    const color = META[stream];
    term.write(prefix + (color ? color + body.replace(/\n(?!$)/g, "\x1b[0m\n" + color) + "\x1b[0m" : body));
    hostAtLineStart = body.endsWith("\n");
  }

  function openHost(name) {
    if (!tiles.has(name)) return;
    ensureTerminal();
    for (const li of tiles.values()) li.classList.toggle("open", li === tiles.get(name));
    openName = name;
    hostTab.textContent = name;
    hostTab.hidden = false;
    showTerminal();
    term.reset();
    term.write(`\x1b[2m${t("loading")}\x1b[0m\r`);
    hostSeq = 0;
    hostAtLineStart = true;
    hostBuffer = [];
    hostHead.hidden = false;
    hostHead.querySelector(".host-name").textContent = name;
    hostHead.querySelector(".host-download").href =
      data.hostLogUrl.replace("__host__", encodeURIComponent(name)) + "?download=1";
    fetch(`${outputUrl}?host=${encodeURIComponent(name)}&limit=${HOST_LINES}`, {credentials: "same-origin"})
      .then((r) => r.ok ? r.json() : Promise.reject(r.status))
      .then((body) => {
        if (openName !== name) return;
        term.reset();
        showHostResult(body.host);
        for (const ev of body.events) writeHostEvent(ev);
        const buffered = hostBuffer || [];
        hostBuffer = null;
        for (const ev of buffered) writeHostEvent(ev);
        if (!body.events.length && !buffered.length) term.write(`\x1b[2m${t("no-output")}\x1b[0m\r\n`);
      })
      .catch(() => { hostBuffer = null; });
  }

  function showHostResult(result) {
    if (!result) return;
    const state = hostHead.querySelector(".host-state");
    state.textContent = result.state_label + (result.exit_status === null ? "" : " · " + t("exit", result.exit_status));
    state.className = "host-state status " + ({ok: "ok", failed: "failed", unreachable: "failed", running: "running",
      cancelled: "cancelled", skipped: "cancelled", unknown: "unknown"}[result.state] || "pending");
    hostHead.querySelector(".host-error").textContent = result.error || "";
  }

  function showTerminal() {
    merged.hidden = true;
    termBox.hidden = false;
    hostTab.classList.add("active");
    mergedTab.classList.remove("active");
    fit.fit();
  }

  function showMerged() {
    termBox.hidden = true;
    merged.hidden = false;
    hostHead.hidden = true;
    hostTab.classList.remove("active");
    mergedTab.classList.add("active");
    schedule();
  }

  mergedTab.addEventListener("click", () => { showMerged(); merged.focus(); });
  hostTab.addEventListener("click", () => { if (openName) showTerminal(); });

  // --- search (on the server) --------------------------------------------------------------------
  const searchForm = root.querySelector(".output-search");
  const searchBox = root.querySelector(".search-results");
  const matchList = searchBox.querySelector(".matches");
  const moreButton = searchBox.querySelector(".search-more");
  let search = null;

  function runSearch(after) {
    const params = new URLSearchParams({q: search.q, after: String(after), limit: "200"});
    if (search.host) params.set("host", search.host);
    searchBox.hidden = false;
    searchBox.querySelector(".search-summary").textContent = t("loading");
    fetch(`${outputUrl}?${params}`, {credentials: "same-origin"})
      .then((r) => r.ok ? r.json() : Promise.reject(r.status))
      .then((body) => {
        for (const [seq, host, stream, line] of body.matches) {
          const li = document.createElement("li");
          li.dataset.seq = seq;
          li.dataset.host = host;
          const s = document.createElement("span"); s.className = "seq"; s.textContent = seq;
          const h = document.createElement("span"); h.className = "host"; h.textContent = host;
          li.append(s, h);
          const clean = line.replace(OTHER_ESCAPES, "").replace(SGR, "");
          const at = clean.toLowerCase().indexOf(search.q.toLowerCase());
          if (at >= 0) {
            const mark = document.createElement("mark");
            mark.textContent = clean.slice(at, at + search.q.length);
            li.append(clean.slice(0, at), mark, clean.slice(at + search.q.length));
          } else li.append(clean);
          li.classList.add("s-" + stream);
          matchList.appendChild(li);
        }
        search.after = body.scanned_to;
        moreButton.hidden = body.done;
        const found = matchList.children.length;
        searchBox.querySelector(".search-summary").textContent =
          (found ? "" : t("no-matches") + " ") + t("searched", body.scanned_to);
      })
      .catch(() => { searchBox.querySelector(".search-summary").textContent = ""; });
  }

  searchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const q = searchForm.elements.q.value.trim();
    if (!q) return;
    search = {q, host: !termBox.hidden ? openName : null, after: 0};
    matchList.textContent = "";
    runSearch(0);
  });
  moreButton.addEventListener("click", () => { if (search) runSearch(search.after); });
  searchBox.querySelector(".search-close").addEventListener("click", closeSearch);
  matchList.addEventListener("click", (event) => {
    const li = event.target.closest("li");
    if (li) jumpTo(Number(li.dataset.seq));
  });

  function closeSearch() {
    searchBox.hidden = true;
    matchList.textContent = "";
    search = null;
  }

  // --- keyboard -----------------------------------------------------------------------------------
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target.closest && target.closest("input, textarea, select, [contenteditable]")) {
      if (event.key === "Escape") target.blur();
      return;
    }
    if (event.key === "j" || event.key === "k") {
      event.preventDefault();
      moveSelection(event.key === "j" ? 1 : -1);
    } else if (event.key === "Enter" && target.closest && target.closest("#host-grid a")) {
      event.preventDefault();
      openHost(target.textContent);
    } else if (event.key === "Escape") {
      if (!searchBox.hidden) closeSearch();
      else if (!termBox.hidden) {
        showMerged();
        const open = openName && tiles.get(openName);
        if (open) open.firstChild.focus();
      }
    } else if (event.key === "/") {
      event.preventDefault();
      searchForm.elements.q.focus();
    } else if (event.key === "End" && !merged.hidden) {
      setFollow(true);
    }
  });

  // --- the websocket ----------------------------------------------------------------------------
  const liveState = document.getElementById("live-state");
  let ws = null;
  let ended = Boolean(data.expired);
  let caughtUp = false;
  let skew = 0;              // browser clock minus server clock, seconds
  let lag = 0;               // of the newest live batch
  let lastMessage = 0;
  let lastEventsAt = 0;
  let retry = 0;

  function ingest(events) {
    const added = [];
    for (const ev of events) {
      const lines = splitEvent(ev);
      const end = lines.length ? lines[lines.length - 1].seq : ev[0];
      if (end <= lastSeq) continue;
      for (const line of lines) {
        if (line.seq <= lastSeq) continue;
        if (line.seq !== lastSeq + 1) tail = [];  // never expected: keep the tail contiguous
        tail.push(line);
        lastSeq = line.seq;
      }
      added.push(ev);
      if (ev[3] === "host") {
        setTileState(ev[1], ev[4].split(/\s/, 1)[0]);
        if (caughtUp) refreshSummary();
      }
      if (openName === ev[1]) {
        if (hostBuffer) hostBuffer.push(ev); else writeHostEvent(ev);
      }
    }
    if (tail.length > KEEP_LINES * 1.2) tail = tail.slice(tail.length - KEEP_LINES);
    if (added.length) {
      lastEventsAt = Date.now();
      let newest = 0;
      for (const ev of added) newest = Math.max(newest, ev[5]);
      if (caughtUp) lag = Math.max(0, Date.now() / 1000 - skew - newest);
      schedule();
    }
  }

  // The status, counts and progress (the #hosts region htmx polls every 2 s) are
  // fetched again soon after a host changes state or the output ends.
  let summaryTimer = null;
  function refreshSummary(delay = 300) {
    if (summaryTimer || !window.htmx) return;
    summaryTimer = setTimeout(() => {
      summaryTimer = null;
      const region = document.getElementById("hosts");
      if (region && region.dataset.terminal !== "1") {
        window.htmx.ajax("GET", location.pathname, {target: "#hosts", swap: "outerHTML"});
      }
    }, delay);
  }

  function connect() {
    const initial = Number(data.lastSeq || 0);
    if (!lastSeq && !start) {
      start = Math.max(0, initial - TAIL_LINES);
      lastSeq = start;
    }
    caughtUp = false;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(`${scheme}//${location.host}${data.wsPath}?after=${lastSeq}`);
    ws.addEventListener("message", (message) => {
      lastMessage = Date.now();
      const body = JSON.parse(message.data);
      if (body.type === "events") ingest(body.events);
      else if (body.type === "hello") { skew = Date.now() / 1000 - body.now; retry = 0; }
      else if (body.type === "caught_up") { caughtUp = true; lag = 0; }
      else if (body.type === "tick") skew = Math.min(skew, Date.now() / 1000 - body.now);
      else if (body.type === "end") { ended = true; ws.close(); refreshSummary(1000); }
      updateState();
    });
    ws.addEventListener("close", () => {
      ws = null;
      updateState();
      if (ended) return;
      retry = Math.min(retry + 1, 6);
      setTimeout(connect, Math.min(10000, 250 * 2 ** retry));
    });
  }

  function updateState() {
    let text;
    let cls = "";
    if (data.expired) text = t("expired");
    else if (ended) text = t("finished");
    else if (!ws || ws.readyState !== WebSocket.OPEN) { text = lastMessage ? t("reconnecting") : t("connecting"); cls = lastMessage ? "down" : ""; }
    else if (!caughtUp) text = t("catching-up");
    else {
      const quiet = Date.now() - lastEventsAt > 3000;
      const behind = quiet ? 0 : Math.round(lag);
      if (behind >= BEHIND_AFTER) { text = t("behind", behind); cls = "behind"; }
      else { text = t("live"); cls = "live"; }
    }
    liveState.textContent = text;
    liveState.className = "live-state " + cls;
  }

  setInterval(() => {
    // A socket that says nothing for a while (ticks come every 5 s) is dead: reconnect.
    if (ws && ws.readyState === WebSocket.OPEN && lastMessage && Date.now() - lastMessage > 15000) ws.close();
    updateState();
  }, 1000);

  measure();
  new ResizeObserver(schedule).observe(merged);
  applyFilter();
  updateState();
  if (!data.expired) connect();
  schedule();
})();

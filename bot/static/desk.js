/*
 * redesk web desk: a small chat client for the party–mass service centre.
 * Plain JavaScript, no build step. Served under a strict CSP, so this file
 * never writes HTML strings: every node is built and filled via textContent.
 */
"use strict";

(() => {
  // ---------------------------------------------------------------------
  // Constants and state
  // ---------------------------------------------------------------------

  const MAX_LEN = 2000;
  const POLL_WAIT_S = 25;
  const POLL_TIMEOUT_MS = (POLL_WAIT_S + 15) * 1000;
  const POST_TIMEOUT_MS = 15000;
  const POST_MAX_ATTEMPTS = 6;
  const BACKOFF_MAX_MS = 30000;
  const HISTORY_LIMIT = 300;
  const PHONE_RE = /^[0-9+\- ]{5,20}$/; // digits with +, - or spaces ...
  const PHONE_DIGITS_MIN = 5; // ... of which at least this many are digits

  const KEYS = {
    token: "redesk.token",
    after: "redesk.after",
    name: "redesk.name",
    history: "redesk.history",
    // The centre code this tab's identity was given (POST /api/web/session or a link later).
    centreSent: "redesk.centre.sent",
  };

  // localStorage (shared by the browser's tabs): the centre the resident came through by a
  // /desk?centre=CODE link, so a later visit to /desk makes identities of that centre too.
  const CENTRE_KEY = "redesk.centre";
  const CENTRE_MAX = 64;

  const STATUS = {
    none: { text: "未创建身份", cls: "status-idle" },
    connecting: { text: "连接中", cls: "status-connecting" },
    connected: { text: "已连接", cls: "status-ok" },
    retrying: { text: "连接中断，重试中", cls: "status-error" },
    expired: { text: "身份已失效", cls: "status-error" },
  };

  const state = {
    token: null, // bearer token of this tab's identity
    name: "", // display name chosen for this identity
    after: 0, // highest message seq seen
    history: [], // rendered entries, persisted for page reloads
    identityGen: 0, // bumped whenever the identity changes
    pollGen: 0, // bumped to stop a running poll loop
    pollAbort: null, // AbortController of the in-flight poll
    wake: null, // resolves the current poll back-off sleep early
    queue: [], // user entries waiting to be delivered, in order
    sending: false, // true while the queue is being worked on
    authNoticeFor: null, // token for which the "expired" notice was shown
    systemCounter: 0, // local ids for system notices
  };

  const nodes = new Map(); // entry key -> <li> element
  const el = {}; // cached DOM references

  // ---------------------------------------------------------------------
  // Small utilities
  // ---------------------------------------------------------------------

  // Read a value from sessionStorage, tolerating disabled storage.
  function storeGet(key) {
    try {
      return window.sessionStorage.getItem(key);
    } catch (_) {
      return null;
    }
  }

  // Write (or remove, when value is null) a sessionStorage value.
  function storeSet(key, value) {
    try {
      if (value === null) window.sessionStorage.removeItem(key);
      else window.sessionStorage.setItem(key, value);
    } catch (_) {
      /* storage full or disabled: the page still works, just not across reloads */
    }
  }

  // Read a localStorage value, tolerating disabled storage.
  function localGet(key) {
    try {
      return window.localStorage.getItem(key);
    } catch (_) {
      return null;
    }
  }

  // Write (or remove, when value is null) a localStorage value.
  function localSet(key, value) {
    try {
      if (value === null) window.localStorage.removeItem(key);
      else window.localStorage.setItem(key, value);
    } catch (_) {
      /* storage disabled: the link's centre still goes with this page's identity */
    }
  }

  // The centre code of the page's link (?centre=CODE), or null.
  function linkCentre() {
    let code = null;
    try {
      code = new URLSearchParams(window.location.search).get("centre");
    } catch (_) {
      code = null;
    }
    code = (code || "").trim();
    return code && code.length <= CENTRE_MAX ? code : null;
  }

  // Length in Unicode code points (what the server counts), not UTF-16 units.
  function charCount(text) {
    return Array.from(text).length;
  }

  // A fresh client message id; falls back to getRandomValues outside secure contexts.
  function newId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    const b = window.crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  // Exponential back-off with jitter: ~1s, 2s, 4s ... capped at 30s.
  function backoffDelay(attempt) {
    const base = Math.min(BACKOFF_MAX_MS, 1000 * 2 ** Math.max(0, attempt - 1));
    return Math.round(base * (0.75 + Math.random() * 0.5));
  }

  // Promise-based sleep that can be cut short through state.wake.
  function sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        if (state.wake === done) state.wake = null;
        resolve();
      }
      state.wake = done;
    });
  }

  // Plain sleep that is never woken early (used by the send queue).
  function pause(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  // Current time as HH:MM for message meta lines.
  function clock(ts) {
    const d = new Date(ts);
    return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
  }

  // Create an element with an optional class name and text content.
  function make(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  // Pull the server's Chinese error message out of a response, or a generic one.
  function errorText(res) {
    if (res && res.data && typeof res.data.error === "string" && res.data.error) {
      return res.data.error;
    }
    return `请求失败（HTTP ${res ? res.status : "?"}），请稍后重试。`;
  }

  // ---------------------------------------------------------------------
  // HTTP
  // ---------------------------------------------------------------------

  // JSON request with timeout; resolves {status, data}, rejects on network errors.
  async function request(method, url, { body, token, timeoutMs, signal } = {}) {
    const ctrl = new AbortController();
    const onAbort = () => ctrl.abort();
    if (signal) {
      if (signal.aborted) ctrl.abort();
      else signal.addEventListener("abort", onAbort, { once: true });
    }
    const timer = setTimeout(() => ctrl.abort(), timeoutMs || POST_TIMEOUT_MS);
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    try {
      const res = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: ctrl.signal,
        cache: "no-store",
        credentials: "same-origin",
      });
      let data = null;
      try {
        data = await res.json();
      } catch (_) {
        data = null;
      }
      return { status: res.status, data };
    } finally {
      clearTimeout(timer);
      if (signal) signal.removeEventListener("abort", onAbort);
    }
  }

  // ---------------------------------------------------------------------
  // Session persistence
  // ---------------------------------------------------------------------

  // Load token, cursor, name and transcript of this tab from sessionStorage.
  function loadSession() {
    state.token = storeGet(KEYS.token) || null;
    state.name = storeGet(KEYS.name) || "";
    const after = parseInt(storeGet(KEYS.after) || "0", 10);
    state.after = Number.isFinite(after) && after > 0 ? after : 0;
    try {
      const raw = JSON.parse(storeGet(KEYS.history) || "[]");
      state.history = Array.isArray(raw) ? raw.filter(isValidEntry) : [];
    } catch (_) {
      state.history = [];
    }
    if (!state.token) state.history = [];
  }

  // Basic shape check for a persisted transcript entry.
  function isValidEntry(e) {
    return e && typeof e === "object" && typeof e.key === "string" &&
      ["bot", "user", "system"].includes(e.kind) && typeof e.text === "string";
  }

  // Persist the identity (token + name + cursor).
  function saveIdentity() {
    storeSet(KEYS.token, state.token);
    storeSet(KEYS.name, state.name || null);
    saveAfter();
  }

  // Persist the highest seen message seq.
  function saveAfter() {
    storeSet(KEYS.after, String(state.after));
  }

  // Persist the transcript, keeping only the most recent entries.
  function saveHistory() {
    if (state.history.length > HISTORY_LIMIT) {
      const dropped = state.history.splice(0, state.history.length - HISTORY_LIMIT);
      dropped.forEach((e) => {
        const li = nodes.get(e.key);
        if (li) li.remove();
        nodes.delete(e.key);
      });
    }
    storeSet(KEYS.history, JSON.stringify(state.history));
  }

  // ---------------------------------------------------------------------
  // Header: name and connection status
  // ---------------------------------------------------------------------

  // Show the identity's display name, or 未命名; 退出 only while there is an identity.
  function renderName() {
    el.identityName.textContent = state.name || "未命名";
    el.logout.hidden = !state.token;
  }

  // Update the small connection status line.
  function setStatus(kind) {
    const s = STATUS[kind] || STATUS.connecting;
    el.status.textContent = s.text;
    el.status.className = `status ${s.cls}`;
  }

  // ---------------------------------------------------------------------
  // Transcript rendering
  // ---------------------------------------------------------------------

  // True when the message list is scrolled (almost) to the bottom.
  function isNearBottom() {
    const m = el.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
  }

  // Scroll the message list to the newest message.
  function scrollToBottom() {
    el.messages.scrollTop = el.messages.scrollHeight;
  }

  // Keep the newest message in view when the list changes size (window resize, phone
  // rotation, on-screen keyboard, a taller composer) while the reader was at the bottom;
  // without this the list keeps its scrollTop and the latest messages slide out of view.
  function watchScroll() {
    let stuck = true;
    el.messages.addEventListener("scroll", () => { stuck = isNearBottom(); }, { passive: true });
    if (typeof window.ResizeObserver === "function") {
      new window.ResizeObserver(() => { if (stuck) scrollToBottom(); }).observe(el.messages);
    }
  }

  // Build the <li> for a bot message, with its buttons underneath.
  function buildBot(entry) {
    const li = make("li", entry.done ? "msg msg-bot is-done" : "msg msg-bot");
    li.dataset.seq = String(entry.seq || "");
    li.appendChild(make("div", "bubble", entry.text));
    if (Array.isArray(entry.buttons) && entry.buttons.length) {
      const row = make("div", "actions");
      entry.buttons.forEach((b) => {
        const btn = make("button", "btn btn-action", b.label);
        btn.type = "button";
        btn.addEventListener("click", () => onActionClick(btn, b));
        row.appendChild(btn);
      });
      li.appendChild(row);
    }
    li.appendChild(make("div", "meta", clock(entry.ts)));
    return li;
  }

  // Build the <li> for one of the user's own messages.
  function buildUser(entry) {
    const li = make("li", "msg msg-user");
    li.appendChild(make("div", "bubble", entry.text));
    li.appendChild(make("div", "meta"));
    return li;
  }

  // Build the <li> for a system notice, optionally with a "new identity" button.
  function buildSystem(entry) {
    const li = make("li", "msg msg-system");
    const box = make("div", "notice");
    box.appendChild(make("span", null, entry.text));
    if (entry.offer === "new-identity") {
      const btn = make("button", "btn btn-small btn-primary", "创建新身份");
      btn.type = "button";
      btn.addEventListener("click", () => openIdentityDialog());
      box.appendChild(btn);
    }
    li.appendChild(box);
    return li;
  }

  // Refresh the status line and classes of a user entry.
  function updateUserNode(entry) {
    const li = nodes.get(entry.key);
    if (!li) return;
    li.classList.toggle("is-pending", entry.state === "pending");
    li.classList.toggle("is-failed", entry.state === "failed");
    const meta = li.querySelector(".meta");
    meta.replaceChildren();
    if (entry.state === "pending") {
      meta.appendChild(make("span", null, entry.note || "发送中…"));
    } else if (entry.state === "failed") {
      meta.appendChild(make("span", "meta-error", entry.note || "发送失败"));
      const retry = make("button", "btn btn-link", "重试");
      retry.type = "button";
      retry.addEventListener("click", () => retryEntry(entry));
      meta.appendChild(retry);
    } else {
      meta.appendChild(make("span", null, clock(entry.ts)));
    }
  }

  // Render one entry into the message list.
  function renderEntry(entry) {
    let li;
    if (entry.kind === "bot") li = buildBot(entry);
    else if (entry.kind === "user") li = buildUser(entry);
    else li = buildSystem(entry);
    nodes.set(entry.key, li);
    el.messages.appendChild(li);
    if (entry.kind === "user") updateUserNode(entry);
  }

  // Append an entry to the transcript, persist it and keep the view scrolled.
  function addEntry(entry, forceScroll) {
    const stick = forceScroll || isNearBottom();
    state.history.push(entry);
    renderEntry(entry);
    saveHistory();
    if (stick) scrollToBottom();
  }

  // Add a system notice to the chat.
  function addNotice(text, offer) {
    state.systemCounter += 1;
    addEntry({
      kind: "system",
      key: `s-${Date.now()}-${state.systemCounter}`,
      text,
      offer: offer || null,
      ts: Date.now(),
    }, true);
  }

  // Redraw the whole transcript from state.history (used on load).
  function renderHistory() {
    el.messages.replaceChildren();
    nodes.clear();
    state.history.forEach((entry) => {
      // Sends that were in flight when the page was closed cannot be confirmed.
      if (entry.kind === "user" && entry.state === "pending") {
        entry.state = "failed";
        entry.note = "未确认送达";
      }
      renderEntry(entry);
    });
    saveHistory();
    scrollToBottom();
  }

  // ---------------------------------------------------------------------
  // Sending
  // ---------------------------------------------------------------------

  // Show a user bubble for a payload and queue it for delivery.
  function sendPayload(payload, label) {
    if (!state.token) {
      openIdentityDialog();
      return false;
    }
    const entry = {
      kind: "user",
      key: `u-${payload.id}`,
      id: payload.id,
      text: label,
      payload,
      state: "pending",
      note: null,
      ts: Date.now(),
    };
    addEntry(entry, true);
    enqueue(entry);
    return true;
  }

  // Send typed text (also used by the quick buttons).
  function sendText(text) {
    const clean = text.trim();
    if (!clean || charCount(clean) > MAX_LEN) return false;
    return sendPayload({ id: newId(), text: clean }, clean);
  }

  // Put an entry on the ordered delivery queue and start working on it.
  function enqueue(entry) {
    entry.gen = state.identityGen;
    state.queue.push(entry);
    processQueue();
  }

  // Deliver queued entries one at a time so the server sees them in order.
  // A worker belongs to one identity generation and quits when it changes.
  async function processQueue() {
    if (state.sending) return;
    const gen = state.identityGen;
    state.sending = true;
    try {
      while (gen === state.identityGen && state.queue.length) {
        const entry = state.queue.shift();
        if (entry.gen === gen) await deliver(entry);
      }
    } finally {
      if (gen === state.identityGen) state.sending = false;
    }
  }

  // Mark an entry's delivery state and persist it.
  function setEntryState(entry, value, note) {
    entry.state = value;
    entry.note = note || null;
    saveHistory();
    updateUserNode(entry);
  }

  // POST one message, retrying network errors and 5xx with the same id.
  async function deliver(entry) {
    for (let attempt = 1; attempt <= POST_MAX_ATTEMPTS; attempt += 1) {
      if (entry.gen !== state.identityGen) return;
      let res = null;
      try {
        res = await request("POST", "/api/web/messages", {
          body: entry.payload,
          token: state.token,
          timeoutMs: POST_TIMEOUT_MS,
        });
      } catch (_) {
        res = null; // network error or timeout: retry below
      }
      if (entry.gen !== state.identityGen) return;

      if (res && res.status >= 200 && res.status < 300) {
        setEntryState(entry, "sent");
        return;
      }
      if (res && res.status === 401) {
        setEntryState(entry, "failed", "身份已失效");
        showAuthExpired(res);
        return;
      }
      if (res && res.status >= 400 && res.status < 500) {
        setEntryState(entry, "failed");
        addNotice(errorText(res));
        return;
      }
      if (attempt < POST_MAX_ATTEMPTS) {
        setEntryState(entry, "pending", `发送中…（第 ${attempt} 次重试）`);
        await pause(backoffDelay(attempt));
      }
    }
    setEntryState(entry, "failed", "发送失败，网络或服务异常");
  }

  // Re-queue a failed entry with its original id.
  function retryEntry(entry) {
    if (entry.state !== "failed") return;
    if (!state.token) {
      openIdentityDialog();
      return;
    }
    setEntryState(entry, "pending");
    enqueue(entry);
  }

  // A bot button was pressed: echo its label and post its action.
  function onActionClick(btn, button) {
    if (btn.disabled) return;
    // Brief cooldown against accidental double taps.
    btn.disabled = true;
    btn.classList.add("is-chosen");
    setTimeout(() => { btn.disabled = false; }, 1200);
    sendPayload({ id: newId(), action: button.action }, button.label);
  }

  // ---------------------------------------------------------------------
  // Receiving (long poll)
  // ---------------------------------------------------------------------

  // Stop any running poll loop and start a new one for the current token.
  function startPolling() {
    stopPolling();
    refreshRole();
    if (!state.token) {
      setStatus("none");
      return;
    }
    const gen = state.pollGen;
    pollLoop(gen);
  }

  // Cancel the running poll loop (if any).
  function stopPolling() {
    state.pollGen += 1;
    if (state.pollAbort) state.pollAbort.abort();
    state.pollAbort = null;
    if (state.wake) state.wake();
  }

  // Long-poll loop: fetch new messages forever, backing off on errors.
  async function pollLoop(gen) {
    let failures = 0;
    let quick = true; // first request answers at once to confirm the connection
    setStatus("connecting");
    while (gen === state.pollGen) {
      const ctrl = new AbortController();
      state.pollAbort = ctrl;
      const wait = quick ? 0 : POLL_WAIT_S;
      const started = Date.now();
      let res = null;
      try {
        res = await request("GET", `/api/web/messages?after=${state.after}&wait=${wait}`, {
          token: state.token,
          timeoutMs: POLL_TIMEOUT_MS,
          signal: ctrl.signal,
        });
      } catch (_) {
        res = null;
      }
      if (gen !== state.pollGen) return;

      if (res && res.status === 200) {
        failures = 0;
        quick = false;
        setStatus("connected");
        const count = receive(res.data);
        // Guard against a server that answers instantly with nothing.
        if (count === 0 && wait > 0 && Date.now() - started < 1000) await sleep(1000);
        continue;
      }
      if (res && res.status === 401) {
        setStatus("expired");
        showAuthExpired(res);
        return;
      }
      failures += 1;
      quick = true;
      setStatus("retrying");
      await sleep(backoffDelay(failures));
    }
  }

  // Render messages newer than state.after; returns how many were new.
  function receive(data) {
    const list = data && Array.isArray(data.messages) ? data.messages : [];
    const fresh = list
      .filter((m) => m && Number.isInteger(m.seq) && m.seq > state.after)
      .sort((a, b) => a.seq - b.seq);
    fresh.forEach((m) => {
      if (m.seq <= state.after) return;
      if (Number.isInteger(m.updates)) {
        // A card whose request moved on: its text and buttons are replaced in place.
        applyUpdate(m);
        state.after = m.seq;
        return;
      }
      addEntry({
        kind: "bot",
        key: `b-${m.seq}`,
        seq: m.seq,
        text: typeof m.text === "string" ? m.text : "",
        buttons: cleanButtons(m.buttons),
        ts: Date.now(),
      }, false);
      state.after = m.seq;
    });
    if (fresh.length) {
      saveAfter();
      // A reply may follow a change of role (绑定 <code>): the quick buttons follow it.
      refreshRole();
    }
    return fresh.length;
  }

  // ---------------------------------------------------------------------
  // Role: which quick buttons this identity is offered
  // ---------------------------------------------------------------------

  // Show the controls marked data-roles="worker leader ..." to those roles only.
  function applyRole(role) {
    document.querySelectorAll("[data-roles]").forEach((node) => {
      node.hidden = !node.dataset.roles.split(/\s+/).includes(role);
    });
  }

  // Ask the server what this identity is (the page never guesses a role).
  async function refreshRole() {
    const token = state.token;
    if (!token) {
      applyRole("");
      return;
    }
    let res = null;
    try {
      res = await request("GET", "/api/web/me", { token });
    } catch (_) {
      return; // keep what is shown; the next message asks again
    }
    if (token !== state.token) return;
    if (res && res.status === 200 && res.data && typeof res.data.role === "string") {
      applyRole(res.data.role);
    }
  }

  // Replace the card with seq m.updates by the update's text and buttons (none left: the
  // card is marked done). A card no longer in the transcript is left alone.
  function applyUpdate(m) {
    const entry = state.history.find((e) => e.kind === "bot" && e.seq === m.updates);
    if (!entry) return;
    entry.text = typeof m.text === "string" ? m.text : entry.text;
    entry.buttons = cleanButtons(m.buttons);
    entry.done = entry.buttons.length === 0;
    const old = nodes.get(entry.key);
    const li = buildBot(entry);
    if (old) old.replaceWith(li);
    nodes.set(entry.key, li);
    saveHistory();
  }

  // Keep only well-formed {label, action} buttons.
  function cleanButtons(buttons) {
    if (!Array.isArray(buttons)) return [];
    return buttons
      .filter((b) => b && typeof b.label === "string" && typeof b.action === "string")
      .map((b) => ({ label: b.label, action: b.action }));
  }

  // Tell the user (once per token) that the identity is gone, and offer a new one.
  // `res` is the 401 answer: its own sentence already says what to do, so it is shown
  // as is; only a bare 401 (no JSON) gets the local wording.
  function showAuthExpired(res) {
    if (state.authNoticeFor === state.token) return;
    state.authNoticeFor = state.token;
    setStatus("expired");
    const own = res && res.data && typeof res.data.error === "string" && res.data.error;
    addNotice(own || "身份已失效或已过期，请创建新身份。", "new-identity");
  }

  // ---------------------------------------------------------------------
  // Identity
  // ---------------------------------------------------------------------

  // Show the "new identity" dialog asking for an optional display name.
  function openIdentityDialog() {
    if (el.identityDialog.hidden) el.returnFocus = document.activeElement;
    el.identityInput.value = "";
    el.identityError.hidden = true;
    el.identitySubmit.disabled = false;
    el.identityCancel.hidden = !state.token;
    showDialog(true);
    el.identityInput.focus();
  }

  // Show or hide the identity dialog; the page behind it is inert while it is open,
  // so Tab and screen readers stay inside the dialog.
  function showDialog(open) {
    el.identityDialog.hidden = !open;
    if (el.app) el.app.inert = open;
    if (!open && el.returnFocus && document.contains(el.returnFocus)) el.returnFocus.focus();
  }

  // Hide the identity dialog (only allowed once an identity exists).
  function closeIdentityDialog() {
    if (!state.token) return;
    showDialog(false);
  }

  // Show an error inside the identity dialog.
  function identityError(text) {
    el.identityError.textContent = text;
    el.identityError.hidden = false;
  }

  // POST /api/web/session and switch this tab to the new identity.
  async function createIdentity(event) {
    event.preventDefault();
    const name = el.identityInput.value.trim();
    el.identitySubmit.disabled = true;
    el.identityError.hidden = true;
    const centre = localGet(CENTRE_KEY);
    let res = null;
    let refused = null; // the server's answer to a centre code it does not know
    try {
      const body = name ? { name } : {};
      if (centre) body.centre = centre;
      res = await request("POST", "/api/web/session", { body, timeoutMs: POST_TIMEOUT_MS });
      if (centre && res.status === 400 && res.data && Array.isArray(res.data.centres)) {
        // An unknown or inactive centre: forget it and make an identity without one; the
        // resident is asked to choose when they write their request.
        refused = errorText(res);
        localSet(CENTRE_KEY, null);
        delete body.centre;
        res = await request("POST", "/api/web/session", { body, timeoutMs: POST_TIMEOUT_MS });
      }
    } catch (_) {
      res = null;
    }
    el.identitySubmit.disabled = false;
    if (!res) {
      identityError("网络异常，无法创建身份，请稍后重试。");
      return;
    }
    if (res.status < 200 || res.status >= 300 || !res.data || typeof res.data.token !== "string") {
      identityError(errorText(res));
      return;
    }
    el.returnFocus = null; // switchIdentity focuses the composer itself
    showDialog(false);
    const entered = res.data.centre && typeof res.data.centre.name === "string" ? res.data.centre : null;
    switchIdentity(res.data.token, name, entered);
    storeSet(KEYS.centreSent, centre);
    if (refused) addNotice(refused);
  }

  // Forget the current identity (queue, transcript, cursor) and hold `token` (null: none).
  function replaceIdentity(token, name) {
    stopPolling();
    state.identityGen += 1;
    state.queue = [];
    state.sending = false; // the old generation's worker exits on its own
    state.token = token;
    state.name = name;
    state.after = 0;
    state.history = [];
    state.authNoticeFor = null;
    saveIdentity();
    el.messages.replaceChildren();
    nodes.clear();
    saveHistory();
    renderName();
  }

  // Forget the old identity and adopt a new token (`centre`: the centre it belongs to).
  function switchIdentity(token, name, centre) {
    replaceIdentity(token, name);
    const where = centre ? `，由「${centre.name}」受理您的诉求` : "";
    addNotice(`已创建新身份「${name || "未命名"}」${where}。发送「帮助」可查看可用功能。`);
    startPolling();
    showTab("chat");
    el.input.focus();
  }

  // 退出: POST /api/web/logout ends the token on the server, then this tab forgets it.
  // A 401 means it is already invalid, so it is forgotten too; a network failure keeps it,
  // so that a second click can still end it on the server.
  async function logout() {
    const token = state.token;
    if (!token) return;
    el.logout.disabled = true;
    let res = null;
    try {
      res = await request("POST", "/api/web/logout", { token, timeoutMs: POST_TIMEOUT_MS });
    } catch (_) {
      res = null;
    }
    el.logout.disabled = false;
    if (token !== state.token) return; // another identity was made meanwhile
    if (!res || (res.status !== 204 && res.status !== 401)) {
      addNotice(res ? errorText(res) : "网络异常，未能退出，请稍后重试。");
      return;
    }
    forgetIdentity();
  }

  // Drop this tab's identity (token, name, cursor, queue, transcript) and ask for a new one.
  function forgetIdentity() {
    replaceIdentity(null, "");
    applyRole(null);
    setStatus("none");
    addNotice("已退出，此身份在本页已失效。", "new-identity");
    openIdentityDialog();
  }

  // ---------------------------------------------------------------------
  // Tabs
  // ---------------------------------------------------------------------

  // Activate one of the two tabs ("chat" or "intake").
  function showTab(name) {
    const tabs = [
      { id: "chat", tab: el.tabChat, panel: el.panelChat },
      { id: "intake", tab: el.tabIntake, panel: el.panelIntake },
    ];
    tabs.forEach((t) => {
      const on = t.id === name;
      t.tab.setAttribute("aria-selected", on ? "true" : "false");
      t.tab.tabIndex = on ? 0 : -1;
      t.panel.hidden = !on;
    });
    if (name === "chat") scrollToBottom();
  }

  // Arrow keys move between tabs (WAI-ARIA tabs pattern).
  function onTabKey(event) {
    if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
    event.preventDefault();
    const next = event.currentTarget === el.tabChat ? "intake" : "chat";
    showTab(next);
    (next === "chat" ? el.tabChat : el.tabIntake).focus();
  }

  // ---------------------------------------------------------------------
  // Chat composer
  // ---------------------------------------------------------------------

  // Update the chat character counter and the send button.
  function updateCounter() {
    const n = charCount(el.input.value);
    el.counter.textContent = `${n} / ${MAX_LEN}`;
    el.counter.classList.toggle("is-over", n > MAX_LEN);
    el.send.disabled = !el.input.value.trim() || n > MAX_LEN;
  }

  // Submit handler of the composer form.
  function onComposerSubmit(event) {
    event.preventDefault();
    submitComposer();
  }

  // Send whatever is in the composer, then clear it.
  function submitComposer() {
    const text = el.input.value;
    if (!text.trim()) return;
    if (charCount(text.trim()) > MAX_LEN) {
      addNotice(`消息过长，最多 ${MAX_LEN} 字。`);
      return;
    }
    if (sendText(text)) {
      el.input.value = "";
      updateCounter();
    }
    el.input.focus();
  }

  // Enter sends, Shift+Enter inserts a newline; IME composition is left alone.
  function onComposerKey(event) {
    if (event.key !== "Enter" || event.shiftKey) return;
    if (event.isComposing || event.keyCode === 229) return;
    event.preventDefault();
    submitComposer();
  }

  // Quick buttons (帮助 / 查询 / 待办) send their own text.
  function onQuickClick(event) {
    const btn = event.target.closest("[data-quick]");
    if (btn) sendText(btn.dataset.quick);
  }

  // ---------------------------------------------------------------------
  // Reception-desk intake form
  // ---------------------------------------------------------------------

  // Show or clear a field error under an input.
  function fieldError(input, errorNode, text) {
    errorNode.textContent = text || "";
    errorNode.hidden = !text;
    input.setAttribute("aria-invalid", text ? "true" : "false");
  }

  // Update the intake character counter.
  function updateIntakeCounter() {
    const n = charCount(el.intakeText.value);
    el.intakeCounter.textContent = `${n} / ${MAX_LEN}`;
    el.intakeCounter.classList.toggle("is-over", n > MAX_LEN);
  }

  // Validate the intake form; returns the cleaned values or null.
  function validateIntake() {
    const name = el.intakeName.value.trim();
    const phone = el.intakePhone.value.trim();
    const text = el.intakeText.value.trim();
    let ok = true;

    const phoneDigits = phone.replace(/[^0-9]/g, "").length;
    if (phone && (!PHONE_RE.test(phone) || phoneDigits < PHONE_DIGITS_MIN)) {
      fieldError(el.intakePhone, el.intakePhoneError, "联系电话格式不正确：应为 5–20 位数字，可含 +、- 或空格。");
      ok = false;
    } else {
      fieldError(el.intakePhone, el.intakePhoneError, "");
    }

    if (!text) {
      fieldError(el.intakeText, el.intakeTextError, "请填写诉求内容。");
      ok = false;
    } else if (charCount(text) > MAX_LEN) {
      fieldError(el.intakeText, el.intakeTextError, `诉求内容最多 ${MAX_LEN} 字。`);
      ok = false;
    } else {
      fieldError(el.intakeText, el.intakeTextError, "");
    }

    if (!ok) {
      (el.intakePhoneError.hidden ? el.intakeText : el.intakePhone).focus();
      return null;
    }
    return { name, phone, text };
  }

  // Submit the walk-in request, echo it in the chat and switch to the chat tab.
  function onIntakeSubmit(event) {
    event.preventDefault();
    const intake = validateIntake();
    if (!intake) return;
    const label = [
      "【接待台登记】",
      `群众姓名：${intake.name || "未填写"}`,
      `联系电话：${intake.phone || "未填写"}`,
      `诉求内容：${intake.text}`,
    ].join("\n");
    if (!sendPayload({ id: newId(), intake }, label)) return;
    el.intake.reset();
    updateIntakeCounter();
    showTab("chat");
    scrollToBottom();
  }

  // ---------------------------------------------------------------------
  // Startup
  // ---------------------------------------------------------------------

  // Cache the DOM nodes used by the page.
  function cacheElements() {
    const ids = {
      identityName: "identity-name",
      newIdentity: "new-identity",
      logout: "logout",
      status: "status",
      tabChat: "tab-chat",
      tabIntake: "tab-intake",
      panelChat: "panel-chat",
      panelIntake: "panel-intake",
      messages: "messages",
      composer: "composer",
      input: "input",
      counter: "counter",
      send: "send",
      intake: "intake",
      intakeName: "intake-name",
      intakePhone: "intake-phone",
      intakePhoneError: "intake-phone-error",
      intakeText: "intake-text",
      intakeTextError: "intake-text-error",
      intakeCounter: "intake-counter",
      identityDialog: "identity-dialog",
      identityForm: "identity-form",
      identityInput: "identity-input",
      identityError: "identity-error",
      identityCancel: "identity-cancel",
      identitySubmit: "identity-submit",
    };
    Object.entries(ids).forEach(([k, id]) => { el[k] = document.getElementById(id); });
    el.quick = document.querySelector(".quick");
    el.app = document.querySelector(".app");
  }

  // Wire up every event listener.
  function bindEvents() {
    el.tabChat.addEventListener("click", () => showTab("chat"));
    el.tabIntake.addEventListener("click", () => showTab("intake"));
    el.tabChat.addEventListener("keydown", onTabKey);
    el.tabIntake.addEventListener("keydown", onTabKey);

    el.composer.addEventListener("submit", onComposerSubmit);
    el.input.addEventListener("input", updateCounter);
    el.input.addEventListener("keydown", onComposerKey);
    el.quick.addEventListener("click", onQuickClick);

    el.intake.addEventListener("submit", onIntakeSubmit);
    el.intakeText.addEventListener("input", updateIntakeCounter);
    el.intakePhone.addEventListener("input", () => fieldError(el.intakePhone, el.intakePhoneError, ""));
    el.intakeText.addEventListener("input", () => fieldError(el.intakeText, el.intakeTextError, ""));

    el.newIdentity.addEventListener("click", openIdentityDialog);
    el.logout.addEventListener("click", logout);
    el.identityForm.addEventListener("submit", createIdentity);
    el.identityCancel.addEventListener("click", closeIdentityDialog);
    el.identityDialog.addEventListener("keydown", (e) => {
      if (e.key === "Escape") closeIdentityDialog();
    });

    watchScroll();

    // Coming back online: skip the remaining back-off and poll right away.
    window.addEventListener("online", () => { if (state.wake) state.wake(); });
  }

  // A centre's link opened for an identity that exists: the server moves it there (for the
  // requests it files from now on) and answers in the chat. Sent once per code and tab.
  function followLink(code) {
    if (!code || storeGet(KEYS.centreSent) === code) return;
    storeSet(KEYS.centreSent, code);
    enqueue({ kind: "user", key: `c-${Date.now()}`, payload: { id: newId(), centre: code } });
  }

  // Entry point: restore this tab's identity or ask for a new one.
  function init() {
    cacheElements();
    bindEvents();
    loadSession();
    renderName();
    renderHistory();
    updateCounter();
    updateIntakeCounter();
    const link = linkCentre();
    if (link) localSet(CENTRE_KEY, link);
    if (state.token) {
      startPolling();
      followLink(link);
    } else {
      setStatus("none");
      openIdentityDialog();
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();

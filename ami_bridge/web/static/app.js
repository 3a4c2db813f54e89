/* ami-bridge workstation page: plain DOM + fetch + WebSocket, no framework, nothing
 * fetched but the bridge's own API (docs/api.md) on this origin.
 *
 * Contract (docs/workstation.md lists the element ids tests drive):
 * - Session: POST /api/v1/login gives {token, expires_at, user}; kept in sessionStorage
 *   (this tab only, gone with it), refreshed over POST /api/v1/refresh before it expires.
 *   A 401 anywhere ends the session and shows the login form again.
 * - Rules: GET /api/v1/me/rules fills the form; Save PUTs the form's portion with the
 *   version last read. A 422's `field` (rules[1].target, vip[0], rules[0].when.time) is
 *   the `data-field` of the input it names (or of the nearest enclosing one): its reason
 *   is shown next to it (role=alert, aria-describedby, aria-invalid). A 409 asks for a
 *   reload. Nothing here validates what the server validates.
 * - Bindings: GET/PUT /api/v1/me/bindings. Calls: GET /api/v1/me/calls, grouped by
 *   uniqueid, each decision with its outcome, rule and why.
 * - Live calls: WebSocket /api/v1/ws (docs/workstation.md, the pop protocol): the first
 *   frame authenticates; pops are listed with choice buttons; gone/accepted/refused
 *   update the entry. Reconnects with exponential backoff; the heartbeat is the server's.
 * Every string from the server is written with textContent, never parsed as HTML.
 */
"use strict";

(() => {
  const API = "/api/v1";
  const SESSION_KEY = "ami-bridge.session";
  const REFRESH_MARGIN_S = 60;   // refresh a token at least this long before it expires
  const REFRESH_SHARE = 0.8;     // ... or once 80 % of its remaining life has passed
  const MIN_REFRESH_S = 5;
  const REFRESH_RETRY_S = 10;    // after a failed refresh that was not a 401
  const BACKOFF_MIN_MS = 1000;   // WebSocket reconnect: 1 s, doubling, up to 30 s
  const BACKOFF_MAX_MS = 30000;
  const HISTORY_LIMIT = 50;      // decisions asked for (GET /me/calls?limit=)
  const MAX_FINISHED_POPS = 20;  // gone / answered pops kept on screen
  const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
  const CHOICE_LABELS = {take: "Take here", voicemail: "Voicemail", forward: "Forward",
                         reject: "Reject"};
  const GONE_TEXT = {timeout: "timed out", abandoned: "caller hung up"};

  const state = {
    session: null,      // {token, expires_at, user}
    version: 0,         // the portion's version last read
    refreshTimer: 0,
    ws: null,
    wsWanted: false,
    wsTimer: 0,
    backoff: BACKOFF_MIN_MS,
    pops: new Map(),    // call_id -> {call, element, state}
    tick: 0,
    errorSerial: 0,
    serial: 0,          // ids of pop entries
  };

  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

  function el(tag, attrs = {}, text = "") {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text) node.textContent = text;
    return node;
  }

  function show(node, visible) { node.hidden = !visible; }

  function say(node, text) {
    node.textContent = text;
    if ("hidden" in node && node.classList.contains("error")) show(node, Boolean(text));
  }

  // -- session -------------------------------------------------------------------------
  function nowS() { return Date.now() / 1000; }

  function loadSession() {
    try {
      const raw = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
      if (raw && typeof raw.token === "string" && typeof raw.expires_at === "number" &&
          raw.user && raw.expires_at > nowS()) return raw;
    } catch (err) { /* a damaged entry: log in again */ }
    return null;
  }

  function keepSession(session) {
    state.session = session;
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    scheduleRefresh();
  }

  function dropSession() {
    state.session = null;
    sessionStorage.removeItem(SESSION_KEY);
    clearTimeout(state.refreshTimer);
  }

  function scheduleRefresh() {
    clearTimeout(state.refreshTimer);
    if (!state.session) return;
    const left = state.session.expires_at - nowS();
    const wait = Math.max(MIN_REFRESH_S, Math.min(left - REFRESH_MARGIN_S, left * REFRESH_SHARE));
    state.refreshTimer = setTimeout(refresh, wait * 1000);
  }

  async function refresh() {
    if (!state.session) return false;
    const answer = await api("POST", "/refresh");
    if (answer.status === 200 && answer.body && answer.body.token) {
      keepSession(answer.body);
      return true;
    }
    if (state.session && answer.status !== 401) {  // the bridge unreachable: try again
      clearTimeout(state.refreshTimer);
      state.refreshTimer = setTimeout(refresh, REFRESH_RETRY_S * 1000);
    }
    return false;
  }

  async function api(method, path, body) {
    const headers = {Accept: "application/json"};
    if (state.session) headers.Authorization = "Bearer " + state.session.token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(API + path, {
        method, headers, cache: "no-store", credentials: "omit",
        body: body === undefined ? undefined : JSON.stringify(body)});
    } catch (err) {
      return {status: 0, body: {error: {field: "", reason: "the bridge cannot be reached"}}};
    }
    let data = null;
    if (response.status !== 204) {
      try { data = await response.json(); } catch (err) { data = null; }
    }
    if (response.status === 401 && state.session && path !== "/login") {
      ended("Your session has ended: log in again.");
    }
    return {status: response.status, body: data};
  }

  function problem(answer) {
    const error = answer.body && answer.body.error;
    if (error && typeof error === "object") {
      return {field: String(error.field || ""), reason: String(error.reason || ""),
              current: error.current};
    }
    return {field: "", reason: answer.status ? `HTTP ${answer.status}` : "no answer"};
  }

  // -- log in and out -------------------------------------------------------------------
  async function login(event) {
    event.preventDefault();
    const error = $("#login-error");
    say(error, "");
    const body = {tenant: $("#login-tenant").value.trim(), user: $("#login-user").value.trim(),
                  password: $("#login-password").value};
    $("#login-submit").disabled = true;
    const answer = await api("POST", "/login", body);
    $("#login-submit").disabled = false;
    if (answer.status === 200 && answer.body && answer.body.token) {
      $("#login-password").value = "";
      keepSession(answer.body);
      start();
      return;
    }
    const why = problem(answer);
    say(error, answer.status === 401 ? "Unknown user or wrong password." : why.reason);
    $("#login-password").focus();
  }

  async function logout() {
    if (state.session) await api("POST", "/logout");
    ended("");
  }

  function ended(message) {
    dropSession();
    stopLive();
    show($("#app"), false);
    show($("#whoami"), false);
    show($("#login-section"), true);
    say($("#login-error"), message);
    $("#login-tenant").focus();
  }

  function start() {
    const user = state.session.user;
    $("#whoami-name").textContent =
      `${user.display_name || user.user_id} (${user.user_id}@${user.tenant}, ${user.number})`;
    show($("#login-section"), false);
    show($("#whoami"), true);
    show($("#app"), true);
    $("#main").focus();
    loadRules();
    loadBindings();
    loadHistory();
    startLive();
  }

  // -- field errors ---------------------------------------------------------------------
  function parentField(path) {
    const up = path.replace(/(\[\d+\]|\.[^.[\]]+)$/, "");
    return up === path ? "" : up;
  }

  function visible(node) { return node.getClientRects().length > 0; }

  function clearErrors(root) {
    for (const node of $$(".field-error", root)) node.remove();
    for (const node of $$("[aria-invalid]", root)) {
      node.removeAttribute("aria-invalid");
      const base = node.dataset.describedby || "";
      if (base) node.setAttribute("aria-describedby", base);
      else node.removeAttribute("aria-describedby");
    }
  }

  /* Show `reason` next to the control whose data-field is `field` (or the nearest
   * enclosing field shown); false when nothing in `root` names it. */
  function fieldError(root, field, reason) {
    let node = null;
    for (let path = field; path && !node; path = parentField(path)) {
      const found = $(`[data-field="${CSS.escape(path)}"]`, root);
      if (found && visible(found)) node = found;
    }
    if (!node) return false;
    const control = node.matches("input, select, textarea") ? node
      : $$("input, select, textarea", node).find(visible);
    const message = el("p", {class: "field-error", role: "alert",
                             id: `field-error-${++state.errorSerial}`}, reason);
    if (node !== control) {  // a group (days, a rule, a list): under its legend
      const legend = $(":scope > legend", node);
      if (legend) legend.after(message); else node.prepend(message);
    } else {
      const anchor = control.closest(".field, li.item");
      if (anchor) anchor.append(message); else control.after(message);
    }
    if (control) {
      if (!control.hasAttribute("data-describedby")) {
        control.dataset.describedby = control.getAttribute("aria-describedby") || "";
      }
      control.setAttribute("aria-invalid", "true");
      control.setAttribute("aria-describedby",
                           `${control.dataset.describedby} ${message.id}`.trim());
      control.focus();
    }
    message.scrollIntoView({block: "center"});
    return true;
  }

  function clearOwnError(event) {
    const control = event.target;
    if (!control.matches || !control.matches("[aria-invalid]")) return;
    for (const id of (control.getAttribute("aria-describedby") || "").split(" ")) {
      const node = id && document.getElementById(id);
      if (node && node.classList.contains("field-error")) node.remove();
    }
    control.removeAttribute("aria-invalid");
    const base = control.dataset.describedby || "";
    if (base) control.setAttribute("aria-describedby", base);
    else control.removeAttribute("aria-describedby");
  }

  // -- rules form -----------------------------------------------------------------------
  function ruleItems() { return $$("#rules-list > li.rule"); }

  function setValue(root, name, value) {
    const control = $(`[name="${name}"]`, root);
    if (control && value !== undefined && value !== null) control.value = String(value);
  }

  function addRule(rule = {action: "forward", on: "always"}) {
    const item = $("#rule-template").content.firstElementChild.cloneNode(true);
    setValue(item, "name", rule.name || "");
    setValue(item, "action", rule.action || "ring");
    for (const key of ["target", "on", "after", "ring", "mode", "then", "cause", "timeout",
                       "group"]) {
      setValue(item, key, rule[key]);
    }
    for (const step of rule.steps || []) addStep(item, step);
    const when = rule.when || {};
    for (const box of $$("input[name=days]", item)) {
      box.checked = (when.days || []).includes(box.value);
    }
    setValue(item, "time", when.time || "");
    setValue(item, "holiday", when.holiday === undefined ? "" : String(when.holiday));
    setValue(item, "callers", (when.callers || []).join(" "));
    $("#rules-list").append(item);
    return item;
  }

  function addStep(item, step = {}) {
    const node = $("#step-template").content.firstElementChild.cloneNode(true);
    setValue(node, "target", step.target || "");
    setValue(node, "ring", step.ring === undefined ? "" : step.ring);
    $(".steps", item).append(node);
    return node;
  }

  function ruleControls(item) {
    // The rule's own controls (not its follow-me steps', which are numbered apart).
    return $$("[name]", item).filter((c) => !c.closest(".step"));
  }

  function label(root, name, control) {
    // The rule's own label of that name, not a follow-me step's (steps have their own).
    const node = $$(`label[data-for="${name}"]`, root)
      .find((l) => root.matches("li.step") || !l.closest(".step"));
    if (node) node.htmlFor = control.id;
  }

  /* Numbers, ids, labels and data-field paths follow the rules' order in the list. */
  function renumber() {
    const items = ruleItems();
    items.forEach((item, i) => {
      const prefix = `rules[${i}]`;
      item.dataset.ruleIndex = String(i);
      $("fieldset", item).dataset.field = prefix;
      const name = $("[name=name]", item).value.trim();
      $(".rule-title", item).textContent = `Rule ${i + 1}${name ? ": " + name : ""}`;
      for (const control of ruleControls(item)) {
        const key = control.name;
        const inWhen = Boolean(control.closest("fieldset.when"));
        if (key === "days") {
          control.id = `rule-${i}-days-${control.value}`;
          continue;
        }
        control.id = `rule-${i}-${key}`;
        control.dataset.field = `${prefix}.${inWhen ? "when." : ""}${key}`;
        label(item, key, control);
      }
      $("fieldset.days", item).dataset.field = `${prefix}.when.days`;
      $("fieldset.when", item).dataset.field = `${prefix}.when`;
      $$(".steps > li.step", item).forEach((step, j) => {
        step.dataset.stepIndex = String(j);
        step.dataset.field = `${prefix}.steps[${j}]`;
        for (const control of $$("[name]", step)) {
          control.id = `rule-${i}-step-${j}-${control.name}`;
          control.dataset.field = `${prefix}.steps[${j}].${control.name}`;
          label(step, control.name, control);
        }
        $("label[data-for=target]", step).textContent = `Step ${j + 1} target`;
        $("[data-remove-step]", step).setAttribute("aria-label",
                                                    `Remove step ${j + 1} of rule ${i + 1}`);
      });
      $(".steps", item).dataset.field = `${prefix}.steps`;
      const up = $("[data-move=up]", item);
      const down = $("[data-move=down]", item);
      up.setAttribute("aria-label", `Move rule ${i + 1} up`);
      down.setAttribute("aria-label", `Move rule ${i + 1} down`);
      up.disabled = i === 0;
      down.disabled = i === items.length - 1;
      $("[data-remove-rule]", item).setAttribute("aria-label", `Remove rule ${i + 1}`);
      showActionFields(item);
    });
  }

  function showActionFields(item) {
    const action = $("[name=action]", item).value;
    const on = $("[name=on]", item).value;
    for (const node of $$("[data-for-action]", item)) {
      show(node, node.dataset.forAction === action);
    }
    for (const node of $$("[data-for-on]", item)) show(node, node.dataset.forOn === on);
    if (action === "follow_me" && !$(".steps > li", item)) {
      addStep(item);
      renumber();
    }
  }

  function numberOf(item, name, into, key = name) {
    const raw = $(`[name="${name}"]`, item).value.trim();
    if (raw === "") return;
    into[key] = /^\d+$/.test(raw) ? Number(raw) : raw;  // the server names a bad one
  }

  function words(text) { return text.split(/[\s,]+/).filter(Boolean); }

  function ruleOf(item) {
    const rule = {};
    const name = $("[name=name]", item).value.trim();
    if (name) rule.name = name;
    const action = $("[name=action]", item).value;
    rule.action = action;
    if (action === "ring") numberOf(item, "ring", rule);
    if (action === "forward") {
      rule.target = $("[name=target]", item).value.trim();
      rule.on = $("[name=on]", item).value;
      if (rule.on === "no_answer") numberOf(item, "after", rule);
    }
    if (action === "follow_me") {
      rule.mode = $("[name=mode]", item).value;
      rule.steps = $$(".steps > li.step", item).map((step) => {
        const one = {target: $("[name=target]", step).value.trim()};
        numberOf(step, "ring", one);
        return one;
      });
    }
    if (action === "dnd") rule.then = $("[name=then]", item).value;
    if (action === "reject") rule.cause = $("[name=cause]", item).value;
    if (action === "ask") {
      numberOf(item, "timeout", rule);
      const group = $("[name=group]", item).value.trim();
      if (group) rule.group = group;
    }
    const when = {};
    const days = $$("input[name=days]", item).filter((b) => b.checked).map((b) => b.value);
    if (days.length) when.days = days;
    const time = $("[name=time]", item).value.trim();
    if (time) when.time = time;
    const holiday = $("[name=holiday]", item).value;
    if (holiday) when.holiday = holiday === "true";
    const callers = words($("[name=callers]", item).value);
    if (callers.length) when.callers = callers;
    rule.when = when;
    return rule;
  }

  function listItems(key) { return $$(`#list-${key} .items > li`); }

  function addListItem(key, value = "") {
    const item = el("li", {class: "item"});
    const text = el("label", {class: "visually-hidden"});
    const input = el("input", {name: "item", spellcheck: "false"});
    input.value = value;
    item.append(text, input, el("button", {type: "button", "data-remove-item": key}, "Remove"));
    $(`#list-${key} .items`).append(item);
    renumberList(key);
    return input;
  }

  function renumberList(key) {
    const heading = $(`#list-${key}-heading`).textContent;
    listItems(key).forEach((item, j) => {
      const input = $("input", item);
      const text = $("label", item);
      item.dataset.itemIndex = String(j);
      input.id = `list-${key}-${j}`;
      input.dataset.field = `${key}[${j}]`;
      text.htmlFor = input.id;
      text.textContent = `${heading}, entry ${j + 1}`;
      $("button", item).setAttribute("aria-label", `Remove ${heading.toLowerCase()} entry ${j + 1}`);
    });
    $(`#list-${key}`).dataset.field = key;
  }

  function listOf(key) {
    return listItems(key).map((item) => $("input", item).value.trim()).filter(Boolean);
  }

  function fillSaved(saved) {
    const list = $("#saved-targets");
    list.replaceChildren(...saved.map((target) => el("option", {value: target})));
  }

  function renderRules(portion) {
    clearErrors($("#rules-form"));
    state.version = Number(portion.version) || 0;
    $("#rules-version").textContent = String(state.version);
    $("#rules-list").replaceChildren();
    for (const rule of portion.rules || []) addRule(rule);
    renumber();
    for (const key of ["vip", "blocked", "saved"]) {
      $(`#list-${key} .items`).replaceChildren();
      for (const value of portion[key] || []) addListItem(key, value);
      renumberList(key);
    }
    fillSaved(portion.saved || []);
  }

  async function loadRules() {
    say($("#rules-error"), "");
    const answer = await api("GET", "/me/rules");
    if (answer.status !== 200) {
      if (state.session) say($("#rules-error"), problem(answer).reason);
      return;
    }
    renderRules(answer.body);
    $("#rules-status").textContent = `Loaded version ${state.version}.`;
  }

  async function saveRules(event) {
    event.preventDefault();
    const form = $("#rules-form");
    clearErrors(form);
    say($("#rules-error"), "");
    $("#rules-status").textContent = "Saving…";
    const body = {version: state.version, rules: ruleItems().map(ruleOf),
                  vip: listOf("vip"), blocked: listOf("blocked"), saved: listOf("saved")};
    $("#rules-save").disabled = true;
    const answer = await api("PUT", "/me/rules", body);
    $("#rules-save").disabled = false;
    $("#rules-status").textContent = "";
    if (answer.status === 200) {
      renderRules(answer.body);
      $("#rules-status").textContent = `Saved: version ${state.version}.`;
      return;
    }
    const why = problem(answer);
    if (answer.status === 409) {
      const current = why.current === undefined ? "" : ` (now version ${why.current})`;
      say($("#rules-error"), `These rules were changed elsewhere: reload them${current}; ` +
          "your edits here are not saved.");
      $("#rules-reload").focus();
    } else if (answer.status === 422 && fieldError(form, why.field, why.reason)) {
      $("#rules-status").textContent = "Not saved: see the marked field.";
    } else if (state.session) {
      say($("#rules-error"), why.field ? `${why.field}: ${why.reason}` : why.reason);
    }
  }

  function onRulesClick(event) {
    const button = event.target.closest("button");
    if (!button) return;
    const item = button.closest("li.rule");
    if (button.id === "rule-add") {
      const added = addRule();
      renumber();
      $("[name=name]", added).focus();
    } else if (button.dataset.addItem) {
      addListItem(button.dataset.addItem).focus();
    } else if (button.dataset.removeItem) {
      const key = button.dataset.removeItem;
      const entry = button.closest("li");
      const next = entry.nextElementSibling || entry.previousElementSibling;
      entry.remove();
      renumberList(key);
      (next ? $("input", next) : $(`[data-add-item="${key}"]`)).focus();
    } else if (item && button.dataset.move) {
      const other = button.dataset.move === "up" ? item.previousElementSibling
        : item.nextElementSibling;
      if (!other) return;
      if (button.dataset.move === "up") other.before(item); else other.after(item);
      clearErrors($("#rules-form"));
      renumber();
      const again = $(`[data-move="${button.dataset.move}"]`, item);
      (again.disabled ? $("[data-move]:not([disabled])", item) : again).focus();
    } else if (item && button.hasAttribute("data-remove-rule")) {
      const next = item.nextElementSibling || item.previousElementSibling;
      item.remove();
      clearErrors($("#rules-form"));
      renumber();
      (next ? $("[name=name]", next) : $("#rule-add")).focus();
    } else if (item && button.hasAttribute("data-add-step")) {
      const step = addStep(item);
      renumber();
      $("[name=target]", step).focus();
    } else if (item && button.hasAttribute("data-remove-step")) {
      button.closest("li.step").remove();
      renumber();
      $("[data-add-step]", item).focus();
    }
  }

  function onRulesChange(event) {
    const item = event.target.closest("li.rule");
    if (!item) return;
    if (event.target.name === "action" || event.target.name === "on") showActionFields(item);
    if (event.target.name === "name") renumber();
  }

  // -- bindings -------------------------------------------------------------------------
  function renderBindings(extensions) {
    $("#bindings-current").textContent = extensions.length ? extensions.join(", ") : "none";
    $("#bindings-input").value = extensions.join(" ");
  }

  async function loadBindings() {
    const answer = await api("GET", "/me/bindings");
    if (answer.status === 200) renderBindings(answer.body.extensions || []);
    else if (state.session) $("#bindings-status").textContent = problem(answer).reason;
  }

  async function saveBindings(event) {
    event.preventDefault();
    const form = $("#bindings-form");
    clearErrors(form);
    const answer = await api("PUT", "/me/bindings",
                             {extensions: words($("#bindings-input").value)});
    if (answer.status === 200) {
      renderBindings(answer.body.extensions || []);
      $("#bindings-status").textContent = "Saved.";
      return;
    }
    const why = problem(answer);
    $("#bindings-status").textContent = "";
    if (!(answer.status === 422 && fieldError(form, why.field, why.reason)) && state.session) {
      $("#bindings-status").textContent = why.reason;
    }
  }

  // -- my last calls --------------------------------------------------------------------
  function when(at) {
    const date = new Date(at * 1000);
    return Number.isNaN(date.getTime()) ? "" : date.toLocaleString();
  }

  function renderHistory(decisions) {
    const groups = new Map();
    for (const decision of decisions) {
      if (!groups.has(decision.uniqueid)) groups.set(decision.uniqueid, []);
      groups.get(decision.uniqueid).push(decision);
    }
    const items = [];
    for (const [uniqueid, list] of groups) {
      list.sort((a, b) => (a.request - b.request) || (a.at - b.at));
      const first = list[0];
      const call = first.call || {};
      const caller = call.ani_name ? `${call.ani_name} (${call.ani || "withheld"})`
        : (call.ani || "withheld");
      const item = el("li", {class: "call", "data-uniqueid": uniqueid});
      item.append(el("h3", {}, `${when(first.at)}: ${caller} to ${call.number || call.dnis || ""}`));
      const steps = el("ol", {class: "decisions"});
      for (const decision of list) {
        const step = el("li", {class: "decision", "data-request": String(decision.request),
                               "data-outcome": decision.outcome || ""});
        const head = el("p");
        head.append(el("span", {class: "outcome"}, decision.outcome || "?"),
                    document.createTextNode(" by "),
                    el("span", {class: "trace-rule"}, decision.rule || "?"));
        if (decision.previous) {
          head.append(el("span", {class: "previous muted"}, ` after ${decision.previous}`));
        }
        step.append(head);
        if (decision.why) step.append(el("p", {class: "why"}, decision.why));
        steps.append(step);
      }
      item.append(steps);
      items.push(item);
    }
    $("#history").replaceChildren(...items);
    $("#history-status").textContent = items.length
      ? `${items.length} call${items.length === 1 ? "" : "s"}.` : "No calls yet.";
  }

  async function loadHistory() {
    $("#history-status").textContent = "Loading…";
    const answer = await api("GET", `/me/calls?limit=${HISTORY_LIMIT}`);
    if (answer.status === 200) renderHistory(answer.body.calls || []);
    else if (state.session) $("#history-status").textContent = problem(answer).reason;
  }

  // -- live calls (WebSocket) -------------------------------------------------------------
  function wsStatus(text) { $("#ws-status").textContent = text; }

  function startLive() {
    state.wsWanted = true;
    state.backoff = BACKOFF_MIN_MS;
    connect();
    clearInterval(state.tick);
    state.tick = setInterval(countdown, 1000);
  }

  function stopLive() {
    state.wsWanted = false;
    clearTimeout(state.wsTimer);
    clearInterval(state.tick);
    const ws = state.ws;
    state.ws = null;
    if (ws) ws.close(1000, "logged out");
    state.pops.clear();
    $("#calls").replaceChildren();
    updateEmpty();
    wsStatus("not connected");
  }

  function connect() {
    clearTimeout(state.wsTimer);
    if (!state.wsWanted || !state.session || state.ws) return;
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    let ws;
    try {
      ws = new WebSocket(`${scheme}${location.host}${API}/ws`);
    } catch (err) {
      reconnectLater();
      return;
    }
    state.ws = ws;
    wsStatus("connecting…");
    // Tokens never go in URLs (they would be logged): the first frame authenticates.
    ws.addEventListener("open", () => {
      if (state.session) ws.send(JSON.stringify({type: "auth", token: state.session.token}));
    });
    ws.addEventListener("message", (event) => {
      let frame = null;
      try { frame = JSON.parse(event.data); } catch (err) { return; }
      if (frame && typeof frame === "object") onFrame(frame);
    });
    ws.addEventListener("close", async (event) => {
      if (state.ws !== ws) return;
      state.ws = null;
      if (!state.wsWanted) return;
      if (event.code === 4401) {  // refused the token: a refreshed one may do
        wsStatus("not authenticated: refreshing the session…");
        if (!(await refresh())) return;
      }
      reconnectLater();
    });
  }

  function reconnectLater() {
    if (!state.wsWanted) return;
    const delay = state.backoff * (0.75 + Math.random() / 2);  // jitter: not all at once
    state.backoff = Math.min(state.backoff * 2, BACKOFF_MAX_MS);
    wsStatus(`disconnected: reconnecting in ${Math.round(delay / 1000)} s`);
    clearTimeout(state.wsTimer);
    state.wsTimer = setTimeout(connect, delay);
  }

  function onFrame(frame) {
    const call = typeof frame.call === "string" ? state.pops.get(frame.call) : undefined;
    switch (frame.type) {
      case "hello":
        state.backoff = BACKOFF_MIN_MS;
        wsStatus(`connected: calls for ${frame.user} are offered here`);
        break;
      case "pop":
        if (frame.call && typeof frame.call === "object") addPop(frame.call);
        break;
      case "gone":
        if (call) gone(call, String(frame.reason || ""), String(frame.by || ""));
        break;
      case "accepted":
        if (call && call.state !== "gone") {
          setPopState(call, "accepted", `done: ${CHOICE_LABELS[call.choice] || call.choice}`);
        }
        break;
      case "refused":
        if (call && call.state !== "gone") {
          setPopState(call, "waiting", `refused: ${frame.reason || "no reason given"}`);
        }
        break;
      case "error":
        wsStatus(`the server refused a message: ${frame.reason || ""}`);
        break;
      default:  // pong, and kinds this page does not know yet
        break;
    }
  }

  function callerText(call) {
    const number = call.ani || "withheld";
    return call.ani_name ? `${call.ani_name} (${number})` : number;
  }

  function addPop(call) {
    const id = String(call.call_id || "");
    if (!id) return;
    const old = state.pops.get(id);
    if (old) {  // offered again after a reconnect: still waiting
      if (old.state !== "gone") setPopState(old, "waiting", "");
      return;
    }
    const item = el("li", {class: "pop", "data-call-id": id, "data-state": "waiting"});
    const title = el("h3", {class: "pop-caller", id: `pop-${++state.serial}`},
                     callerText(call));
    const number = el("p", {class: "pop-number"},
                      `for ${call.number || ""}${call.user_id ? " (" + call.user_id + ")" : ""}` +
                      (call.group ? `, group ${call.group}` : ""));
    item.append(title, number);
    const lookup = call.lookup && typeof call.lookup === "object" ? call.lookup : {};
    if (Object.keys(lookup).length) {
      const list = el("dl", {class: "pop-lookup"});
      for (const [key, value] of Object.entries(lookup)) {
        list.append(el("dt", {}, key), el("dd", {}, String(value)));
      }
      item.append(list);
    }
    item.append(el("p", {class: "pop-countdown muted"}));
    const choices = Array.isArray(call.choices) ? call.choices : Object.keys(CHOICE_LABELS);
    const saved = Array.isArray(call.saved) ? call.saved : [];
    const actions = el("div", {class: "pop-actions", role: "group",
                               "aria-labelledby": title.id});
    for (const choice of ["take", "voicemail", "forward", "reject"]) {
      if (!choices.includes(choice)) continue;
      if (choice === "forward") {
        if (!saved.length) continue;
        const selectId = `${title.id}-target`;
        const pick = el("label", {for: selectId}, "Forward to");
        const select = el("select", {id: selectId, name: "target"});
        select.append(...saved.map((target) => el("option", {value: target}, target)));
        actions.append(pick, select);
      }
      actions.append(el("button", {type: "button", "data-choice": choice},
                        CHOICE_LABELS[choice]));
    }
    item.append(actions, el("p", {class: "pop-status", role: "status"}));
    const entry = {call, element: item, state: "waiting", choice: ""};
    state.pops.set(id, entry);
    $("#calls").prepend(item);
    updateEmpty();
    countdown();
    $("#live-announce").textContent = `Call from ${callerText(call)} for ${call.number || ""}`;
  }

  function setPopState(entry, name, text) {
    entry.state = name;
    entry.element.dataset.state = name;
    $(".pop-status", entry.element).textContent = text;
    const open = name === "waiting";
    for (const control of $$(".pop-actions button, .pop-actions select", entry.element)) {
      control.disabled = !open;
    }
  }

  function gone(entry, reason, by) {
    const me = state.session ? state.session.user.user_id : "";
    const text = reason === "taken" ? `taken by ${by === me ? "you" : by || "someone"}`
      : GONE_TEXT[reason] || `gone (${reason})`;
    entry.element.dataset.reason = reason;
    setPopState(entry, "gone", text);
    show($(".pop-actions", entry.element), false);
    $(".pop-countdown", entry.element).textContent = "";
    $("#live-announce").textContent = `Call from ${callerText(entry.call)}: ${text}`;
    prunePops();
  }

  function prunePops() {
    const finished = [...state.pops.entries()].filter(([, e]) => e.state === "gone");
    for (const [id, entry] of finished.slice(0, Math.max(0, finished.length - MAX_FINISHED_POPS))) {
      entry.element.remove();
      state.pops.delete(id);
    }
    updateEmpty();
  }

  function countdown() {
    for (const entry of state.pops.values()) {
      if (entry.state === "gone" || entry.state === "accepted") continue;
      const left = Math.round(Number(entry.call.expires_at) - nowS());
      $(".pop-countdown", entry.element).textContent =
        left > 0 ? `${left} s left to answer` : "time is up";
    }
  }

  function updateEmpty() {
    show($("#calls-empty"), ![...state.pops.values()].some((e) => e.state !== "gone"));
  }

  function onPopClick(event) {
    const button = event.target.closest("button[data-choice]");
    if (!button) return;
    const item = button.closest("li.pop");
    const entry = state.pops.get(item.dataset.callId);
    if (!entry || entry.state !== "waiting") return;
    const choice = button.dataset.choice;
    const select = $("select[name=target]", item);
    const target = choice === "forward" && select ? select.value : "";
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
      $(".pop-status", item).textContent = "not connected: try again once reconnected";
      return;
    }
    state.ws.send(JSON.stringify({type: "choose", call: entry.call.call_id, choice, target}));
    entry.choice = choice;
    setPopState(entry, "choosing", `${CHOICE_LABELS[choice]}: sent…`);
  }

  // -- wiring ---------------------------------------------------------------------------
  function init() {
    $("#login-form").addEventListener("submit", login);
    $("#logout").addEventListener("click", logout);
    const rules = $("#rules-form");
    rules.addEventListener("submit", saveRules);
    rules.addEventListener("click", onRulesClick);
    rules.addEventListener("change", onRulesChange);
    rules.addEventListener("input", clearOwnError);
    $("#rules-reload").addEventListener("click", loadRules);
    $("#bindings-form").addEventListener("submit", saveBindings);
    $("#bindings-form").addEventListener("input", clearOwnError);
    $("#history-reload").addEventListener("click", loadHistory);
    $("#calls").addEventListener("click", onPopClick);
    window.addEventListener("online", () => { if (state.wsWanted && !state.ws) connect(); });
    $("#bindings-input").dataset.field = "extensions";
    const session = loadSession();
    if (session) {
      state.session = session;
      scheduleRefresh();
      start();
    } else {
      show($("#login-section"), true);
    }
  }

  init();
})();

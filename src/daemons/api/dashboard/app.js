// Cortex dashboard: hand-written, no dependencies, no build step. Everything shown comes from
// the API's JSON endpoints, and every value goes into the page as text (textContent,
// createTextNode, attributes set with setAttribute on names this file chooses): never innerHTML.
// Live updates arrive on the Server-Sent Events stream (GET /events/stream); each event names
// what changed and the page re-reads just that.

'use strict';

// ---------------------------------------------------------------------------------------------
// Elements, built from text only.

/** An element: `h('td', {class: 'num'}, 'text', child, [more])`. Strings become text nodes. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

const SVG_NS = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
  return el;
}

/** Control characters (terminal escapes) made visible in caret notation, as `cat -v` shows
 *  them: ESC is `^[`, BEL `^G`, DEL `^?`. Newlines and tabs stay. */
function visible(text) {
  return String(text ?? '').replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, (c) =>
    c === '\u007f' ? '^?' : '^' + String.fromCharCode(0x40 + c.charCodeAt(0)));
}

/** A text node of a value, with control characters made visible; `—` for none. */
function text(v) {
  if (v === undefined || v === null || v === '') return '—';
  return visible(v);
}

function stateBadge(state, extraClass) {
  const st = String(state ?? 'unknown');
  const cls = 'state state-' + st.toLowerCase().replace(/[^a-z_]/g, '_');
  return h('span', {class: extraClass ? cls + ' ' + extraClass : cls}, visible(st));
}

function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

function fmtNum(n) {
  if (n === undefined || n === null) return '—';
  return Number(n).toLocaleString('en-US');
}

function fmtDuration(seconds) {
  if (seconds === undefined || seconds === null || Number.isNaN(Number(seconds))) return '—';
  let t = Math.max(0, Math.round(Number(seconds)));
  const d = Math.floor(t / 86400); t -= d * 86400;
  const hr = Math.floor(t / 3600); t -= hr * 3600;
  const m = Math.floor(t / 60); const sec = t - m * 60;
  if (d) return `${d}d ${hr}h`;
  if (hr) return `${hr}h ${m}m`;
  if (m) return `${m}m ${sec}s`;
  return `${sec}s`;
}

function fmtBytes(n) {
  if (n === undefined || n === null) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = Number(n); let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function fmtTime(ts) {
  if (!ts) return '—';
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return visible(ts);
  const ago = (Date.now() - d.getTime()) / 1000;
  const local = d.toLocaleString(undefined, {hour12: false});
  if (Math.abs(ago) < 86400 * 2) return `${local} (${ago >= 0 ? fmtDuration(ago) + ' ago' : 'in ' + fmtDuration(-ago)})`;
  return local;
}

function timeEl(ts) {
  if (!ts) return document.createTextNode('—');
  return h('time', {datetime: String(ts), title: String(ts)}, fmtTime(ts));
}

function link(href, ...children) {
  return h('a', {href}, ...children);
}

function taskLink(id) {
  return link('#/task/' + encodeURIComponent(id), h('span', {class: 'mono'}, visible(id)));
}

function fields(pairs) {
  const dl = h('dl', {class: 'fields'});
  for (const [k, v] of pairs) {
    if (v === undefined) continue;
    dl.appendChild(h('dt', null, k));
    dl.appendChild(h('dd', null, v instanceof Node ? v : text(v)));
  }
  return dl;
}

function table(headers, rows, opts = {}) {
  const thead = h('thead', null, h('tr', null, headers.map((c) =>
    h('th', {class: [c.num && 'num', c.narrow && 'hide-narrow'].filter(Boolean).join(' ') || null, scope: 'col'}, c.label ?? c))));
  const tbody = h('tbody', null, rows);
  if (!rows.length) tbody.appendChild(h('tr', null, h('td', {colspan: headers.length, class: 'muted'}, opts.empty || 'None.')));
  return h('div', {class: 'table-wrap'}, h('table', {id: opts.id}, opts.caption ? h('caption', {class: 'muted'}, opts.caption) : null, thead, tbody));
}

// ---------------------------------------------------------------------------------------------
// The API: token, cross-site header, errors.

const TOKEN_KEY = 'cortex-api-token';
/** Sent on every request: a cross-site form or text/plain post cannot set a custom header, and
 *  the API refuses a browser's change without it. */
const CSRF_HEADER = 'X-Cortex-Request';

let memoryToken = '';
let tokenPrompt = null;

/** The token this tab was given (sessionStorage: gone when the tab closes). */
function currentToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || memoryToken; } catch { return memoryToken; }
}

function forgetToken() {
  memoryToken = '';
  try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* storage unavailable */ }
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/** Asks for a token once (one dialog for every request waiting on it); resolves when one is set. */
function askToken(message) {
  if (tokenPrompt) return tokenPrompt;
  const dialog = document.getElementById('token-dialog');
  const form = document.getElementById('token-form');
  const input = document.getElementById('token-input');
  const err = document.getElementById('token-error');
  const cancel = document.getElementById('token-cancel');
  err.hidden = !message;
  err.textContent = message || '';
  input.value = '';
  tokenPrompt = new Promise((resolve, reject) => {
    const done = (ok) => {
      form.removeEventListener('submit', onSubmit);
      cancel.removeEventListener('click', onCancel);
      dialog.removeEventListener('cancel', onCancel);
      if (dialog.open) dialog.close();
      tokenPrompt = null;
      if (ok) resolve(); else reject(new ApiError(-1, 'this API needs a token ([api] tokens_file): reload the page to enter one'));
    };
    const onSubmit = (e) => {
      e.preventDefault();
      const t = input.value.trim();
      if (!t) return;
      memoryToken = t;
      try { sessionStorage.setItem(TOKEN_KEY, t); } catch { /* kept for this page only */ }
      done(true);
      live.restart();
    };
    const onCancel = (e) => { e.preventDefault(); done(false); };
    form.addEventListener('submit', onSubmit);
    cancel.addEventListener('click', onCancel);
    dialog.addEventListener('cancel', onCancel);
    dialog.showModal();
    input.focus();
  });
  return tokenPrompt;
}

function authHeaders(extra) {
  const headers = Object.assign({[CSRF_HEADER]: '1'}, extra || {});
  const t = currentToken();
  if (t) headers['Authorization'] = 'Bearer ' + t;
  return headers;
}

/** One JSON request; a 401 asks for a token and tries again. */
async function api(method, path, body) {
  for (let attempt = 0; ; attempt++) {
    const sent = currentToken();
    const headers = authHeaders({'Accept': 'application/json'});
    const init = {method, headers, credentials: 'omit', cache: 'no-store'};
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, `cannot reach the API for ${method} ${path} (${e.message}); is cortex-api running?`);
    }
    const ctype = res.headers.get('Content-Type') || '';
    const data = ctype.includes('json') ? await res.json().catch(() => null) : await res.text();
    if (res.status === 401 && attempt < 3) {
      if (sent) forgetToken();
      await askToken(sent ? 'That token was refused: enter another.' : '');
      continue;
    }
    // /health answers 503 with its body when unhealthy: that is data, not a failure.
    if (!res.ok && !(res.status === 503 && data && typeof data === 'object' && 'healthy' in data)) {
      const msg = (data && typeof data === 'object' && (data.error || data.message)) || (typeof data === 'string' && data) || res.statusText;
      throw new ApiError(res.status, `${method} ${path}: ${res.status} ${msg}`);
    }
    return data;
  }
}

const get = (path) => api('GET', path);
const post = (path, body) => api('POST', path, body ?? {});
const enc = encodeURIComponent;

// ---------------------------------------------------------------------------------------------
// Server-Sent Events: EventSource, or a fetch() reader when a token must be sent.

/**
 * One event stream. Without a token it is an EventSource (which resends `Last-Event-ID` on its
 * own reconnects); with a token, a fetch() reader that sends the token and `Last-Event-ID`
 * itself. `url()` is called on every (re)connection; `manual` streams (a log tail) always start
 * afresh from `url()` instead of resuming by id. Handlers: onopen(), onevent(kind, data), onerror().
 */
class Sse {
  constructor(url, kinds, handlers, manual) {
    this.url = url; this.kinds = kinds; this.h = handlers; this.manual = !!manual;
    this.lastId = ''; this.retry = 2000; this.closed = false; this.es = null; this.ctrl = null; this.timer = 0;
    this.open();
  }

  open() {
    if (this.closed) return;
    if (!currentToken()) this.openEventSource(); else this.openFetch();
  }

  openEventSource() {
    const es = new EventSource(this.url());
    this.es = es;
    es.onopen = () => { if (this.es === es) this.h.onopen?.(); };
    es.onerror = () => {
      if (this.es !== es) return;
      this.h.onerror?.();
      // The browser retries by itself while the state is CONNECTING; it gives up (CLOSED) on an
      // error status. A manual stream always starts again from its url().
      if (this.manual || es.readyState === EventSource.CLOSED) { es.close(); this.es = null; this.again(); }
    };
    const on = (kind) => (e) => {
      if (this.es !== es) return;
      if (e.lastEventId) this.lastId = e.lastEventId;
      this.deliver(kind, e.data);
    };
    es.onmessage = on('message');
    for (const kind of this.kinds) es.addEventListener(kind, on(kind));
  }

  async openFetch() {
    const ctrl = new AbortController();
    this.ctrl = ctrl;
    const headers = authHeaders({'Accept': 'text/event-stream'});
    if (this.lastId && !this.manual) headers['Last-Event-ID'] = this.lastId;
    try {
      const res = await fetch(this.url(), {headers, signal: ctrl.signal, cache: 'no-store', credentials: 'omit'});
      if (res.status === 401) {
        forgetToken();
        await askToken('That token was refused: enter another.').catch(() => undefined);
        if (!this.closed && this.ctrl === ctrl) { this.ctrl = null; this.open(); }
        return;
      }
      if (!res.ok || !res.body) throw new Error(`status ${res.status}`);
      this.h.onopen?.();
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = ''; let kind = ''; let data = []; let id = null;
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buf += value;
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          let line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.endsWith('\r')) line = line.slice(0, -1);
          if (line === '') {
            if (id !== null) this.lastId = id;
            if (data.length) this.deliver(kind || 'message', data.join('\n'));
            kind = ''; data = []; id = null;
            continue;
          }
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? '' : line.slice(colon + 1);
          if (val.startsWith(' ')) val = val.slice(1);
          if (field === 'event') kind = val;
          else if (field === 'data') data.push(val);
          else if (field === 'id') id = val;
          else if (field === 'retry' && /^\d+$/.test(val)) this.retry = Number(val);
        }
      }
    } catch (e) {
      if (ctrl.signal.aborted) return;
    }
    if (this.ctrl !== ctrl || this.closed) return;
    this.ctrl = null;
    this.h.onerror?.();
    this.again();
  }

  deliver(kind, raw) {
    let data = null;
    try { data = raw ? JSON.parse(raw) : null; } catch { data = raw; }
    this.h.onevent(kind, data);
  }

  again() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), this.retry);
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.es) { this.es.close(); this.es = null; }
    if (this.ctrl) { this.ctrl.abort(); this.ctrl = null; }
  }
}

// ---------------------------------------------------------------------------------------------
// The page's live connection, and its visible state.

const live = {
  stream: null,
  hellos: 0,
  listeners: new Set(),
  start() {
    this.stop();
    setConn('wait', this.hellos ? 'disconnected — reconnecting…' : 'connecting…');
    this.stream = new Sse(() => '/events/stream', ['hello', 'status', 'event', 'dispatches', 'schedules', 'daemons'], {
      onopen: () => setConn('live', 'live'),
      onerror: () => setConn('down', 'disconnected — reconnecting…'),
      onevent: (kind, data) => {
        if (kind === 'hello') {
          setConn('live', 'live');
          // Every connection after the first: re-read what the view shows (what changed while
          // the stream was down may not all be replayed, e.g. after the API restarted).
          if (this.hellos++ > 0) refreshView();
        }
        for (const fn of this.listeners) fn(kind, data);
      },
    });
  },
  restart() { this.start(); },
  stop() { if (this.stream) { this.stream.close(); this.stream = null; } },
};

function setConn(cls, label) {
  const el = document.getElementById('conn');
  el.className = 'conn conn-' + cls;
  el.textContent = label;
  el.setAttribute('data-state', cls);
  // What the page shows is the last known state while the stream is down: dimmed, and said so.
  document.body.classList.toggle('stale', cls === 'down');
  el.title = cls === 'down' ? 'The values shown are the last received; the page reconnects by itself.' : '';
}

// ---------------------------------------------------------------------------------------------
// Notices and actions.

let noticeTimer = 0;
function notice(message, ok) {
  const el = document.getElementById('notice');
  el.textContent = visible(message);
  el.className = ok ? 'notice ok' : 'notice';
  el.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { el.hidden = true; }, ok ? 4000 : 15000);
}

function report(e) {
  if (e && e.status === 401) return;
  notice(e && e.message ? e.message : String(e));
}

/** A button that runs `action` (disabled meanwhile), reports the outcome and re-reads the view. */
function actionButton(label, action, opts = {}) {
  const b = h('button', {type: 'button', class: opts.class, 'data-action': opts.name || label.toLowerCase(), title: opts.title});
  b.textContent = label;
  b.addEventListener('click', async () => {
    if (opts.confirm && !window.confirm(opts.confirm)) return;
    b.disabled = true;
    try {
      const out = await action();
      const msg = out && typeof out === 'object' && typeof out.message === 'string' ? out.message : `${label}: done`;
      notice(msg, true);
      refreshView();
    } catch (e) {
      report(e);
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

// ---------------------------------------------------------------------------------------------
// Re-rendering without losing the keyboard user's place: a live update rebuilds a panel, and
// the control that had focus is replaced; focus goes to its successor (same id, or same action
// in the same row).

const ROW_KEYS = ['data-task', 'data-dispatch', 'data-event', 'data-breaker', 'data-schedule', 'data-daemon'];
let lastFocus = null;

function focusKey(el) {
  if (!el || el === document.body || !el.closest('main')) return null;
  const row = el.closest(ROW_KEYS.map((k) => `[${k}]`).join(','));
  const rowKey = row ? ROW_KEYS.map((k) => [k, row.getAttribute(k)]).find(([, v]) => v !== null) : null;
  return {id: el.id || null, action: el.getAttribute('data-action'), tag: el.tagName.toLowerCase(), row: rowKey};
}

function findFocusKey(k) {
  if (k.id) return document.getElementById(k.id);
  const scope = k.row ? document.querySelector(`main [${k.row[0]}="${CSS.escape(k.row[1])}"]`) : document.querySelector('main');
  if (!scope) return null;
  return scope.querySelector(k.action ? `[data-action="${CSS.escape(k.action)}"]` : k.tag);
}

function keepFocus(main) {
  document.addEventListener('focusin', (e) => { lastFocus = focusKey(e.target); });
  document.addEventListener('focusout', (e) => {
    const t = e.target;
    // Still in the page: the user moved on (a removed element is not connected any more).
    queueMicrotask(() => { if (t.isConnected && document.activeElement === document.body) lastFocus = null; });
  });
  new MutationObserver(() => {
    if (!lastFocus || (document.activeElement && document.activeElement !== document.body)) return;
    const el = findFocusKey(lastFocus);
    if (el && el.isConnected) el.focus({preventScroll: true});
  }).observe(main, {childList: true, subtree: true});
}

/** False when `data` is what `holder` showed last (nothing to re-render); remembers it. */
function changed(holder, data) {
  const key = JSON.stringify(data);
  if (holder.__shown === key) return false;
  holder.__shown = key;
  return true;
}

/** Relative times ("4m ago") move on without asking the API anything. */
function tickTimes() {
  for (const t of document.querySelectorAll('main time[datetime]')) t.textContent = fmtTime(t.getAttribute('datetime'));
}

// ---------------------------------------------------------------------------------------------
// Router: #/ (overview), #/tasks?..., #/task/<id>, #/new, #/schedules, #/health.

let current = null;

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  const parts = path.split('/').filter(Boolean).map((p) => { try { return decodeURIComponent(p); } catch { return p; } });
  return {parts, params: new URLSearchParams(q < 0 ? '' : raw.slice(q + 1))};
}

function route() {
  const {parts, params} = parseHash();
  const views = {overview: overviewView, tasks: tasksView, task: taskView, new: newTaskView, schedules: schedulesView, health: healthView};
  const name = views[parts[0]] ? parts[0] : 'overview';
  for (const a of document.querySelectorAll('.top nav a')) {
    const v = a.getAttribute('data-view');
    if (v === name || (name === 'task' && v === 'tasks')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const main = document.getElementById('main');
  const sameView = current && current.name === name;
  if (current && current.dispose) current.dispose();
  current = views[name](parts.slice(1), params);
  current.name = name;
  clear(main).appendChild(current.root);
  if (!sameView) main.focus({preventScroll: true});
  refreshView();
}

/** Re-reads what the current view shows (after an action, a reconnection). */
function refreshView() {
  if (current) Promise.resolve(current.refresh()).catch(report);
}

/** At most one call per `ms`; a burst of live events re-reads once. */
function throttled(fn, ms) {
  let timer = 0; let last = -Infinity;
  return () => {
    if (timer) return;
    const wait = Math.max(0, last + ms - performance.now());
    timer = setTimeout(() => { timer = 0; last = performance.now(); Promise.resolve(fn()).catch(report); }, wait);
  };
}

/** The last live messages (time and kind), for a person or a test looking at the page. */
const liveLog = [];
window.cortexLiveLog = liveLog;

live.listeners.add((kind, data) => {
  liveLog.push([Math.round(performance.now()), kind]);
  if (liveLog.length > 50) liveLog.shift();
  if (current && current.onLive) current.onLive(kind, data);
});

/** Runs each loader; one failing does not stop the others, and its error is shown. */
function loadAll(loaders) {
  return Promise.all(loaders.map((fn) => Promise.resolve().then(fn).catch(report)));
}

// ---------------------------------------------------------------------------------------------
// Overview.

function overviewView() {
  const root = h('section', {'aria-labelledby': 'ov-title'});
  const sched = h('div', {class: 'panel', id: 'scheduler'});
  const counts = h('div', {class: 'panel', id: 'counts'});
  const budget = h('div', {class: 'panel', id: 'budget'});
  const daemons = h('div', {class: 'panel wide', id: 'daemons'});
  const charts = h('div', {class: 'grid', id: 'charts'});
  root.append(h('h1', {id: 'ov-title'}, 'Overview'), h('div', {class: 'grid'}, sched, counts, budget), h('div', {class: 'grid'}, daemons), charts);

  const reasonInput = h('input', {id: 'pause-reason', type: 'text', placeholder: 'why (shown to everyone)', maxlength: 500});
  const schedulerBody = h('div', {id: 'scheduler-body'});
  // Only the button that changes something is shown (both while the state is unknown).
  const reasonBox = h('div', null, h('label', {for: 'pause-reason'}, 'Pause reason'), reasonInput);
  const pauseButton = actionButton('Pause', async () => {
    const out = await post('/scheduler/pause', reasonInput.value.trim() ? {reason: reasonInput.value.trim()} : {});
    reasonInput.value = '';
    return out;
  }, {class: 'danger', name: 'pause'});
  const resumeButton = actionButton('Resume', () => post('/scheduler/resume'), {name: 'resume'});
  const controls = h('div', {class: 'row'}, reasonBox, pauseButton, resumeButton);
  sched.append(h('h2', null, 'Scheduler'), schedulerBody, controls);

  function showOverview(ov) {
    if (!changed(sched, ov)) return;
    const st = ov.scheduler || {};
    const rows = [['State', stateBadge(st.state, 'big-state')]];
    if (st.state === 'paused') {
      rows.push(['Since', timeEl(st.paused_at)], ['By', text([st.paused_by, st.paused_from].filter(Boolean).join(' — '))], ['Reason', text(st.reason)]);
    } else if (st.resumed_at) {
      rows.push(['Resumed', timeEl(st.resumed_at)]);
    }
    rows.push(['Coordinator', stateBadge(st.coordinator)], ['Last tick', /^\d{4}-\d\d-\d\dT/.test(st.last_tick || '') ? timeEl(st.last_tick) : text(st.last_tick)]);
    clear(schedulerBody).appendChild(fields(rows));
    sched.setAttribute('data-state', st.state || 'unknown');
    reasonBox.hidden = pauseButton.hidden = st.state === 'paused';
    resumeButton.hidden = st.state === 'running';

    const s0 = ov.status || {};
    const count = (label, n, id, bad) => h('div', {class: bad && n ? 'count bad' : 'count', id},
      h('span', {class: 'n'}, fmtNum(n)), h('span', {class: 'l'}, label));
    clear(counts).append(h('h2', null, 'Tasks'), h('div', {class: 'counts'},
      count('queued', s0.queued_count, 'count-queued'),
      count('running', s0.running_count, 'count-running'),
      count('pending retry', s0.pending_retry_count, 'count-pending-retry'),
      count('failed (1 h)', ov.failed_1h, 'count-failed', true),
      count('total', s0.tasks_total, 'count-total')));

    const b = ov.budget || s0.token_budget;
    clear(budget).appendChild(h('h2', null, 'Token budget'));
    if (b && b.total) {
      const pct = (n) => `${Math.min(100, (100 * (Number(n) || 0)) / b.total).toFixed(2)}%`;
      const used = h('span', {class: 'used', title: 'used'}); used.style.width = pct(b.used);
      const reserved = h('span', {class: 'reserved', title: 'reserved'}); reserved.style.width = pct(b.reserved);
      budget.append(h('div', {class: 'bar', role: 'img', 'aria-label': `${b.used} used and ${b.reserved} reserved of ${b.total}`}, used, reserved),
        fields([['Used', fmtNum(b.used)], ['Reserved', fmtNum(b.reserved)], ['Available', fmtNum(b.available)], ['Total', fmtNum(b.total)]]));
    } else {
      budget.appendChild(h('p', {class: 'muted'}, b ? 'No token budget configured.' : 'Budget unknown (token-budget.json unreadable).'));
    }
    const errors = [...(s0.errors || []), ...(st.errors || [])];
    if (errors.length) budget.appendChild(h('ul', {class: 'error'}, errors.map((e) => h('li', null, visible(`${e.file}: ${e.error}`)))));
  }

  function showDaemons(data) {
    if (!changed(daemons, data)) return;
    const list = (data && data.daemons) || [];
    const rows = list.map((d) => h('tr', {'data-daemon': d.name},
      h('th', {scope: 'row'}, visible(d.name)),
      h('td', null, stateBadge(d.state)),
      h('td', {class: 'num'}, text(d.pid)),
      h('td', {class: 'num'}, fmtDuration(d.uptime_seconds ?? d.uptime_s)),
      h('td', {class: 'num hide-narrow'}, d.cpu_percent === undefined || d.cpu_percent === null ? '—' : `${Number(d.cpu_percent).toFixed(1)}%`),
      h('td', {class: 'num hide-narrow'}, fmtBytes(d.rss_bytes)),
      h('td', {class: 'num'}, text(d.restarts)),
      h('td', null, d.state === 'disabled' ? null : actionButton('Restart', () => post('/daemons/' + enc(d.name) + '/restart'),
        {class: 'secondary small', name: 'restart', confirm: `Restart ${d.name}?`}))));
    clear(daemons).append(h('h2', null, 'Daemons'),
      table(['Daemon', 'State', {label: 'PID', num: true}, {label: 'Uptime', num: true}, {label: 'CPU', num: true, narrow: true},
        {label: 'RSS', num: true, narrow: true}, {label: 'Restarts', num: true}, ''], rows, {id: 'daemon-table', empty: 'No daemons.'}));
  }

  async function loadCharts() {
    const m = await get('/overview/history?minutes=60');
    const points = m.points || [];
    const lat = m.latency_s || {};
    const hasSeries = points.some((p) => p.p50 !== undefined && p.p50 !== null);
    clear(charts).append(
      chartPanel('Throughput per minute', 'chart-throughput', points, [['completed', 'completed', 1]]),
      chartPanel('Failures per minute', 'chart-failures', points, [['failed', 'failed', 2]]),
      hasSeries
        ? chartPanel('Enqueue → start latency (s)', 'chart-latency', points, [['p50', 'p50', 4], ['p90', 'p90', 1], ['p99', 'p99', 2]])
        : latencyPanel(lat));
  }

  const load = {
    overview: async () => showOverview(await get('/overview')),
    daemons: async () => showDaemons(await get('/daemons')),
    charts: loadCharts,
  };
  const chartsSoon = throttled(loadCharts, 30000);
  const done = () => performance.mark('overview-rendered');
  return {
    root,
    refresh: () => loadAll(Object.values(load)).then(done),
    onLive(kind, data) {
      if (kind === 'status' && data && typeof data === 'object') { showOverview(data); chartsSoon(); }
      else if (kind === 'daemons' && data && typeof data === 'object') showDaemons(data);
    },
  };
}

/** A small SVG line chart over the last hour of `points` (`t` and one field per series). */
function chartPanel(title, id, points, series) {
  const W = 360, H = 120, L = 34, B = 18, T = 6, R = 6;
  const xs = points.map((p) => new Date(p.t).getTime());
  const x1 = Date.now(), x0 = x1 - 3600 * 1000;
  let ymax = 0;
  for (const p of points) for (const [, f] of series) ymax = Math.max(ymax, Number(p[f]) || 0);
  ymax = ymax > 0 ? niceMax(ymax) : 1;
  const sx = (x) => L + ((Math.min(x1, Math.max(x0, x)) - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - y / ymax) * (H - T - B);
  const svg = s('svg', {class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', id, 'aria-label': title});
  svg.append(s('title', {}, title),
    s('line', {class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B}),
    s('line', {class: 'axis', x1: L, y1: T, x2: L, y2: H - B}),
    s('text', {x: L - 4, y: T + 8, 'text-anchor': 'end'}, fmtAxis(ymax)),
    s('text', {x: L - 4, y: H - B, 'text-anchor': 'end'}, '0'),
    s('text', {x: L, y: H - 4}, '−60 min'),
    s('text', {x: W - R, y: H - 4, 'text-anchor': 'end'}, 'now'));
  for (const [, f, c] of series) {
    const pts = [];
    points.forEach((p, i) => {
      const v = Number(p[f]);
      if (Number.isNaN(xs[i]) || p[f] === null || p[f] === undefined || Number.isNaN(v)) return;
      pts.push(`${sx(xs[i]).toFixed(1)},${sy(v).toFixed(1)}`);
    });
    if (pts.length === 1) pts.push(pts[0]);
    if (pts.length) svg.appendChild(s('polyline', {class: 's' + c, points: pts.join(' ')}));
  }
  const latest = points.length ? points[points.length - 1] : null;
  const total = (f) => points.reduce((a, p) => a + (Number(p[f]) || 0), 0);
  const legend = h('div', {class: 'legend'}, series.map(([label, f, c]) =>
    h('span', null, h('i', {class: 'k' + c}), `${label}: ${latest ? fmtAxis(Number(latest[f]) || 0) : '—'} last minute, ${fmtAxis(total(f))} in the hour`)));
  return h('div', {class: 'panel'}, h('h2', null, title), svg, legend,
    points.length ? null : h('p', {class: 'muted'}, 'No metrics snapshots in the last hour (is cortex-metrics running?).'));
}

/** Enqueue → start latency percentiles of the last hour as bars. */
function latencyPanel(lat) {
  const W = 360, H = 96, L = 34, R = 60;
  const rows = [['p50', lat.p50, 4], ['p90', lat.p90, 1], ['p99', lat.p99, 2]];
  const max = niceMax(Math.max(0.001, ...rows.map((r) => Number(r[1]) || 0)));
  const svg = s('svg', {class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', id: 'chart-latency', 'aria-label': 'Enqueue to start latency percentiles'});
  svg.appendChild(s('title', {}, 'Enqueue → start latency percentiles (s)'));
  rows.forEach(([label, v, c], i) => {
    const y = 8 + i * 28;
    const w = v === null || v === undefined ? 0 : ((W - L - R) * Number(v)) / max;
    svg.append(s('text', {x: L - 6, y: y + 13, 'text-anchor': 'end'}, label),
      s('rect', {class: 'f' + c, x: L, y: y + 3, width: Math.max(1, w).toFixed(1), height: 12, rx: 2}),
      s('text', {x: L + w + 6, y: y + 13}, v === null || v === undefined ? '—' : `${fmtAxis(Number(v))} s`));
  });
  return h('div', {class: 'panel'}, h('h2', null, 'Enqueue → start latency'), svg,
    h('div', {class: 'legend'}, `${fmtNum(lat.samples ?? 0)} ${(lat.samples ?? 0) === 1 ? 'dispatch' : 'dispatches'} started in the last hour`));
}

function niceMax(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmtAxis(v) {
  if (!Number.isFinite(v)) return '—';
  if (v >= 100) return String(Math.round(v));
  if (v >= 10) return v.toFixed(1);
  return String(Math.round(v * 100) / 100);
}

// ---------------------------------------------------------------------------------------------
// Tasks table: filtered and paged by the API (a cursor, `after_id`), so 100,000 tasks cost one
// page of rows here.

const PAGE = 50;
const TASK_STATUSES = ['queued', 'pending_retry', 'in_progress', 'completed', 'failed', 'cancelled'];
const FINISHED = new Set(['completed', 'failed', 'cancelled']);
/** The cursors of the pages before this one, per filter, for "← Previous". */
const pageTrail = new Map();

function tasksView(_parts, params) {
  const root = h('section', {'aria-labelledby': 'tasks-title'});
  const status = h('select', {id: 'f-status', name: 'status'}, h('option', {value: ''}, 'any status'), TASK_STATUSES.map((v) => h('option', {value: v}, v)));
  const type = h('input', {id: 'f-type', name: 'worker_type', type: 'text', placeholder: 'any type', size: 12});
  const q = h('input', {id: 'f-q', name: 'q', type: 'search', placeholder: 'id or description ( / )', size: 24});
  const all = h('input', {id: 'f-all', name: 'all', type: 'checkbox'});
  status.value = params.get('status') || '';
  type.value = params.get('worker_type') || '';
  q.value = params.get('q') || '';
  all.checked = params.get('all') === '1';
  const after = params.get('after_id') || '';
  const filterKey = () => JSON.stringify([status.value, type.value.trim(), q.value.trim(), all.checked]);
  const form = h('form', {class: 'row', role: 'search', id: 'task-filter'},
    h('div', null, h('label', {for: 'f-status'}, 'Status'), status),
    h('div', null, h('label', {for: 'f-type'}, 'Worker type'), type),
    h('div', null, h('label', {for: 'f-q'}, 'Search'), q),
    h('div', null, h('label', {for: 'f-all'}, 'Finished too'), all),
    h('button', {type: 'submit'}, 'Filter'));
  const go = (cursor) => {
    const p = new URLSearchParams();
    if (status.value) p.set('status', status.value);
    if (type.value.trim()) p.set('worker_type', type.value.trim());
    if (q.value.trim()) p.set('q', q.value.trim());
    if (all.checked) p.set('all', '1');
    if (cursor) p.set('after_id', cursor);
    const target = '#/tasks' + (p.toString() ? '?' + p : '');
    if (location.hash === target) refreshView(); else location.hash = target;
  };
  form.addEventListener('submit', (e) => { e.preventDefault(); pageTrail.delete(filterKey()); go(''); });
  status.addEventListener('change', () => { if (FINISHED.has(status.value)) all.checked = true; pageTrail.delete(filterKey()); go(''); });
  all.addEventListener('change', () => { pageTrail.delete(filterKey()); go(''); });
  const body = h('div', {id: 'task-list', class: 'panel'});
  const pager = h('div', {class: 'pager'});
  root.append(h('h1', {id: 'tasks-title'}, 'Tasks'), form, body, pager);

  async function load() {
    const p = new URLSearchParams({limit: String(PAGE)});
    if (status.value) p.set('status', status.value);
    if (type.value.trim()) p.set('worker_type', type.value.trim());
    if (q.value.trim()) p.set('q', q.value.trim());
    if (all.checked || FINISHED.has(status.value)) p.set('all', '1');
    if (after) p.set('after_id', after);
    const data = await get('/tasks?' + p);
    if (!changed(body, data)) return;
    const tasks = data.tasks || [];
    const rows = tasks.map((t) => h('tr', {'data-task': t.task_id},
      h('td', null, taskLink(t.task_id)),
      h('td', null, stateBadge(t.status)),
      h('td', {class: 'hide-narrow'}, text(t.worker_type)),
      h('td', {class: 'hide-narrow'}, text(t.priority)),
      h('td', {class: 'desc', title: visible(t.description ?? '')}, text(t.description)),
      h('td', {class: 'hide-narrow'}, timeEl(t.created_at)),
      h('td', {class: 'num hide-narrow'}, t.max_attempts ? `${t.attempts ?? 0}/${t.max_attempts}` : text(t.attempts))));
    clear(body).appendChild(table(['Task', 'Status', {label: 'Type', narrow: true}, {label: 'Priority', narrow: true}, 'Description',
      {label: 'Created', narrow: true}, {label: 'Attempts', num: true, narrow: true}], rows, {id: 'task-table', empty: all.checked || FINISHED.has(status.value) ? 'No task matches.' : 'No task matches among queued and running tasks (tick “Finished too” for the others).'}));
    const trail = pageTrail.get(filterKey()) || [];
    const pageNo = trail.length + 1;
    const prev = h('button', {type: 'button', class: 'secondary', disabled: !after, id: 'page-prev'}, '← Previous');
    const next = h('button', {type: 'button', class: 'secondary', disabled: !data.next_after_id, id: 'page-next'}, 'Next →');
    prev.addEventListener('click', () => { const t2 = pageTrail.get(filterKey()) || []; const back = t2.pop() || ''; pageTrail.set(filterKey(), t2); go(back); });
    next.addEventListener('click', () => { pageTrail.set(filterKey(), [...trail, after]); go(data.next_after_id); });
    const total = typeof data.total === 'number' ? ` of ${fmtNum(data.total)}` : '';
    const partial = data.search_incomplete ? ' (the search stopped scanning here: Next goes on)' : '';
    clear(pager).append(prev, h('span', {class: 'muted', id: 'page-info'}, `page ${pageNo}: ${fmtNum(tasks.length)} tasks${total}${partial}`), next);
    performance.mark('tasks-table-rendered');
  }
  const soon = throttled(load, 1000);
  return {root, refresh: load, onLive(kind) { if (kind === 'dispatches' || kind === 'status') soon(); }};
}

// ---------------------------------------------------------------------------------------------
// One task: its fields, routing, every dispatch, the live output tail; Cancel and Retry.

const TASK_FIELD_ORDER = ['task_id', 'status', 'description', 'priority', 'worker_type', 'command', 'budget', 'token_budget',
  'timeout_seconds', 'attempts', 'max_attempts', 'created_at', 'updated_at', 'next_retry_at', 'waiting_reason', 'error'];

function fieldValue(k, v) {
  if (v === null || v === undefined) return '—';
  if (k === 'status') return stateBadge(v);
  if (/_at$/.test(k) && typeof v === 'string') return timeEl(v);
  if (Array.isArray(v) && !v.length) return '—';
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return h('code', null, visible(v.join(' ')));
  if (typeof v === 'object') return h('code', null, visible(JSON.stringify(v)));
  return visible(v);
}

/** One output stream of a dispatch (stdout or stderr): the tail, then followed live. */
function logPane(taskId, streamName) {
  const pre = h('pre', {class: 'log', id: 'log-' + streamName, tabindex: '0', 'aria-label': streamName + ' tail'});
  const state = h('span', {class: 'muted', id: 'log-' + streamName + '-state'});
  let attempt = null; let offset = 0; let sse = null;

  const write = (chunk, replace) => {
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    if (replace) pre.textContent = visible(chunk);
    else pre.appendChild(document.createTextNode(visible(chunk)));
    // A long-running follow keeps the last 256 KiB of text in the page.
    if (pre.textContent.length > 262144) pre.textContent = pre.textContent.slice(-196608);
    if (atBottom || replace) pre.scrollTop = pre.scrollHeight;
  };
  const stop = () => { if (sse) { sse.close(); sse = null; } };

  async function show(att, running) {
    if (att === attempt && (sse || !running)) return;
    stop();
    attempt = att;
    const first = await get(`/tasks/${enc(taskId)}/log?attempt=${enc(att)}&stream=${streamName}`);
    if (attempt !== att) return;
    write(first.data || '', true);
    offset = first.next_offset ?? 0;
    if (!first.running && !running) { state.textContent = ''; return; }
    state.textContent = ' (following)';
    follow(att);
  }

  // Streams the output from `offset`. A chunk that starts before it is a repeat after a
  // reconnection; one that starts after it means text was lost (the server dropped a client that
  // fell behind): the stream starts again from the text the page has.
  function follow(att) {
    sse = new Sse(() => `/tasks/${enc(taskId)}/log/stream?attempt=${enc(att)}&stream=${streamName}&offset=${offset}`, ['log', 'end'], {
      onevent: (kind, d) => {
        if (!d || typeof d !== 'object') return;
        if (kind === 'log') {
          if (typeof d.offset === 'number' && d.offset < offset) return;
          if (typeof d.offset === 'number' && d.offset > offset) {
            if (attempt === att) { stop(); follow(att); }
            return;
          }
          write(d.data || '');
          offset = d.next_offset ?? offset;
        } else if (kind === 'end') {
          stop();
          state.textContent = d.status ? ` (${d.status})` : '';
        }
      },
    }, true);
  }

  return {
    el: h('div', null, h('h2', null, streamName, state), pre),
    show, stop,
  };
}

function taskView(parts) {
  const id = parts[0] || '';
  const root = h('section', {'aria-labelledby': 'task-title'});
  const info = h('div', {class: 'panel', id: 'task-fields'});
  const routing = h('div', {class: 'panel', id: 'task-routing'});
  const disp = h('div', {class: 'panel wide', id: 'task-dispatches'});
  const actions = h('div', {class: 'actions', id: 'task-actions'});
  const stdout = logPane(id, 'stdout');
  const stderr = logPane(id, 'stderr');
  const outPanel = h('div', {class: 'panel wide', id: 'task-output'}, stdout.el, stderr.el);
  root.append(h('h1', {id: 'task-title'}, 'Task ', h('span', {class: 'mono'}, visible(id))), actions,
    h('div', {class: 'grid'}, info, routing), h('div', {class: 'grid'}, disp), h('div', {class: 'grid'}, outPanel));

  async function load() {
    const data = await get('/tasks/' + enc(id));
    if (!changed(root, data)) return;
    const t = Object.assign({}, data.task || {});
    if (data.status) t.status = data.status;
    const dispatches = data.dispatches || [];
    const keys = [...TASK_FIELD_ORDER.filter((k) => k in t), ...Object.keys(t).filter((k) => !TASK_FIELD_ORDER.includes(k) && k !== 'routing').sort()];
    clear(info).append(h('h2', null, 'Fields'), fields(keys.map((k) => [k.replace(/_/g, ' '), fieldValue(k, t[k])])));
    const r = data.routing;
    clear(routing).append(h('h2', null, 'Routing'), r && typeof r === 'object'
      ? fields(Object.entries(r).map(([k, v]) => [k.replace(/_/g, ' '), fieldValue(k, v)]))
      : h('p', {class: 'muted'}, r ? visible(r) : 'No routing decision recorded.'));

    const rows = dispatches.map((d) => h('tr', {'data-dispatch': d.dispatch_id},
      h('td', {class: 'mono'}, visible(d.dispatch_id)),
      h('td', {class: 'num'}, text(d.attempt)),
      h('td', null, stateBadge(d.status), d.error ? h('div', {class: 'muted small'}, visible(d.error)) : null),
      h('td', null, timeEl(d.started_at)),
      h('td', null, timeEl(d.ended_at)),
      h('td', {class: 'num'}, text(d.exit_code)),
      h('td', null, text(d.signal)),
      h('td', {class: 'num'}, d.duration_s === null || d.duration_s === undefined ? '—' : fmtDuration(d.duration_s)),
      h('td', {class: 'num'}, text(d.tokens_used))));
    clear(disp).append(h('h2', null, 'Dispatches'),
      table([{label: 'Dispatch'}, {label: 'Attempt', num: true}, 'Status', 'Start', 'End', {label: 'Exit', num: true}, 'Signal',
        {label: 'Duration', num: true}, {label: 'Tokens', num: true}], rows, {id: 'dispatch-table', empty: 'Not dispatched yet.'}));

    const st = t.status;
    clear(actions);
    if (st === 'queued' || st === 'pending_retry' || st === 'in_progress') {
      actions.appendChild(actionButton('Cancel', () => post('/tasks/' + enc(id) + '/cancel'), {class: 'danger', name: 'cancel', confirm: `Cancel task ${id}?`}));
    }
    if (st === 'failed' || st === 'cancelled') {
      actions.appendChild(actionButton('Retry', () => post('/tasks/' + enc(id) + '/retry'), {name: 'retry'}));
    }
    root.setAttribute('data-task-status', st || '');

    const latest = dispatches.reduce((a, d) => (!a || Number(d.attempt) >= Number(a.attempt) ? d : a), null);
    outPanel.hidden = !latest;
    if (latest) {
      const running = latest.status === 'running' || latest.status === 'starting';
      await Promise.all([stdout.show(latest.attempt, running), stderr.show(latest.attempt, running)]);
    }
  }
  const soon = throttled(load, 300);
  return {
    root,
    refresh: load,
    dispose() { stdout.stop(); stderr.stop(); },
    onLive(kind, data) {
      if (kind === 'dispatches' && data && Array.isArray(data.changed) && data.changed.some((c) => c.task_id === id)) soon();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Add a task.

function newTaskView() {
  const root = h('section', {'aria-labelledby': 'new-title'});
  const desc = h('textarea', {id: 'n-description', name: 'description', required: true, maxlength: 10000});
  const prio = h('select', {id: 'n-priority', name: 'priority'}, ['critical', 'high', 'medium', 'low'].map((p) => h('option', {value: p}, p)));
  prio.value = 'medium';
  const type = h('input', {id: 'n-type', name: 'worker_type', type: 'text', placeholder: 'default'});
  const budget = h('input', {id: 'n-budget', name: 'budget', type: 'number', min: 0, step: 1, placeholder: 'default'});
  const timeout = h('input', {id: 'n-timeout', name: 'timeout_seconds', type: 'number', min: 1, step: 1, placeholder: 'default'});
  const attempts = h('input', {id: 'n-attempts', name: 'max_attempts', type: 'number', min: 1, step: 1, placeholder: 'default'});
  const command = h('input', {id: 'n-command', name: 'command', type: 'text', class: 'mono', placeholder: 'e.g. make test'});
  const submit = h('button', {type: 'submit', id: 'n-submit'}, 'Add task');
  const form = h('form', {class: 'stack panel', id: 'new-task'},
    h('div', null, h('label', {for: 'n-description'}, 'Description'), desc),
    h('div', {class: 'form-grid'},
      h('div', null, h('label', {for: 'n-priority'}, 'Priority'), prio),
      h('div', null, h('label', {for: 'n-type'}, 'Worker type'), type),
      h('div', null, h('label', {for: 'n-budget'}, 'Token budget'), budget),
      h('div', null, h('label', {for: 'n-timeout'}, 'Timeout (s)'), timeout),
      h('div', null, h('label', {for: 'n-attempts'}, 'Max attempts'), attempts)),
    h('div', null, h('label', {for: 'n-command'}, 'Command (run with sh -c; empty: the worker type\'s default)'), command),
    h('div', {class: 'actions'}, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = {description: desc.value, priority: prio.value};
    if (type.value.trim()) body.worker_type = type.value.trim();
    if (budget.value !== '') body.budget = Number(budget.value);
    if (timeout.value !== '') body.timeout_seconds = Number(timeout.value);
    if (attempts.value !== '') body.max_attempts = Number(attempts.value);
    if (command.value.trim()) body.command = ['sh', '-c', command.value.trim()];
    submit.disabled = true;
    try {
      const out = await post('/tasks', body);
      const tid = out && out.task && out.task.task_id;
      notice(`Task ${tid || ''} added`, true);
      if (tid) location.hash = '#/task/' + enc(tid);
    } catch (err) {
      report(err);
    } finally {
      submit.disabled = false;
    }
  });
  root.append(h('h1', {id: 'new-title'}, 'Add a task'), form);
  return {root, refresh: () => undefined};
}

// ---------------------------------------------------------------------------------------------
// Schedules.

/** How a schedule's last run went: its task's newest dispatch status, exit code and the task. */
function lastResult(sc) {
  const r = sc.last_result;
  if (r && typeof r === 'object') {
    return [stateBadge(r.status), r.exit_code !== null && r.exit_code !== undefined ? ` exit ${r.exit_code} ` : ' ',
      r.task_id ? taskLink(r.task_id) : null];
  }
  if (typeof r === 'string') return stateBadge(r);
  return sc.last_task_id ? taskLink(sc.last_task_id) : '—';
}

function schedulesView() {
  const root = h('section', {'aria-labelledby': 'sched-title'});
  const body = h('div', {class: 'panel', id: 'schedules'});
  root.append(h('h1', {id: 'sched-title'}, 'Schedules'), body);
  async function load() {
    const data = await get('/schedules');
    if (!changed(body, data)) return;
    const list = data.schedules || [];
    const act = (sc, what) => () => post('/schedules/' + enc(sc.schedule_id) + '/' + what);
    const rows = list.map((sc) => h('tr', {'data-schedule': sc.schedule_id},
      h('th', {scope: 'row'}, text(sc.name)),
      h('td', null, h('code', null, visible(sc.cron ?? (sc.every ? 'every ' + sc.every : '—'))), sc.describe ? h('div', {class: 'muted'}, visible(sc.describe)) : null),
      h('td', null, text(sc.timezone ?? sc.effective_timezone)),
      h('td', null, stateBadge(sc.state), sc.reason ? h('div', {class: 'muted'}, visible(sc.reason)) : null),
      h('td', null, timeEl(sc.next_run_at)),
      h('td', null, timeEl(sc.last_run_at)),
      h('td', null, lastResult(sc)),
      h('td', null,
        sc.state === 'paused'
          ? actionButton('Resume', act(sc, 'resume'), {class: 'small', name: 'schedule-resume'})
          : actionButton('Pause', act(sc, 'pause'), {class: 'secondary small', name: 'schedule-pause'}),
        ' ',
        actionButton('Run now', act(sc, 'run'), {class: 'small', name: 'schedule-run'}))));
    clear(body).appendChild(table(['Schedule', 'Expression', 'Zone', 'State', 'Next run', 'Last run', 'Result', ''], rows,
      {id: 'schedule-table', empty: 'No schedules (cortex schedule add).'}));
  }
  const soon = throttled(load, 500);
  return {root, refresh: load, onLive(kind) { if (kind === 'schedules') soon(); }};
}

// ---------------------------------------------------------------------------------------------
// Health: events (severity filter, Acknowledge), failure patterns, breakers (Reset), zombies.

function healthView(_parts, params) {
  const root = h('section', {'aria-labelledby': 'health-title'});
  const sev = h('select', {id: 'f-severity'}, ['warning', 'error', 'critical', 'info'].map((v) => h('option', {value: v}, v + (v === 'critical' ? '' : ' and above'))));
  sev.value = params.get('severity') || 'warning';
  sev.addEventListener('change', () => { location.hash = '#/health?severity=' + enc(sev.value); });
  const before = params.get('before') || '';
  const verdict = h('div', {class: 'panel', id: 'health-verdict'});
  const events = h('div', {class: 'panel wide', id: 'health-events'});
  const patterns = h('div', {class: 'panel', id: 'failure-patterns'});
  const breakers = h('div', {class: 'panel', id: 'breakers'});
  const zombies = h('div', {class: 'panel wide', id: 'zombies'});
  root.append(h('h1', {id: 'health-title'}, 'Health'), h('div', {class: 'grid'}, verdict, breakers),
    h('div', {class: 'grid'}, events), h('div', {class: 'grid'}, patterns), h('div', {class: 'grid'}, zombies));

  async function loadVerdict() {
    const hl = await get('/health');
    clear(verdict).append(h('h2', null, 'Verdict'), fields([
      ['Verdict', h('span', {class: hl.healthy ? 'state state-ok big-state' : 'state state-error big-state', id: 'health-state'}, hl.healthy ? 'healthy' : 'unhealthy')],
      ['Events (1 h)', fmtNum(hl.events_1h)],
      ['Problems', hl.problems && hl.problems.length ? h('ul', null, hl.problems.map((p) => h('li', null, visible(p)))) : 'none'],
    ]));
  }

  async function loadEvents() {
    const p = new URLSearchParams({severity: sev.value, limit: '50'});
    if (before) p.set('before', before);
    const data = await get('/events?' + p);
    const list = data.events || [];
    const rows = list.map((e) => h('tr', {'data-event': e.id},
      h('td', null, stateBadge(e.severity)),
      h('td', null, timeEl(e.timestamp)),
      h('td', {class: 'hide-narrow'}, text(e.type)),
      h('td', null, text(e.message)),
      h('td', {class: 'hide-narrow'}, e.data && e.data.task_id ? taskLink(e.data.task_id) : '—'),
      h('td', null, e.acknowledged ? h('span', {class: 'muted'}, 'acknowledged')
        : actionButton('Acknowledge', () => post('/events/' + enc(e.id) + '/ack'), {class: 'secondary small', name: 'ack'}))));
    const older = h('button', {type: 'button', class: 'secondary', disabled: !data.next_before, id: 'events-older'}, 'Older →');
    older.addEventListener('click', () => { location.hash = `#/health?severity=${enc(sev.value)}&before=${enc(data.next_before)}`; });
    const newest = h('button', {type: 'button', class: 'secondary', disabled: !before, id: 'events-newest'}, '← Newest');
    newest.addEventListener('click', () => { location.hash = '#/health?severity=' + enc(sev.value); });
    clear(events).append(
      h('div', {class: 'row'}, h('h2', null, 'Events'), h('div', null, h('label', {for: 'f-severity'}, 'Severity'), sev),
        actionButton('Acknowledge all', () => post('/events/all/ack'), {class: 'secondary', name: 'ack-all', confirm: 'Acknowledge every event up to now?'})),
      table(['Severity', 'When', {label: 'Type', narrow: true}, 'Message', {label: 'Task', narrow: true}, ''], rows,
        {id: 'event-table', empty: 'No events at this severity.'}),
      h('div', {class: 'pager'}, newest, older));
  }

  async function loadPatterns() {
    const list = (await get('/failure-patterns')).patterns || [];
    const rows = list.map((p) => h('tr', null,
      h('td', null, text(p.pattern ?? p.signature ?? p.name ?? p.id)),
      h('td', {class: 'num'}, fmtNum(p.count ?? p.occurrences)),
      h('td', null, timeEl(p.last_seen ?? p.last_seen_at)),
      h('td', {class: 'hide-narrow'}, text(p.suggestion ?? p.action ?? p.fix))));
    clear(patterns).append(h('h2', null, 'Failure patterns'), table(['Pattern', {label: 'Count', num: true}, 'Last seen', {label: 'Suggestion', narrow: true}], rows,
      {id: 'pattern-table', empty: 'No failure patterns.'}));
  }

  async function loadBreakers() {
    const list = (await get('/breakers')).breakers || [];
    const rows = list.map((b) => h('tr', {'data-breaker': b.worker_type},
      h('th', {scope: 'row'}, visible(b.worker_type)),
      h('td', null, stateBadge(b.state)),
      h('td', {class: 'num'}, text(b.failures)),
      h('td', null, b.state === 'open' ? timeEl(b.reopens_at) : '—'),
      h('td', null, b.state !== 'closed' ? actionButton('Reset', () => post('/breakers/' + enc(b.worker_type) + '/reset'), {class: 'small', name: 'reset'}) : null)));
    clear(breakers).append(h('h2', null, 'Circuit breakers'), table(['Worker type', 'State', {label: 'Failures', num: true}, 'Half-open at', ''], rows,
      {id: 'breaker-table', empty: 'No circuit breakers.'}));
  }

  async function loadZombies() {
    const list = (await get('/zombies')).zombies || [];
    const rows = list.map((z) => h('tr', null,
      h('td', {class: 'mono'}, text(z.id ?? z.dispatch_id)),
      h('td', null, z.task_id ? taskLink(z.task_id) : '—'),
      h('td', {class: 'num'}, text(z.pid)),
      h('td', null, timeEl(z.ended_at ?? z.started_at ?? z.dispatched_at))));
    clear(zombies).append(h('h2', null, 'Zombies'), table(['Dispatch', 'Task', {label: 'PID', num: true}, 'Since'], rows,
      {id: 'zombie-table', empty: 'No zombies.'}));
  }

  const loaders = [loadVerdict, loadEvents, loadPatterns, loadBreakers, loadZombies];
  const eventsSoon = throttled(() => loadAll([loadVerdict, loadEvents, loadPatterns, loadBreakers]), 500);
  const zombiesSoon = throttled(loadZombies, 1000);
  return {
    root,
    refresh: () => loadAll(loaders),
    onLive(kind) {
      if (kind === 'event' && !before) eventsSoon();
      else if (kind === 'dispatches') zombiesSoon();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Start.

function start() {
  window.addEventListener('hashchange', route);
  keepFocus(document.getElementById('main'));
  setInterval(tickTimes, 15000);
  document.addEventListener('keydown', (e) => {
    const tag = (document.activeElement && document.activeElement.tagName) || '';
    if (e.key === '/' && !e.ctrlKey && !e.metaKey && !/^(INPUT|TEXTAREA|SELECT)$/.test(tag)) {
      const q = document.getElementById('f-q');
      if (q) { e.preventDefault(); q.focus(); }
    }
  });
  // Leaving the page closes its streams at once: a stream left to the browser keeps one of the
  // six connections it allows per host until it is noticed dead, and enough of them stall the
  // next page's requests. Back from the back-forward cache, the page reconnects and re-reads.
  window.addEventListener('pagehide', () => {
    live.stop();
    if (current && current.dispose) current.dispose();
  });
  window.addEventListener('pageshow', (e) => {
    if (e.persisted) { live.start(); route(); }
  });
  live.start();
  route();
}

start();

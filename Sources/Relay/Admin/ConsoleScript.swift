// The console's script (/ui/app.js), served by `Console`. Plain ES2020, no build step, no library. Every value that
// comes from the relay (events, bodies, responses, names) goes into the page through `textContent` or as an
// attribute of an element it builds (`el`); no HTML is ever parsed from data (no innerHTML anywhere).

enum ConsoleScript {
    static let source = #"""
'use strict';
(() => {
  const TOKEN_KEY = 'relay.console.token';
  const STATUSES = ['placed', 'invoiced', 'backordered', 'sent', 'shipped', 'delivered', 'processed', 'cancelled',
                    'refunded', 'expired', 'failed', 'pending', 'unmapped'];
  const FINISHED = new Set(['delivered', 'dead', 'skipped', 'superseded']);
  const main = document.getElementById('main');
  const nav = document.getElementById('nav');
  const signoutButton = document.getElementById('signout');
  const authState = document.getElementById('auth-state');
  const state = { token: sessionStorage.getItem(TOKEN_KEY), tokenNeeded: false, routes: null, timer: null,
                  view: 0, scrape: null };

  // ---- DOM: elements built from data, text only -------------------------------------------------------------
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = String(v);
      else if (k === 'data') for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = String(dv);
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  const badge = (text) => el('span', { class: 'badge ' + String(text).replace(/[^a-z_-]/gi, ''), text });
  const link = (hash, text) => el('a', { href: hash, text });
  const eventLink = (id) => link('#/event/' + encodeURIComponent(id), id);
  function facts(pairs) {
    const dl = el('dl', { class: 'facts' });
    for (const [k, v] of pairs) if (v !== undefined && v !== null && v !== '') dl.append(el('dt', { text: k }), el('dd', {}, v));
    return dl;
  }
  function show(...nodes) { main.replaceChildren(...nodes.flat()); }
  // Local time, as 2026-12-06 23:24:20.183 (the API's times are UTC; the tooltip of a timeline entry has it).
  function time(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    const p = (n, w = 2) => String(n).padStart(w, '0');
    return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + ' ' + p(d.getHours()) + ':' +
           p(d.getMinutes()) + ':' + p(d.getSeconds()) + '.' + p(d.getMilliseconds(), 3);
  }
  const subjectText = (s) => Object.entries(s || {}).map(([k, v]) => k + '=' + v).join(' ');
  function age(seconds) {
    if (!seconds) return '0 s';
    if (seconds < 120) return seconds.toFixed(seconds < 10 ? 1 : 0) + ' s';
    if (seconds < 7200) return (seconds / 60).toFixed(0) + ' min';
    return (seconds / 3600).toFixed(1) + ' h';
  }
  function pretty(text) {
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch (_) { return text; }
  }

  // ---- API ------------------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, body) {
      const msg = body && typeof body === 'object' ? [body.error, body.reason].filter(Boolean).join(': ') : String(body || '');
      super('HTTP ' + status + (msg ? ' ' + msg : ''));
      this.status = status;
      this.body = body;
    }
  }
  async function request(path, { method = 'GET', body, token = state.token } = {}) {
    const headers = { 'Accept': 'application/json' };
    if (token) headers['Authorization'] = 'Bearer ' + token;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                                  cache: 'no-store', credentials: 'omit', redirect: 'error' });
    const text = await r.text();
    let data = text;
    if ((r.headers.get('Content-Type') || '').includes('json')) { try { data = JSON.parse(text); } catch (_) {} }
    return { status: r.status, ok: r.ok, data };
  }
  async function api(path, options) {
    const r = await request(path, options);
    if (r.status === 401) {
      signIn('The relay refused the token (401): sign in again.');
      throw new ApiError(401, r.data);
    }
    if (!r.ok) throw new ApiError(r.status, r.data);
    return r.data;
  }
  function failure(e) { return el('p', { class: 'error', role: 'alert', text: String(e && e.message || e) }); }

  // ---- Sign-in ----------------------------------------------------------------------------------------------
  function signedIn(on) {
    nav.hidden = !on;
    signoutButton.hidden = !(on && state.tokenNeeded);
    authState.textContent = on ? (state.tokenNeeded ? 'signed in' : 'no token needed (loopback)') : '';
  }
  function signIn(message) {
    stopTimer();
    state.view++;
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    signedIn(false);
    const input = el('input', { id: 'token', type: 'password', name: 'token', autocomplete: 'off', required: true,
                                spellcheck: 'false', 'aria-describedby': 'signin-error' });
    const error = el('p', { id: 'signin-error', class: 'error', role: 'alert', text: message || '' });
    const button = el('button', { id: 'signin-submit', class: 'primary', type: 'submit', text: 'Sign in' });
    const form = el('form', { id: 'signin-form', class: 'stack', novalidate: true },
      el('label', {}, 'Admin token', input), button, error);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const token = input.value.trim();
      if (!token) { error.textContent = 'Enter the admin token (admin.token in the relay\'s configuration).'; return; }
      button.disabled = true;
      error.textContent = '';
      try {
        const r = await request('/v1/routes', { token });
        if (r.status === 401) { error.textContent = 'Sign-in failed: the relay refused this token (401).'; return; }
        if (!r.ok) { error.textContent = 'Sign-in failed: ' + new ApiError(r.status, r.data).message; return; }
        state.token = token;
        state.tokenNeeded = true;
        state.routes = r.data;
        sessionStorage.setItem(TOKEN_KEY, token);
        signedIn(true);
        route();
      } catch (e) {
        error.textContent = 'Sign-in failed: ' + e.message;
      } finally {
        button.disabled = false;
      }
    });
    show(el('div', { class: 'card signin' },
      el('h1', { text: 'Sign in' }),
      el('p', { class: 'muted', text: 'This relay\'s admin API needs its token. It is kept in this tab only (sessionStorage) and sent as Authorization: Bearer.' }),
      form));
    input.focus();
  }
  signoutButton.addEventListener('click', () => signIn('Signed out.'));

  async function boot() {
    try {
      const r = await request('/v1/routes');
      if (r.status === 401) {
        state.tokenNeeded = true;
        signIn(state.token ? 'The saved token was refused: sign in again.' : '');
        return;
      }
      if (!r.ok) throw new ApiError(r.status, r.data);
      state.routes = r.data;
      state.tokenNeeded = !!state.token;
      signedIn(true);
      route();
    } catch (e) {
      show(el('h1', { text: 'Relay console' }), failure(e));
    }
  }

  // ---- Routing ----------------------------------------------------------------------------------------------
  function stopTimer() { if (state.timer) { clearTimeout(state.timer); state.timer = null; } }
  // Runs fn once after ms if the view is still the one shown (views that refresh schedule themselves again).
  function later(ms, fn, view) {
    stopTimer();
    state.timer = setTimeout(() => {
      state.timer = null;
      if (view === state.view) fn().catch(() => { if (view === state.view) later(ms, fn, view); });
    }, ms);
  }
  function parseHash() {
    const h = location.hash.replace(/^#\/?/, '');
    const q = h.indexOf('?');
    const path = (q < 0 ? h : h.slice(0, q)).split('/').filter(Boolean).map(decodeURIComponent);
    return { path, params: new URLSearchParams(q < 0 ? '' : h.slice(q + 1)) };
  }
  function go(path, params) {
    const q = params ? new URLSearchParams([...params].filter(([, v]) => v !== '')).toString() : '';
    location.hash = '#/' + path + (q ? '?' + q : '');
  }
  function route() {
    if (nav.hidden) return;
    stopTimer();
    const view = ++state.view;
    const { path, params } = parseHash();
    const name = path[0] || 'events';
    for (const a of nav.querySelectorAll('a')) a.classList.toggle('current', a.dataset.view === (name === 'event' ? 'events' : name));
    const views = { events: eventsView, event: eventView, dead: deadView, destinations: destinationsView, rates: ratesView };
    const fn = views[name] || eventsView;
    document.title = 'Relay console';
    fn(view, path.slice(1), params).catch((e) => { if (view === state.view && e.status !== 401) main.append(failure(e)); });
  }
  window.addEventListener('hashchange', route);

  // ---- Events -----------------------------------------------------------------------------------------------
  function localInput(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (isNaN(d)) return '';
    const p = (n) => String(n).padStart(2, '0');
    return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + 'T' + p(d.getHours()) + ':' + p(d.getMinutes());
  }
  const isoFromLocal = (v) => v ? new Date(v).toISOString() : '';

  async function eventsView(view, _, params) {
    const sources = Object.keys((state.routes && state.routes.sources) || {}).sort();
    const f = {
      source: el('select', { name: 'source', id: 'filter-source' }, el('option', { value: '', text: 'any source' }),
                 sources.map((s) => el('option', { value: s, text: s, selected: params.get('source') === s }))),
      status: el('input', { name: 'status', id: 'filter-status', list: 'statuses', placeholder: 'any status', value: params.get('status') || '' }),
      subject: el('input', { name: 'subject', id: 'filter-subject', placeholder: 'orderId:ORD-1', value: params.get('subject') || '' }),
      since: el('input', { name: 'since', id: 'filter-since', type: 'datetime-local', value: localInput(params.get('since')) }),
      until: el('input', { name: 'until', id: 'filter-until', type: 'datetime-local', value: localInput(params.get('until')) }),
    };
    const form = el('form', { class: 'filters', id: 'events-filters' },
      el('label', {}, 'Source', f.source), el('label', {}, 'Status', f.status),
      el('label', {}, 'Subject (KEY:VALUE)', f.subject), el('label', {}, 'Received since', f.since),
      el('label', {}, 'Received before', f.until),
      el('button', { class: 'primary', type: 'submit', text: 'Filter' }),
      el('button', { type: 'button', text: 'Clear', onclick: () => go('events') }),
      el('datalist', { id: 'statuses' }, STATUSES.map((s) => el('option', { value: s }))));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      go('events', new URLSearchParams({ source: f.source.value, status: f.status.value.trim(), subject: f.subject.value.trim(),
                                         since: isoFromLocal(f.since.value), until: isoFromLocal(f.until.value) }));
    });
    show(el('h1', { text: 'Events' }), form, el('p', { class: 'muted', text: 'Loading…' }));
    const q = new URLSearchParams();
    for (const k of ['source', 'status', 'subject', 'since', 'until', 'cursor']) if (params.get(k)) q.set(k, params.get(k));
    q.set('limit', '50');
    const page = await api('/v1/events?' + q);
    if (view !== state.view) return;
    const rows = page.events.map((e) => el('tr', { data: { eventId: e.id } },
      el('td', { class: 'mono', text: time(e.receivedAt) }),
      el('td', { class: 'mono' }, eventLink(e.id)),
      el('td', { text: e.source }),
      el('td', { text: e.type }),
      el('td', {}, e.status ? badge(e.status) : (e.statusUnmapped ? badge('unmapped') : ''),
         e.providerStatus ? el('span', { class: 'muted', text: ' ' + e.providerStatus.code }) : ''),
      el('td', { class: 'mono', text: subjectText(e.subject) })));
    const table = el('table', { class: 'events', id: 'events-table' },
      el('thead', {}, el('tr', {}, ['Received', 'Event', 'Source', 'Type', 'Status', 'Subject'].map((h) => el('th', { text: h })))),
      el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: 6, class: 'muted', text: 'No event matches.' }))));
    const pager = el('div', { class: 'pager' });
    if (params.get('cursor')) {
      const first = new URLSearchParams(params); first.delete('cursor');
      pager.append(el('button', { type: 'button', text: '« Newest', onclick: () => go('events', first) }));
      pager.append(el('button', { type: 'button', text: '‹ Newer', onclick: () => history.back() }));
    }
    if (page.nextCursor) {
      const next = new URLSearchParams(params); next.set('cursor', page.nextCursor);
      pager.append(el('button', { type: 'button', id: 'events-older', text: 'Older ›', onclick: () => go('events', next) }));
    }
    pager.append(el('span', { class: 'muted', text: page.events.length + ' shown' }));
    show(el('h1', { text: 'Events' }), form, table, pager);
  }

  // ---- One event --------------------------------------------------------------------------------------------
  async function eventView(view, rest) {
    const id = rest[0] || '';
    document.title = id + ' · Relay console';
    const data = await api('/v1/events/' + encodeURIComponent(id));
    if (view !== state.view) return;
    const e = data.event;
    const canonical = Object.assign({}, e);
    delete canonical.raw;
    const summary = el('div', { class: 'card' }, facts([
      ['Event', el('span', { class: 'mono', id: 'event-id', text: e.id })],
      ['Source', e.source], ['Type', e.type],
      ['Status', e.status ? badge(e.status) : (e.statusUnmapped ? badge('unmapped') : '—')],
      ['Provider status', e.providerStatus ? e.providerStatus.code + (e.providerStatus.label ? ' (' + e.providerStatus.label + ')' : '') : ''],
      ['Subject', el('span', { class: 'mono', text: subjectText(e.subject) })],
      ['Occurred', time(e.occurredAt)], ['Received', time(e.receivedAt)],
      ['Idempotency key', el('span', { class: 'mono', text: e.idempotencyKey })],
    ]));
    const raw = e.raw || { contentType: '', body: '' };
    const deliveries = data.deliveries.map((d) => deliveryCard(d, () => route()));
    show(el('p', {}, link('#/events', '‹ Events')),
      el('h1', { text: 'Event' }), summary,
      el('h2', { text: 'Deliveries' }),
      deliveries.length ? deliveries : el('p', { class: 'muted', text: 'No route sent this event anywhere.' }),
      el('h2', { text: 'Timeline' }), timeline(e, data.deliveries),
      el('div', { class: 'grid2' },
        el('section', {}, el('h2', { text: 'Canonical event' }), el('pre', { id: 'canonical', text: JSON.stringify(canonical, null, 2) })),
        el('section', {}, el('h2', { text: 'Raw body' }), el('p', { class: 'muted', text: raw.contentType }),
           el('pre', { id: 'raw-body', text: raw.body }))));
    if (data.deliveries.some((d) => !FINISHED.has(d.state))) later(1500, () => refreshEvent(view, id), view);
  }
  async function refreshEvent(view, id) {
    const open = [...main.querySelectorAll('details[open]')].map((d) => d.dataset.key).filter(Boolean);
    await eventView(view, [id]);
    for (const key of open) {
      const d = main.querySelector('details[data-key="' + CSS.escape(key) + '"]');
      if (d) d.open = true;
    }
  }

  function deliveryCard(d, after) {
    const notice = el('p', { class: 'notice', role: 'status' });
    const buttons = [];
    if (FINISHED.has(d.state)) {
      buttons.push(el('button', { type: 'button', class: 'replay', text: 'Replay', onclick: async (ev) => {
        ev.target.disabled = true;
        try {
          const r = await api('/v1/deliveries/' + encodeURIComponent(d.id) + '/replay', { method: 'POST' });
          notice.textContent = 'Queued again (was ' + r.previousState + ').';
          setTimeout(after, 300);
        } catch (e) { notice.replaceWith(failure(e)); }
      } }));
    }
    const requestBox = el('div', {});
    const requestDetails = el('details', { class: 'request', data: { key: 'request-' + d.id } }, el('summary', { text: 'Request (as sent at its current step; credentials masked)' }), requestBox);
    requestDetails.addEventListener('toggle', async () => {
      if (!requestDetails.open || requestBox.childNodes.length) return;
      try {
        const r = await api('/v1/deliveries/' + encodeURIComponent(d.id) + '/request');
        if (r.request) {
          const lines = [r.request.method + ' ' + r.request.url].concat(r.request.headers.map(([k, v]) => k + ': ' + v));
          requestBox.append(el('pre', { class: 'request', text: lines.join('\n') + (r.request.body ? '\n\n' + pretty(r.request.body) : '') }));
          if (r.request.note) requestBox.append(el('p', { class: 'muted', text: r.request.note }));
        } else if (r.translation) {
          requestBox.append(el('p', { class: 'muted', text: 'Not translated (' + r.translation.outcome + '): ' + r.translation.reason }));
        }
      } catch (e) { requestBox.append(failure(e)); }
    });
    const attempts = (d.attemptLog || []).map((a) => el('tr', { data: { attempt: a.n } },
      el('td', { class: 'num', text: a.n }),
      el('td', { class: 'mono', text: time(a.startedAt) }),
      el('td', { class: 'num', text: a.latencyMs + ' ms' }),
      el('td', {}, a.status !== undefined
        ? el('span', { class: 'badge ' + (a.status >= 200 && a.status < 300 ? 'ok' : 'bad'), text: a.status })
        : el('span', { class: 'muted', text: 'no answer' })),
      el('td', { text: a.error || '' }),
      el('td', {}, a.response ? el('details', { data: { key: 'resp-' + d.id + '-' + a.n } }, el('summary', { text: a.response.length + ' bytes' }),
                                   el('pre', { class: 'response', text: pretty(a.response) })) : '')));
    return el('section', { class: 'card delivery', data: { deliveryId: d.id, state: d.state } },
      el('div', { class: 'card-head' }, el('h3', { text: d.destination }), el('span', { class: 'delivery-state' }, badge(d.state)),
         el('span', { class: 'mono muted', text: d.id }), el('span', { class: 'spacer' }), buttons),
      facts([['Attempts', String(d.attempts)], ['Last status', d.lastStatus !== undefined ? String(d.lastStatus) : ''],
             ['Last error', d.lastError], ['Next attempt', time(d.nextAttemptAt)], ['Finished', time(d.finishedAt)],
             ['Step', d.step !== undefined ? String(d.step + 1) : ''],
             ['Values', d.values ? el('span', { class: 'mono', text: Object.entries(d.values).map(([k, v]) => k + '=' + v).join(' ') }) : '']]),
      notice,
      attempts.length ? el('table', { class: 'attempts' },
        el('thead', {}, el('tr', {}, ['#', 'Started', 'Latency', 'Status', 'Error', 'Response'].map((h) => el('th', { text: h })))),
        el('tbody', {}, attempts)) : el('p', { class: 'muted', text: 'No attempt yet.' }),
      requestDetails);
  }

  function timeline(e, deliveries) {
    const items = [];
    if (e.occurredAt) items.push({ t: e.occurredAt, cls: '', text: 'occurred (as the provider says)' });
    items.push({ t: e.receivedAt, cls: 'ok', text: 'received from ' + e.source + ' and stored' });
    for (const d of deliveries) {
      for (const a of d.attemptLog || []) {
        const ok = a.status >= 200 && a.status < 300;
        items.push({ t: a.startedAt, cls: ok ? 'ok' : 'bad',
                     text: d.destination + ': attempt ' + a.n + ' → ' + (a.status !== undefined ? 'HTTP ' + a.status : 'no answer') +
                           (a.error ? ' (' + a.error + ')' : '') + ', ' + a.latencyMs + ' ms' });
      }
      if (d.finishedAt) items.push({ t: d.finishedAt, cls: d.state === 'delivered' ? 'ok' : (d.state === 'dead' ? 'bad' : 'warn'), text: d.destination + ': ' + d.state });
      if (d.state === 'pending' && d.nextAttemptAt) items.push({ t: d.nextAttemptAt, cls: 'warn', text: d.destination + ': next attempt due' });
    }
    items.sort((a, b) => new Date(a.t) - new Date(b.t));
    return el('ol', { class: 'timeline card', id: 'timeline' },
      items.map((i) => el('li', { class: i.cls }, el('time', { datetime: i.t, title: i.t, text: time(i.t) }), i.text)));
  }

  // ---- Dead letters -----------------------------------------------------------------------------------------
  function destinationSelect(id, selected, anyText) {
    const names = Object.keys((state.routes && state.routes.destinations) || {}).sort();
    return el('select', { id }, el('option', { value: '', text: anyText }),
              names.map((n) => el('option', { value: n, text: n, selected: selected === n })));
  }
  async function deadView(view, _, params) {
    const dest = destinationSelect('dead-destination', params.get('destination') || '', 'every destination');
    dest.addEventListener('change', () => go('dead', new URLSearchParams({ destination: dest.value })));
    const q = new URLSearchParams({ state: 'dead', limit: '50' });
    if (params.get('destination')) q.set('destination', params.get('destination'));
    if (params.get('cursor')) q.set('cursor', params.get('cursor'));
    const page = await api('/v1/deliveries?' + q);
    if (view !== state.view) return;
    const rows = page.deliveries.map((d) => {
      const cell = el('td', {});
      cell.append(el('button', { type: 'button', class: 'replay', text: 'Replay', onclick: async (ev) => {
        ev.target.disabled = true;
        try {
          await api('/v1/deliveries/' + encodeURIComponent(d.id) + '/replay', { method: 'POST' });
          cell.replaceChildren(badge('pending'), ' queued again');
        } catch (e) { cell.replaceChildren(failure(e)); }
      } }));
      return el('tr', { data: { deliveryId: d.id } },
        el('td', { class: 'mono', text: time(d.finishedAt) }),
        el('td', { text: d.destination }),
        el('td', { class: 'mono' }, eventLink(d.eventId)),
        el('td', { class: 'num', text: d.attempts }),
        el('td', { class: 'num', text: d.lastStatus !== undefined ? d.lastStatus : '' }),
        el('td', { text: d.lastError || '' }), cell);
    });
    const table = el('table', { class: 'dead', id: 'dead-table' },
      el('thead', {}, el('tr', {}, ['Died', 'Destination', 'Event', 'Attempts', 'Last status', 'Why', ''].map((h) => el('th', { text: h })))),
      el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: 7, class: 'muted', text: 'No dead letter.' }))));
    const pager = el('div', { class: 'pager' });
    if (page.nextCursor) {
      const next = new URLSearchParams(params); next.set('cursor', page.nextCursor);
      pager.append(el('button', { type: 'button', text: 'Older ›', onclick: () => go('dead', next) }));
    }
    show(el('h1', { text: 'Dead letters' }),
      el('form', { class: 'filters', onsubmit: (ev) => ev.preventDefault() }, el('label', {}, 'Destination', dest)),
      table, pager, bulkReplay());
  }
  function bulkReplay() {
    const dest = destinationSelect('bulk-destination', '', 'every destination');
    const since = el('input', { id: 'bulk-since', type: 'datetime-local' });
    const until = el('input', { id: 'bulk-until', type: 'datetime-local' });
    const out = el('p', { id: 'bulk-result', class: 'notice', role: 'status' });
    const confirm = el('button', { id: 'bulk-confirm', type: 'button', class: 'danger', hidden: true });
    let checked = null;
    const filter = () => {
      const f = { state: 'dead' };
      if (dest.value) f.destination = dest.value;
      if (since.value) f.since = isoFromLocal(since.value);
      if (until.value) f.until = isoFromLocal(until.value);
      return f;
    };
    const reset = () => { checked = null; confirm.hidden = true; out.textContent = ''; };
    for (const i of [dest, since, until]) i.addEventListener('change', reset);
    const dry = el('button', { id: 'bulk-dry-run', type: 'button', class: 'primary', text: 'Dry run', onclick: async () => {
      reset();
      try {
        const f = filter();
        const r = await api('/v1/replay', { method: 'POST', body: Object.assign({ dryRun: true }, f) });
        out.textContent = r.matched + ' dead letter' + (r.matched === 1 ? '' : 's') + ' match.';
        if (r.matched > 0) { checked = JSON.stringify(f); confirm.textContent = 'Replay ' + r.matched; confirm.hidden = false; }
      } catch (e) { out.textContent = e.message; }
    } });
    confirm.addEventListener('click', async () => {
      const f = filter();
      if (checked !== JSON.stringify(f)) { reset(); return; }
      confirm.disabled = true;
      try {
        const r = await api('/v1/replay', { method: 'POST', body: Object.assign({ dryRun: false }, f) });
        out.textContent = r.replayed + ' queued again.';
        confirm.hidden = true;
        checked = null;
      } catch (e) { out.textContent = e.message; } finally { confirm.disabled = false; }
    });
    return el('section', { class: 'card', id: 'bulk-replay' },
      el('h2', { text: 'Bulk replay' }),
      el('p', { class: 'muted', text: 'Count the dead letters that match first (a dry run); then replay exactly that filter. The time is when they died.' }),
      el('form', { class: 'filters', onsubmit: (ev) => ev.preventDefault() },
         el('label', {}, 'Destination', dest), el('label', {}, 'Died since', since), el('label', {}, 'Died before', until), dry, confirm),
      out);
  }

  // ---- Destinations -----------------------------------------------------------------------------------------
  async function destinationsView(view) {
    const data = await api('/v1/destinations');
    if (view !== state.view) return;
    const rows = data.destinations.map((d) => {
      const button = el('button', { type: 'button', class: d.paused ? 'resume primary' : 'pause danger', text: d.paused ? 'Resume' : 'Pause',
        onclick: async () => {
          button.disabled = true;
          try {
            await api('/v1/destinations/' + encodeURIComponent(d.name) + '/' + (d.paused ? 'resume' : 'pause'), { method: 'POST' });
            await destinationsView(state.view);
          } catch (e) { button.replaceWith(failure(e)); }
        } });
      return el('tr', { data: { destination: d.name, paused: d.paused, circuit: d.circuit.state } },
        el('td', { class: 'mono', text: d.name }), el('td', { text: d.adapter }), el('td', { text: d.auth || '—' }),
        el('td', { class: 'paused-state' }, badge(d.paused ? 'paused' : 'running')),
        el('td', { class: 'circuit-state' }, badge(d.circuit.state),
           d.circuit.consecutiveFailures ? el('span', { class: 'muted', text: ' ' + d.circuit.consecutiveFailures + ' failures' }) : '',
           d.circuit.reopensAt ? el('span', { class: 'muted', text: ' probe at ' + time(d.circuit.reopensAt) }) : ''),
        el('td', { class: 'num queue-depth', text: d.queue.depth }),
        el('td', { class: 'num', text: age(d.queue.oldestAgeSeconds) }),
        el('td', { class: 'num' }, d.queue.dead ? link('#/dead?destination=' + encodeURIComponent(d.name), String(d.queue.dead)) : '0'),
        el('td', {}, button));
    });
    show(el('h1', { text: 'Destinations' }),
      el('table', { class: 'destinations', id: 'destinations-table' },
        el('thead', {}, el('tr', {}, ['Destination', 'Adapter', 'Auth', 'State', 'Circuit', 'Queued', 'Oldest', 'Dead', ''].map((h, i) => el('th', { class: i >= 5 && i <= 7 ? 'num' : null, text: h })))),
        el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: 9, class: 'muted', text: 'No destination is configured.' })))),
      el('p', { class: 'muted', text: 'Paused: nothing new is claimed (attempts in flight finish); remembered across restarts. Refreshed every 5 s.' }));
    if (view === state.view) later(5000, () => destinationsView(view), view);
  }

  // ---- Rates (from /metrics) ----------------------------------------------------------------------------------
  function parseMetrics(text) {
    const out = new Map();
    for (const line of text.split('\n')) {
      if (!line || line[0] === '#') continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const labels = {};
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[3] || ''))) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
      out.set(m[1] + '|' + JSON.stringify(labels), { name: m[1], labels, value: Number(m[4]) });
    }
    return out;
  }
  function series(sample, name) { return [...sample.values()].filter((s) => s.name === name); }
  function sum(sample, name, pred) { return series(sample, name).filter((s) => !pred || pred(s.labels)).reduce((a, s) => a + s.value, 0); }
  function rate(prev, cur, seconds, name, pred) {
    const d = sum(cur.data, name, pred) - sum(prev.data, name, pred);
    return d < 0 ? 0 : d / seconds;   // a restart resets counters
  }
  async function ratesView(view) {
    const text = await api('/metrics');
    if (view !== state.view) return;
    const now = { at: performance.now(), data: parseMetrics(typeof text === 'string' ? text : '') };
    const prev = state.scrape;
    state.scrape = now;
    const seconds = prev ? (now.at - prev.at) / 1000 : 0;
    const fmt = (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(2)) + ' /s';
    const ready = prev && seconds > 0.2;
    const r = (name, pred) => (ready ? fmt(rate(prev, now, seconds, name, pred)) : '…');
    const tile = (label, id, name, pred) => el('div', { class: 'card', data: { rate: id } },
      el('div', { class: 'muted', text: label }), el('div', { class: 'rate', text: r(name, pred) }),
      el('div', { class: 'muted', text: sum(now.data, name, pred) + ' since start' }));
    const tiles = el('div', { class: 'tiles' },
      tile('Webhooks received', 'received', 'relay_webhooks_received_total'),
      tile('Rejected', 'rejected', 'relay_webhooks_rejected_total'),
      tile('Duplicates', 'duplicates', 'relay_webhooks_duplicate_total'),
      tile('Events stored', 'committed', 'relay_events_committed_total'),
      tile('Delivered', 'delivered', 'relay_deliveries_total', (l) => l.outcome === 'delivered'),
      tile('Retried', 'retry', 'relay_deliveries_total', (l) => l.outcome === 'retry'),
      tile('Dead-lettered', 'dead', 'relay_deliveries_total', (l) => l.outcome === 'dead'));
    const names = [...new Set(series(now.data, 'relay_queue_depth').map((s) => s.labels.destination))].sort();
    const outcomes = [...new Set(series(now.data, 'relay_deliveries_total').map((s) => s.labels.outcome))].sort();
    const gauge = (name, dest) => sum(now.data, name, (l) => l.destination === dest);
    const rows = names.map((dest) => {
      const byDest = (o) => (l) => l.destination === dest && l.outcome === o;
      let latency = '…';
      if (ready) {
        const dc = sum(now.data, 'relay_attempt_duration_seconds_count', (l) => l.destination === dest) - sum(prev.data, 'relay_attempt_duration_seconds_count', (l) => l.destination === dest);
        const ds = sum(now.data, 'relay_attempt_duration_seconds_sum', (l) => l.destination === dest) - sum(prev.data, 'relay_attempt_duration_seconds_sum', (l) => l.destination === dest);
        latency = dc > 0 ? (1000 * ds / dc).toFixed(1) + ' ms' : '—';
      }
      return el('tr', { data: { destination: dest } }, el('td', { class: 'mono', text: dest }),
        outcomes.map((o) => el('td', { class: 'num', text: r('relay_deliveries_total', byDest(o)) })),
        el('td', { class: 'num', text: latency }),
        el('td', { class: 'num', text: gauge('relay_queue_depth', dest) }),
        el('td', { class: 'num', text: age(gauge('relay_queue_oldest_age_seconds', dest)) }),
        el('td', { class: 'num', text: gauge('relay_deliveries_dead', dest) }));
    });
    const rejected = series(now.data, 'relay_webhooks_rejected_total').map((s) => s.labels.reason).filter(Boolean).sort();
    show(el('h1', { text: 'Rates' }),
      el('p', { class: 'muted', text: ready ? 'Per second over the last ' + seconds.toFixed(1) + ' s (two scrapes of /metrics); refreshed every 3 s.'
                                            : 'The first scrape of /metrics: rates appear with the next one (every 3 s).' }),
      tiles,
      el('h2', { text: 'By destination' }),
      el('table', { class: 'rates' },
        el('thead', {}, el('tr', {}, el('th', { text: 'Destination' }), outcomes.map((o) => el('th', { class: 'num', text: o + ' /s' })),
                             ['Mean attempt', 'Queued', 'Oldest', 'Dead'].map((h) => el('th', { class: 'num', text: h })))),
        el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { class: 'muted', colspan: 5, text: 'No destination.' })))),
      rejected.length ? [el('h2', { text: 'Rejected, by reason' }), el('table', {}, el('tbody', {}, rejected.map((reason) =>
        el('tr', {}, el('td', { text: reason }), el('td', { class: 'num', text: r('relay_webhooks_rejected_total', (l) => l.reason === reason) })))))] : []);
    if (view === state.view) later(3000, () => ratesView(view), view);
  }

  boot();
})();
"""#
}

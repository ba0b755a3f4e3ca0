// Origin Router dashboard. Hand-written, no libraries. Every string that
// comes from the store is put on the page with textContent or as an
// attribute value through the DOM API, never parsed as HTML.
'use strict';
(function () {
  const SVG = 'http://www.w3.org/2000/svg';
  const COLORS = ['#0969da', '#cf222e', '#1a7f37', '#8250df', '#bc4c00', '#1b7c83',
    '#6e7781', '#bf3989', '#4d2d00', '#0a3069'];
  const DASHES = ['', '7 3', '2 3', '10 3 2 3', '1 4'];
  const H = 260, L = 48, R = 10, T = 12, B = 26;
  // A narrower drawing on a phone, so its labels stay readable.
  function plotWidth() { return window.innerWidth < 600 ? 420 : 800; }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const k of Object.keys(attrs)) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function ms(v) {
    if (v === null || v === undefined) return '–';
    return (v < 10 ? v.toFixed(1) : String(Math.round(v))) + ' ms';
  }
  function age(v) {
    if (v === null || v === undefined) return 'from the future';
    if (v < 1000) return 'now';
    if (v < 120000) return Math.round(v / 1000) + ' s ago';
    if (v < 7200000) return Math.round(v / 60000) + ' min ago';
    return Math.round(v / 3600000) + ' h ago';
  }
  function clock(t) {
    const d = new Date(t);
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  }

  function setStatus(text, bad) {
    const s = document.getElementById('status');
    s.textContent = text;
    s.className = bad ? 'status error' : 'status';
  }

  function renderControls(c) {
    const body = document.getElementById('controls-body');
    body.replaceChildren();
    if (!c || !c.supported) {
      body.append(el('p', 'muted', 'This build has no drains or overrides.'));
      return;
    }
    if (c.items.length === 0) {
      body.append(el('p', 'muted', 'None in force.'));
      return;
    }
    const ul = el('ul', 'controls');
    for (const it of c.items) {
      const li = el('li', 'control ' + (it.kind === 'drain' ? 'drain' : 'override'));
      li.dataset.kind = it.kind;
      li.dataset.origin = it.origin;
      let text = it.kind + ': ' + it.origin + ' in pool ' + it.pool +
        (it.region ? ' (' + it.region + ')' : ' (every region)');
      if (it.reason) text += ' — ' + it.reason;
      if (it.until) text += ', until ' + clock(it.until);
      li.textContent = text;
      ul.append(li);
    }
    body.append(ul);
  }

  function renderMatrix(pool) {
    const wrap = el('div', 'scroll');
    const table = el('table', 'matrix');
    table.dataset.pool = pool.name;
    const head = el('tr');
    head.append(el('th', null, 'region'), el('th', null, 'uses'), el('th', null, 'age'));
    for (const o of pool.origins) head.append(el('th', null, o));
    const thead = el('thead');
    thead.append(head);
    const tbody = el('tbody');
    if (pool.rankings.length === 0) {
      const tr = el('tr');
      const td = el('td', 'muted', 'No region has published a ranking of this pool yet.');
      td.colSpan = 3 + pool.origins.length;
      tr.append(td);
      tbody.append(tr);
    }
    for (const r of pool.rankings) {
      const tr = el('tr', r.stale ? 'ranking stale' : 'ranking');
      tr.dataset.region = r.region;
      tr.dataset.top = r.top === null ? '' : r.top;
      tr.append(el('th', null, r.region));
      tr.append(el('td', 'top-name', r.top === null ? 'none up' : r.top));
      const a = el('td', 'age', age(r.age_ms));
      if (r.stale) a.append(el('span', 'stale-flag', 'STALE'));
      tr.append(a);
      const byId = new Map(r.origins.map(function (o) { return [o.id, o]; }));
      for (const id of pool.origins) {
        const o = byId.get(id);
        if (!o) {
          const td = el('td', 'cell absent', 'not ranked');
          td.dataset.origin = id;
          tr.append(td);
          continue;
        }
        const top = o.id === r.top;
        const td = el('td', 'cell ' + o.state + (top ? ' top' : ''));
        td.dataset.origin = o.id;
        td.dataset.state = o.state;
        const lat = el('div', 'lat', o.state === 'down' ? '–' : ms(o.latency_ms));
        if (top) lat.append(el('span', 'badge', 'top'));
        const st = el('div', 'state', o.state +
          (o.last_failure ? ' · ' + o.last_failure : '') +
          ' · ' + Math.round(o.success_ratio * 100) + '%');
        td.title = o.id + ' from ' + r.region + ': ' + o.down_votes + '/' + o.voters + ' workers hold it down';
        td.append(lat, st);
        tr.append(td);
      }
      tbody.append(tr);
    }
    table.append(thead, tbody);
    wrap.append(table);
    return wrap;
  }

  function renderPlot(pool, now) {
    const W = plotWidth();
    const box = el('div', 'plot-box');
    let t0 = now;
    let maxLat = 1;
    for (const s of pool.series) {
      for (const p of s.points) {
        if (p[0] < t0) t0 = p[0];
        if (p[1] !== null && p[1] > maxLat) maxLat = p[1];
      }
    }
    // Zoom to what the dashboard has seen, at least a minute of it.
    if (now - t0 < 60000) t0 = now - 60000;
    maxLat = maxLat * 1.15;
    const x = function (t) { return L + (t - t0) / (now - t0) * (W - L - R); };
    const y = function (v) { return T + (1 - v / maxLat) * (H - T - B); };
    const plot = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, class: 'plot', role: 'img' });
    plot.dataset.pool = pool.name;
    plot.append(svg('title', {}, 'latency of each origin from each region, pool ' + pool.name));
    for (let i = 0; i <= 4; i++) {
      const v = maxLat * i / 4;
      plot.append(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid' }));
      plot.append(svg('text', { x: L - 4, y: y(v) + 4, 'text-anchor': 'end' }, Math.round(v) + ''));
    }
    plot.append(svg('text', { x: 4, y: T + 2 }, 'ms'));
    const ticks = W < 600 ? 2 : 4;
    for (let i = 0; i <= ticks; i++) {
      const t = t0 + (now - t0) * i / ticks;
      plot.append(svg('text', { x: x(t), y: H - 8, 'text-anchor': i === 0 ? 'start' : i === ticks ? 'end' : 'middle' }, clock(t)));
    }
    plot.append(svg('line', { x1: L, x2: L, y1: T, y2: H - B, class: 'axis' }));
    plot.append(svg('line', { x1: L, x2: W - R, y1: H - B, y2: H - B, class: 'axis' }));

    for (const m of pool.markers) {
      if (m.at < t0) continue;
      const line = svg('line', { x1: x(m.at), x2: x(m.at), y1: T, y2: H - B,
        class: m.kind === 'top' ? 'mark-top marker' : 'mark-state marker' });
      line.dataset.kind = m.kind;
      line.dataset.region = m.region;
      line.append(svg('title', {}, markerText(m)));
      plot.append(line);
    }

    const regions = [];
    for (const r of pool.rankings) if (!regions.includes(r.region)) regions.push(r.region);
    for (const s of pool.series) if (!regions.includes(s.region)) regions.push(s.region);
    const legend = el('ul', 'legend');
    for (const s of pool.series) {
      const oi = Math.max(0, pool.origins.indexOf(s.origin));
      const color = COLORS[oi % COLORS.length];
      const dash = DASHES[Math.max(0, regions.indexOf(s.region)) % DASHES.length];
      let d = '';
      let pen = false;
      for (const p of s.points) {
        if (p[1] === null) {
          pen = false;
          plot.append(svg('circle', { cx: x(p[0]), cy: T + 3, r: 2.5, class: 'down-dot' }));
          continue;
        }
        d += (pen ? 'L' : 'M') + x(p[0]).toFixed(1) + ' ' + y(p[1]).toFixed(1) + ' ';
        pen = true;
      }
      const path = svg('path', { d: d.trim() || 'M0 0', class: 'series', stroke: color });
      if (dash) path.setAttribute('stroke-dasharray', dash);
      path.dataset.origin = s.origin;
      path.dataset.region = s.region;
      path.append(svg('title', {}, s.origin + ' from ' + s.region));
      plot.append(path);
      const li = el('li');
      const sw = svg('svg', { width: 26, height: 8 });
      const swl = svg('line', { x1: 0, x2: 26, y1: 4, y2: 4, stroke: color, 'stroke-width': 2 });
      if (dash) swl.setAttribute('stroke-dasharray', dash);
      sw.append(swl);
      li.append(sw, document.createTextNode(s.origin + ' from ' + s.region));
      legend.append(li);
    }
    box.append(plot, legend);
    if (pool.series.length === 0) box.append(el('p', 'muted', 'No history yet: the plot fills as rankings arrive.'));
    return box;
  }

  function markerText(m) {
    if (m.kind === 'top') {
      return clock(m.at) + ' ' + m.region + ': now uses ' + (m.to === null ? 'none (all down)' : m.to) +
        ' (was ' + (m.from === null ? 'none' : m.from) + ')';
    }
    return clock(m.at) + ' ' + m.region + ': ' + m.origin + ' ' + m.from + ' → ' + m.to +
      (m.reason ? ' (' + m.reason + ')' : '');
  }

  function renderEvents(pool) {
    const ul = el('ul', 'events');
    const recent = pool.markers.slice(-20).reverse();
    for (const m of recent) ul.append(el('li', m.kind, markerText(m)));
    if (recent.length === 0) ul.append(el('li', 'muted', 'No changes in the last hour.'));
    return ul;
  }

  function render(state) {
    const pools = document.getElementById('pools');
    pools.replaceChildren();
    for (const pool of state.pools) {
      const sec = el('section', 'card pool');
      sec.dataset.pool = pool.name;
      sec.append(el('h2', null, 'Pool ' + pool.name));
      sec.append(renderMatrix(pool));
      sec.append(el('h3', null, 'Latency from each region, last hour'));
      sec.append(renderPlot(pool, state.now_ms));
      sec.append(el('h3', null, 'Changes'));
      sec.append(renderEvents(pool));
      pools.append(sec);
    }
    if (state.pools.length === 0) pools.append(el('p', 'card muted', 'No pools configured and none in the store.'));
    renderControls(state.controls);
    const skipped = document.getElementById('skipped');
    const list = document.getElementById('skipped-list');
    list.replaceChildren();
    for (const s of state.skipped) list.append(el('li', null, s.pool + '/' + s.entry + ': ' + s.reason));
    skipped.hidden = state.skipped.length === 0;
    let text = state.store + ' · updated ' + clock(state.now_ms);
    if (state.error) text += ' · store read failed: ' + state.error + ' (showing the last good rankings)';
    setStatus(text, !!state.error);
    document.body.dataset.updated = String(state.now_ms);
  }

  // Long polling: each request asks for a snapshot newer than the one
  // shown, and the server answers when there is one (or after 20 s), so a
  // change shows as soon as the dashboard has read it.
  let timer = null;
  let version = 0;
  async function poll() {
    let wait = 250;
    try {
      const r = await fetch('/api/state?after=' + version, { cache: 'no-store' });
      if (!r.ok) throw new Error('HTTP ' + r.status);
      const state = await r.json();
      if (typeof state.version === 'number') version = state.version;
      render(state);
      if (!document.body.dataset.first) document.body.dataset.first = String(state.now_ms);
    } catch (e) {
      setStatus('cannot reach the dashboard: ' + e.message + ' (retrying)', true);
      wait = 2000;
    }
    timer = setTimeout(poll, wait);
  }
  poll();
  window.addEventListener('beforeunload', function () { if (timer) clearTimeout(timer); });
})();

// modelstream dashboard: polls /api/state and draws every panel as inline SVG.
// No library, no other origin: this file and style.css are all the page loads.
"use strict";

const POLL_MS = 1000;
const PALETTE = ["#58a6ff", "#3fb950", "#d29922", "#f85149", "#bc8cff", "#39c5cf",
                 "#ff7b72", "#a5d6ff", "#7ee787", "#e3b341"];
const SERVICE_COLORS = { ingest: 0, predict: 1, join: 2, monitor: 4, retrain: 5, dashboard: 9 };
let polls = 0;

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, c => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function colorFor(name, i) {
  return PALETTE[(name in SERVICE_COLORS ? SERVICE_COLORS[name] : i) % PALETTE.length];
}
function hms(ms) { return new Date(ms).toLocaleTimeString([], { hour12: false }); }
function fmt(v, unit) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  const s = a >= 1e6 ? (v / 1e6).toFixed(1) + "M" : a >= 1e4 ? (v / 1e3).toFixed(1) + "k"
    : a >= 100 ? v.toFixed(0) : a >= 1 ? v.toFixed(2).replace(/\.?0+$/, "") : v.toPrecision(2);
  return s + (unit || "");
}
// Drawn at the element's own pixel width, so text keeps its size in narrow and wide panels.
function widthOf(el) { return Math.max(320, Math.round(el.clientWidth || 640)); }
function lastValue(values) {
  for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i];
  return null;
}

// One line chart: t (ms) and series [{name, values, color, dash}].
function lineChart(el, t, series, opts = {}) {
  const W = widthOf(el), H = 170, L = 46, R = 8, T = 8, B = 18;
  const unit = el.dataset.unit || "";
  const points = series.reduce((n, s) => n + s.values.filter(v => v !== null).length, 0);
  el.dataset.series = series.map(s => s.name).join(",");
  el.dataset.points = String(points);
  el.dataset.last = JSON.stringify(Object.fromEntries(series.map(s => [s.name, lastValue(s.values)])));
  el.dataset.max = JSON.stringify(Object.fromEntries(series.map(s =>
    [s.name, s.values.reduce((m, v) => v === null ? m : m === null ? v : Math.max(m, v), null)])));
  if (!t.length || !points) {
    el.innerHTML = `<div class="empty">${esc(opts.empty || "waiting for data…")}</div>`;
    return;
  }
  let lo = opts.yMin ?? 0, hi = opts.yMax ?? -Infinity;
  for (const s of series) for (const v of s.values) if (v !== null) {
    if (opts.yMax === undefined) hi = Math.max(hi, v);
    if (opts.yMin === undefined) lo = Math.min(lo, v);
  }
  if (!(hi > lo)) hi = lo + 1;
  const t0 = t[0], t1 = Math.max(t[t.length - 1], t0 + 1);
  const x = ms => L + (W - L - R) * (ms - t0) / (t1 - t0);
  const y = v => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
  let svg = `<svg viewBox="0 0 ${W} ${H}" role="img"><g class="grid">`;
  for (let k = 0; k <= 3; k++) {
    const v = lo + (hi - lo) * k / 3;
    svg += `<line x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}"/>` +
      `<text x="${L - 4}" y="${y(v) + 3}" text-anchor="end">${esc(fmt(v))}</text>`;
  }
  svg += `</g><text x="${L}" y="${H - 4}">${hms(t0)}</text>` +
    `<text x="${W - R}" y="${H - 4}" text-anchor="end">${hms(t1)}</text>`;
  for (const s of series) {
    let d = "", pen = false;
    s.values.forEach((v, i) => {
      if (v === null) { pen = false; return; }
      d += `${pen ? "L" : "M"}${x(t[i]).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    });
    if (d) svg += `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.6"` +
      `${s.dash ? ' stroke-dasharray="5 3"' : ""} vector-effect="non-scaling-stroke"/>`;
    // A point with no neighbour draws no line: mark it.
    s.values.forEach((v, i) => {
      if (v !== null && (s.values[i - 1] ?? null) === null && (s.values[i + 1] ?? null) === null)
        svg += `<circle cx="${x(t[i]).toFixed(1)}" cy="${y(v).toFixed(1)}" r="2.5" fill="${s.color}"/>`;
    });
  }
  svg += "</svg>";
  const legend = series.map(s => `<span><i style="background:${s.color}"></i>${esc(s.name)} ` +
    `<b>${esc(fmt(lastValue(s.values), unit))}</b></span>`).join("");
  el.innerHTML = svg + `<div class="legend">${legend}</div>`;
}

function serviceSeries(byService) {
  return Object.entries(byService).map(([name, values], i) =>
    ({ name, values, color: colorFor(name, i) }));
}

function drawServices(state) {
  const el = document.getElementById("services");
  const stale = state.scraped_at && state.now - state.scraped_at > 4000 * state.scrape_seconds;
  el.innerHTML = Object.entries(state.services).map(([name, s]) => {
    const cls = s.up === s.replicas ? "up" : s.up ? "partial" : "down";
    const n = s.replicas > 1 ? ` ${s.up}/${s.replicas}` : "";
    return `<span class="pill ${cls}" data-service="${esc(name)}" data-up="${s.up}">${esc(name)}${n}</span>`;
  }).join("") + (stale ? '<span class="pill stale">scrapes stale</span>' : "");
}

function drawDeadLetters(rows) {
  const el = document.getElementById("dead_letters");
  el.dataset.rows = String(rows.length);
  if (!rows.length) { el.innerHTML = '<div class="empty">no dead letters</div>'; return; }
  const max = Math.max(...rows.map(r => r.count), 1);
  el.innerHTML = rows.slice(0, 14).map(r =>
    `<div class="row" data-reason="${esc(r.reason)}" data-count="${r.count}">` +
    `<span>${esc(r.service)} · <b>${esc(r.reason)}</b></span>` +
    `<div class="bar" style="width:${(100 * r.count / max).toFixed(1)}%"></div>` +
    `<span class="n">${r.count.toLocaleString()}</span></div>`).join("");
}

function drawQuality(versions) {
  const el = document.getElementById("quality");
  const times = [...new Set(versions.flatMap(v => v.t))].sort((a, b) => a - b);
  const series = [];
  versions.forEach((v, i) => {
    const at = new Map(v.t.map((ms, k) => [ms, k]));
    const color = PALETTE[i % PALETTE.length];
    const label = `${v.model} v${v.version} ${v.role}`;
    for (const [metric, dash] of [["accuracy", false], ["expected_accuracy", true]]) {
      const col = v.quality[metric] || [];
      series.push({ name: `${label} ${metric === "accuracy" ? "accuracy" : "estimate"}`, color, dash,
        values: times.map(ms => at.has(ms) ? (col[at.get(ms)] ?? null) : null) });
    }
  });
  lineChart(el, times, series, { yMin: 0, yMax: 1, empty: "no monitor snapshots yet" });
}

function heatColor(r) {
  // 0 → deep blue, 1 (the alarm threshold) → amber, ≥ 2 → red.
  const stops = [[0, [20, 48, 74]], [0.5, [47, 111, 159]], [1, [210, 153, 34]], [2, [248, 81, 73]]];
  const v = Math.max(0, Math.min(r, 2));
  for (let i = 1; i < stops.length; i++) {
    const [a, ca] = stops[i - 1], [b, cb] = stops[i];
    if (v <= b) {
      const f = (v - a) / (b - a);
      return `rgb(${ca.map((c, k) => Math.round(c + f * (cb[k] - c))).join(",")})`;
    }
  }
  return "rgb(248,81,73)";
}

function drawDrift(versions) {
  const el = document.getElementById("drift");
  let cells = 0, html = "";
  for (const v of versions.slice(0, 4)) {
    const h = v.drift;
    if (!h.features.length) continue;
    const cols = h.t.length, rowH = 14, L = 110, W = widthOf(el), H = rowH * h.features.length + 16;
    const cw = (W - L) / Math.max(cols, 1);
    let svg = `<svg viewBox="0 0 ${W} ${H}" role="img">`;
    h.features.forEach((f, r) => {
      svg += `<text x="${L - 6}" y="${r * rowH + 10}" text-anchor="end">${esc(f)}</text>`;
      h.cells[r].forEach((c, k) => {
        if (c === null) return;
        cells++;
        svg += `<rect x="${(L + k * cw).toFixed(2)}" y="${r * rowH}" width="${(cw + 0.5).toFixed(2)}"` +
          ` height="${rowH - 1}" fill="${heatColor(c)}"><title>${esc(f)} ${esc(fmt(c))}× at ${hms(h.t[k])}</title></rect>`;
      });
    });
    svg += `<text x="${L}" y="${H - 3}">${cols ? hms(h.t[0]) : ""}</text>` +
      `<text x="${W}" y="${H - 3}" text-anchor="end">${cols ? hms(h.t[cols - 1]) : ""}</text></svg>`;
    html += `<div class="heat"><h3>${esc(v.model)} v${esc(v.version)} ${esc(v.role)}</h3>${svg}</div>`;
    document.getElementById("drift_unit").textContent =
      h.unit === "threshold" ? "(worst statistic ÷ its calibrated threshold)" : "(PSI ÷ 0.2)";
  }
  el.dataset.cells = String(cells);
  el.innerHTML = html ? html + '<div class="scale">0 <span class="sw"></span> 2× the alarm threshold</div>'
    : '<div class="empty">no drift measured yet</div>';
}

function drawAlerts(alerts) {
  const el = document.getElementById("alerts");
  const rows = [...alerts.firing, ...alerts.resolved.slice(0, 15)];
  el.dataset.firing = String(alerts.firing.length);
  el.dataset.resolved = String(alerts.resolved.length);
  if (!rows.length) { el.innerHTML = '<div class="empty">no alerts</div>'; return; }
  el.innerHTML = "<table><tr><th>state</th><th>severity</th><th>since</th><th>version</th>" +
    "<th>what</th><th class=num>value</th><th class=num>threshold</th></tr>" +
    rows.map(a => `<tr class="${esc(a.state)}" data-alert="${esc(a.alert_id)}"><td>${esc(a.state)}</td>` +
      `<td class="sev-${esc(a.severity)}">${esc(a.severity)}</td>` +
      `<td>${hms(a.state === "firing" ? a.opened_at : a.raised_at)}</td>` +
      `<td>${esc(a.model)} v${esc(a.model_version)} ${esc(a.role)}</td><td>${esc(a.message)}</td>` +
      `<td class=num>${esc(fmt(a.value))}</td><td class=num>${esc(fmt(a.threshold))}</td></tr>`).join("") +
    "</table>";
}

function drawTimeline(state) {
  const el = document.getElementById("timeline");
  const list = document.getElementById("model_events");
  const events = state.model_events;
  el.dataset.events = String(events.length);
  const models = Object.keys(state.champions);
  if (!events.length) {
    el.innerHTML = '<div class="empty">no model.events yet</div>'; list.innerHTML = ""; return;
  }
  const t0 = Math.min(...events.map(e => e.time)), t1 = Math.max(state.now, t0 + 1);
  const W = widthOf(el), L = 90, laneH = 26, H = laneH * Math.max(models.length, 1) + 16;
  const x = ms => L + (W - L - 6) * (ms - t0) / (t1 - t0);
  let svg = `<svg viewBox="0 0 ${W} ${H}" role="img">`;
  const versionColor = {};
  models.forEach((m, r) => {
    svg += `<text x="${L - 6}" y="${r * laneH + 15}" text-anchor="end">${esc(m)}</text>`;
    for (const seg of state.champions[m]) {
      const key = m + "/" + seg.version;
      versionColor[key] ??= PALETTE[Object.keys(versionColor).length % PALETTE.length];
      const x0 = x(seg.from), x1 = x(seg.to ?? state.now);
      svg += `<rect class="champion" data-version="${esc(seg.version)}" x="${x0.toFixed(1)}" y="${r * laneH + 3}"` +
        ` width="${Math.max(x1 - x0, 2).toFixed(1)}" height="${laneH - 8}" rx="3" fill="${versionColor[key]}"` +
        ` opacity="0.75"><title>v${esc(seg.version)} champion ${hms(seg.from)} – ${seg.to ? hms(seg.to) : "now"}</title></rect>` +
        `<text x="${(x0 + 4).toFixed(1)}" y="${r * laneH + 15}" style="fill:#0f1419">v${esc(seg.version)}</text>`;
    }
    for (const e of events.filter(e => e.model === m)) {
      const bad = e.transition === "rolled_back" || e.transition === "rejected";
      svg += `<circle cx="${x(e.time).toFixed(1)}" cy="${r * laneH + laneH - 4}" r="3"` +
        ` fill="${bad ? "#f85149" : "#d8dee6"}"><title>${esc(e.transition)} v${esc(e.version)}</title></circle>`;
    }
  });
  svg += `<text x="${L}" y="${H - 2}">${hms(t0)}</text><text x="${W}" y="${H - 2}" text-anchor="end">now</text></svg>`;
  el.innerHTML = svg;
  list.innerHTML = "<table><tr><th>time</th><th>model</th><th>version</th><th>transition</th>" +
    "<th>actor</th><th>reason</th></tr>" + events.slice(-12).reverse().map(e =>
      `<tr data-transition="${esc(e.transition)}" data-applied="${e.applied}"><td>${hms(e.time)}</td><td>${esc(e.model)}</td>` +
      `<td>v${esc(e.version)}</td><td>${esc(e.transition)}</td><td>${esc(e.actor)}</td>` +
      `<td>${esc(e.applied ? e.reason : "refused: " + e.note)}</td></tr>`).join("") + "</table>";
}

function draw(state) {
  const s = state.series;
  drawServices(state);
  lineChart(document.getElementById("events_in"), s.t, serviceSeries(s.events_in));
  lineChart(document.getElementById("lag"), s.t, serviceSeries(s.lag));
  lineChart(document.getElementById("latency"), s.t, [
    { name: "p50", values: s.latency_p50_ms, color: PALETTE[0] },
    { name: "p99", values: s.latency_p99_ms, color: PALETTE[3] }], { empty: "no predictions yet" });
  lineChart(document.getElementById("cpu"), s.t, serviceSeries(s.cpu));
  lineChart(document.getElementById("memory_mb"), s.t, serviceSeries(s.memory_mb));
  drawDeadLetters(state.dead_letters);
  drawQuality(state.versions);
  drawDrift(state.versions);
  drawAlerts(state.alerts);
  drawTimeline(state);
  document.getElementById("clock").textContent = `updated ${hms(state.now)}`;
  document.body.dataset.polls = String(++polls);
  document.body.dataset.updated = String(state.now);
}

async function poll() {
  try {
    const resp = await fetch("/api/state", { cache: "no-store" });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    draw(await resp.json());
  } catch (err) {
    document.getElementById("clock").textContent = `disconnected (${err.message}); retrying`;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();

// crosscam web UI: plain JavaScript, no build step. Pages are hash routes; every datum comes from
// the daemon's API (/api/v1) and its WebSocket event stream; sign-in is a session cookie.
"use strict";

const $ = (sel, el = document) => el.querySelector(sel);
const main = () => $("#main");
let me = null;            // {user, role}
let socket = null;        // the event stream
const listeners = new Set();
let timers = [];          // cleared on every page change

function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of kids.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}
const svgEl = (tag, attrs = {}) => {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
};

function flash(msg, ok = false) {
  const f = $("#flash");
  f.textContent = msg;
  f.className = ok ? "ok" : "";
  f.hidden = !msg;
}

class ApiError extends Error {
  constructor(status, body) { super(body.detail || body.error || `HTTP ${status}`); this.status = status; this.code = body.error; }
}

async function api(path, opts = {}) {
  const init = { method: opts.method || "GET", headers: {}, credentials: "same-origin" };
  if (opts.json !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(opts.json); }
  if (opts.body !== undefined) { init.body = opts.body; init.headers["Content-Type"] = opts.type || "application/octet-stream"; }
  const r = await fetch(path, init);
  if (r.status === 401 && !path.endsWith("/login")) { me = null; go("#/login"); throw new ApiError(401, { detail: "please sign in" }); }
  const ct = r.headers.get("content-type") || "";
  const body = ct.includes("json") ? await r.json() : (r.status === 204 ? null : await r.text());
  if (!r.ok) throw new ApiError(r.status, body && typeof body === "object" ? body : { detail: String(body) });
  return body;
}

const fmtTime = ms => ms ? new Date(ms).toLocaleTimeString() : "–";
const fmtDate = ms => ms ? new Date(ms).toLocaleString() : "–";
// a time of today as the time only, of another day with its date
const fmtWhen = ms => !ms ? "–" : new Date(ms).toDateString() === new Date().toDateString() ? fmtTime(ms) : fmtDate(ms);
const fmtDur = x => { if (x === undefined || x === null) return "?"; const s = Math.round(x); return s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min` : s >= 60 ? `${Math.floor(s / 60)} min ${Math.round(s % 60)} s` : `${s} s`; };
const pct = x => x === null || x === undefined ? "–" : (100 * x).toFixed(1) + " %";

// ---- colours (the server draws with the same formulas: src/plot.rs) ---------------------------
// One colour per camera everywhere: the palette colour of the camera's place in the sorted list of
// the site's camera ids (FNV-1a hash of the id for a camera not in the list) — src/plot.rs
// camera_colour, used by the server's timelines.
const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
let cameraList = [];      // the site's cameras (GET /api/v1/cameras), for names and colours
async function loadCameras() { const { cameras } = await api("/api/v1/cameras"); cameraList = cameras; return cameras; }
const cameraName = id => cameraList.find(c => c.id === id)?.name || id;
function fnv1a(s) {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(s)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h >>> 0;
}
function cameraColour(id) {
  const ids = [...new Set(cameraList.map(c => c.id))].sort();
  let i = ids.indexOf(id);
  if (i < 0) i = fnv1a(id);
  return PALETTE[i % PALETTE.length];
}
function cameraChip(id) {
  const swatch = h("i", { "data-colour": cameraColour(id) });
  swatch.style.background = cameraColour(id);  // CSSOM: the CSP allows no style attributes
  return h("span", { class: "camchip", "data-camera-chip": id }, swatch, cameraName(id));
}
// An identity's colour: hues a golden-ratio step apart (src/plot.rs identity_colour); grey before
// a track is linked.
function hslRgb(hue, s, l) {
  const a = s * Math.min(l, 1 - l);
  const f = n => { const k = (n + hue * 12) % 12; return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1)))); };
  return [f(0), f(8), f(4)];
}
const idRgb = id => id === null || id === undefined ? [160, 160, 160] : hslRgb(((id * 0.618033988749895) % 1 + 1) % 1, 0.85, 0.5);
const idColour = id => `rgb(${idRgb(id).join(",")})`;
const can = need => me && (me.role === "admin" || (need === "operate" && me.role === "operator") || (need === "cameras" && me.role === "integrator") || need === "read");

function go(hash) { if (location.hash !== hash) location.hash = hash; else route(); }

// ---- event stream ---------------------------------------------------------------------------
function connectEvents() {
  if (socket) return;
  const proto = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${proto}://${location.host}/api/v1/events`);
  socket.onmessage = m => { let e; try { e = JSON.parse(m.data); } catch { return; } for (const l of listeners) l(e); };
  socket.onclose = () => { socket = null; if (me) setTimeout(connectEvents, 2000); };
}
function onEvent(fn) { listeners.add(fn); return () => listeners.delete(fn); }

function describe(e) {
  const cam = e.camera ? `[${cameraName(e.camera)}] ` : "";
  switch (e.type) {
    case "identity_created": return `${cam}new person #${e.identity}`;
    case "identity_linked": return `${cam}#${e.identity} seen again (${e.similarity.toFixed(2)}${e.uncertain ? ", uncertain" : ""})`;
    case "identity_merged": return `#${e.absorbed} merged into #${e.kept}: ${e.reason}`;
    case "identity_split": return `#${e.from} split: new #${e.to}`;
    case "camera_state": return `${cam}${e.state}${e.detail ? ": " + e.detail : ""}`;
    case "job_progress": return `job ${e.job}: ${e.label || e.phase}${e.total ? ` ${e.done}/${e.total}` : ""}`;
    case "job_finished": return `job ${e.job} ${e.status}`;
    case "retune_scheduled": return e.outcome === "started" ? `scheduled re-tune: job ${e.job} started (${e.reason})` : `scheduled re-tune skipped: ${e.reason}`;
    case "model_switch": return `model switch to ${e.to}: ${e.phase}${e.total ? ` ${e.done}/${e.total}` : ""}`;
    case "model_switched": return e.outcome === "switched" ? `model ${e.to} serves (was ${e.from})` : `model switch to ${e.to} failed: ${e.reason}`;
    case "lost": return `(${e.count} events missed)`;
    default: return null;
  }
}

// ---- pages ----------------------------------------------------------------------------------
const pages = {};

pages.login = async () => {
  const user = h("input", { id: "user", name: "user", autocomplete: "username", placeholder: "user name" });
  const pw = h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", placeholder: "password" });
  const form = h("form", { class: "card login", "data-testid": "login" },
    h("h1", { text: "Sign in to crosscam" }), user, pw, h("button", { class: "primary", type: "submit", text: "Sign in" }));
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    if (!user.value.trim() || !pw.value) { flash("Enter your user name and password."); return; }
    try {
      const r = await api("/api/v1/login", { method: "POST", json: { user: user.value, password: pw.value } });
      me = { user: r.user, role: r.role };
      flash("");
      setupNav();
      go("#/cameras");
    } catch (e) { flash(e.message); }
  });
  main().append(form);
  user.focus();
};

// What each camera state means to someone looking at the wall.
const STATE_TITLE = {
  live: "Live", connecting: "Connecting…", backoff: "Offline — retrying", stalled: "Stalled — no new frames",
  unauthorized: "Offline — credentials refused", not_found: "Offline — stream or file not found", stopped: "Stopped",
};

// Boxes and identity labels for one analysed frame. Labels sit above their box (inside it at the
// top edge), move down when they would cover another label, and stay inside the frame.
function drawBoxes(o, live) {
  o.replaceChildren();
  o.setAttribute("viewBox", `0 0 ${live.width} ${live.height}`);
  const placed = [];
  const fs = Math.max(12, Math.round(live.height / 28)), lh = fs + 4;
  for (const b of [...live.boxes].sort((p, q) => p.bbox[1] - q.bbox[1])) {
    const [x1, y1, x2, y2] = b.bbox;
    const c = idColour(b.identity);
    o.append(svgEl("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1, fill: "none", stroke: c, "stroke-width": 2, "data-identity": b.identity ?? "",
      // a box the tracker predicted (no detection on this frame: [analysis] detect_every / motion_gate)
      ...(b.predicted ? { "stroke-dasharray": "6 4", "data-predicted": "true" } : {}) }));
    if (b.identity === null || b.identity === undefined) continue;
    const text = `#${b.identity}`;
    const w = Math.round(fs * 0.62 * text.length) + 6;
    let x = Math.min(Math.max(0, x1), live.width - w);
    let y = y1 - lh >= 0 ? y1 - lh : y1;
    for (let k = 0; k < 8 && placed.some(p => x < p.x + p.w && p.x < x + w && y < p.y + p.h && p.y < y + lh); k++) y += lh;
    y = Math.min(y, live.height - lh);
    placed.push({ x, y, w, h: lh });
    o.append(svgEl("rect", { x, y, width: w, height: lh, fill: c, rx: 2, class: "label-bg" }));
    const [r, g, bl] = idRgb(b.identity);
    const ink = 0.299 * r + 0.587 * g + 0.114 * bl > 150 ? "#111" : "#fff";  // legible on light hues too
    const t = svgEl("text", { x: x + 3, y: y + fs, fill: ink, "font-size": fs, "font-weight": 700, class: "label" });
    t.textContent = text;
    o.append(t);
  }
}

pages.cameras = async () => {
  const wall = h("div", { class: "wall", "data-testid": "camera-wall" });
  const feed = h("div", { class: "card feed", "data-testid": "event-feed" }, h("strong", { text: "Live events" }));
  main().append(h("h1", { text: "Cameras" }), h("div", { class: "layout" }, wall, feed));
  const cards = new Map();
  const refresh = async () => {
    const cameras = await loadCameras();
    for (const c of cameras) {
      let card = cards.get(c.id);
      if (!card) {
        const img = h("img", { alt: "" });
        const overlay = svgEl("svg", { preserveAspectRatio: "xMidYMid meet" });
        const offline = h("div", { class: "offline", "data-testid": "offline", hidden: true }, h("strong", { class: "why" }), h("div", { class: "reason" }));
        card = { el: h("div", { class: "card cam", "data-camera": c.id },
          h("h3", {}, h("span", { class: "name" }), h("span", { class: "state" })),
          h("div", { class: "view" }, img, overlay, offline), h("div", { class: "counters" })), img, overlay, offline, frames: 0, busy: false, hasFrame: false };
        cards.set(c.id, card);
        wall.append(card.el);
      }
      const st = c.status || {};
      $(".name", card.el).replaceChildren(cameraChip(c.id));
      const s = $(".state", card.el); s.textContent = st.state || "unknown"; s.className = `state ${st.state || ""}`;
      s.title = st.detail || "";
      $(".counters", card.el).textContent = `${st.frames_in ?? 0} frames in · ${st.analysed ?? 0} analysed · ${st.dropped ?? 0} dropped · ${st.reconnects ?? 0} reconnects`;
      card.el.dataset.analysed = st.analysed ?? 0;
      card.el.dataset.state = st.state || "";
      const down = st.state && st.state !== "live";
      card.el.classList.toggle("down", !!down);
      if (down) {
        $(".why", card.offline).textContent = STATE_TITLE[st.state] || st.state;
        $(".reason", card.offline).textContent = st.detail ? `Reason: ${st.detail}` : "No reason given.";
        card.offline.hidden = false;
      } else if (card.hasFrame || st.state !== "live") {
        card.offline.hidden = true;
      } else {
        $(".why", card.offline).textContent = "Waiting for the first analysed frame…";
        $(".reason", card.offline).textContent = "";
        card.offline.hidden = false;
      }
      if (!card.busy) { card.busy = true; updateView(c.id, card).finally(() => { card.busy = false; }); }
    }
    for (const [id, card] of cards) if (!cameras.find(c => c.id === id)) { card.el.remove(); cards.delete(id); }
  };
  // frame and boxes come from one response (the same analysed frame), drawn together
  const updateView = async (id, card) => {
    let live;
    try { live = await api(`/api/v1/cameras/${encodeURIComponent(id)}/live?frame=true`); }
    catch (e) { if (e.status !== 503 && e.status !== 404) flash(e.message); return; }
    if (!live.frame_jpeg || live.t_ms === card.t_ms) return;
    const next = new Image();
    await new Promise(ok => { next.onload = next.onerror = ok; next.src = `data:image/jpeg;base64,${live.frame_jpeg}`; });
    if (!next.naturalWidth) return;
    card.img.src = next.src;
    card.img.alt = `${cameraName(id)} at ${fmtTime(live.t_ms)}`;
    drawBoxes(card.overlay, live);
    card.t_ms = live.t_ms;
    card.hasFrame = true;
    card.frames++;
    card.el.dataset.frames = card.frames;
    card.el.dataset.tMs = live.t_ms;
    if (card.el.dataset.state === "live") card.offline.hidden = true;
  };
  await refresh();
  timers.push(setInterval(() => refresh().catch(() => {}), 1000));
  timers.push(onEvent(e => {
    const text = describe(e);
    if (!text) return;
    const line = h("div", {}, h("span", { class: "muted", text: fmtTime(e.t_ms) + " " }), text);
    if (e.identity) { line.append(" "); line.append(h("a", { href: `#/identity/${e.identity}`, text: "open" })); }
    feed.insertBefore(line, feed.children[1] || null);
    while (feed.children.length > 200) feed.lastChild.remove();
  }));
};

pages.identities = async () => {
  const cameras = await loadCameras();
  const cam = h("select", { id: "filter-camera" }, h("option", { value: "", text: "all cameras" }), cameras.map(c => h("option", { value: c.id, text: c.name })));
  const since = h("select", { id: "filter-since" }, [["", "any time"], ["600000", "last 10 min"], ["3600000", "last hour"], ["86400000", "last day"]].map(([v, t]) => h("option", { value: v, text: t })));
  const body = h("tbody");
  const load = async () => {
    const q = new URLSearchParams({ limit: "200" });
    if (cam.value) q.set("camera", cam.value);
    if (since.value) q.set("since_ms", String(Date.now() - Number(since.value)));
    const r = await api(`/api/v1/identities?${q}`);
    body.replaceChildren(...r.identities.map(i => h("tr", { "data-identity": i.id },
      h("td", { class: "thumb" }, h("a", { href: `#/identity/${i.id}`, title: `open person #${i.id}` },
        i.thumbnail ? h("img", { src: i.thumbnail, alt: `person #${i.id}`, loading: "lazy" }) : h("span", { class: "muted", text: "no crop" }))),
      h("td", {}, h("a", { href: `#/identity/${i.id}`, text: `#${i.id}` })),
      h("td", {}, i.cameras.map(cameraChip)), h("td", { text: i.sightings }),
      h("td", { text: fmtWhen(i.created_ms) }), h("td", { text: fmtWhen(i.last_seen_ms) }))));
    count.textContent = `${r.total} identities`;
  };
  const count = h("span", { class: "muted" });
  cam.onchange = since.onchange = () => load().catch(e => flash(e.message));
  const offset = -new Date().getTimezoneOffset();
  main().append(h("h1", { text: "Identities" }), h("div", { class: "row" }, cam, since, count),
    h("table", { "data-testid": "identities" }, h("thead", {}, h("tr", {}, ["", "Identity", "Cameras", "Sightings", "First seen", "Last seen"].map(t => h("th", { text: t })))), body),
    h("div", { class: "timeline card" }, h("img", { src: `/api/v1/timeline.svg?min_cameras=1&utc_offset_min=${offset}`, alt: "site timeline: who went where, when", "data-testid": "site-timeline" })));
  await load();
};

// Wall-clock ticks (local time) at a round step, about `target` of them (src/report.rs time_ticks).
function timeTicks(t0, t1, target = 7) {
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  const span = Math.max(1, (t1 - t0) / 1000);
  const step = steps.find(s => span / s <= target) || 86400;
  const off = -new Date(t0).getTimezoneOffset() * 60;
  const out = [];
  for (let t = Math.floor((t0 / 1000 + off) / step) * step; (t - off) * 1000 <= t1; t += step) {
    const ms = (t - off) * 1000;
    if (ms >= t0) out.push([ms, new Date(ms).toLocaleTimeString([], step >= 60 ? { hour: "2-digit", minute: "2-digit" } : {})]);
  }
  return out;
}

function drawTimeline(steps) {
  const cams = [...new Set(steps.map(s => s.camera))].sort((a, b) => cameraName(a).localeCompare(cameraName(b)));
  const t0 = Math.min(...steps.map(s => s.start_ms)), t1 = Math.max(...steps.map(s => s.end_ms), t0 + 1000);
  const W = 900, left = 130, rowH = 28, H = 50 + cams.length * rowH;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, "data-testid": "timeline" });
  const x = t => left + (t - t0) / (t1 - t0) * (W - left - 30);
  const bottom = 10 + cams.length * rowH;
  for (const [ms, label] of timeTicks(t0, t1)) {
    svg.append(svgEl("line", { x1: x(ms), x2: x(ms), y1: 10, y2: bottom, stroke: "#e5e7eb" }));
    const t = svgEl("text", { x: x(ms), y: bottom + 16, "text-anchor": "middle", "font-size": 12, fill: "#6b7280" }); t.textContent = label; svg.append(t);
  }
  cams.forEach((c, i) => {
    const y = 10 + i * rowH;
    const label = svgEl("text", { x: left - 8, y: y + 18, "text-anchor": "end", "font-size": 13 }); label.textContent = cameraName(c); svg.append(label);
    svg.append(svgEl("line", { x1: left, x2: W - 30, y1: y + rowH / 2, y2: y + rowH / 2, stroke: "#e5e7eb" }));
    for (const s of steps.filter(s => s.camera === c)) {
      const r = svgEl("rect", { x: x(s.start_ms), y: y + 4, width: Math.max(3, x(s.end_ms) - x(s.start_ms)), height: rowH - 8, rx: 3, fill: cameraColour(c), "fill-opacity": s.decision === "uncertain" ? 0.45 : 1, "data-camera": c });
      const tip = svgEl("title"); tip.textContent = `${cameraName(c)}: ${fmtTime(s.start_ms)}–${fmtTime(s.end_ms)} (tracklet ${s.tracklet}, ${s.decision})`; r.append(tip);
      svg.append(r);
    }
  });
  const axis = svgEl("text", { x: left, y: H - 6, "font-size": 12, fill: "#6b7280" });
  axis.textContent = new Date(t0).toLocaleDateString();
  svg.append(axis);
  return svg;
}

pages.identity = async ([id]) => {
  await loadCameras();
  const r = await api(`/api/v1/identities/${encodeURIComponent(id)}`);
  const tl = await api(`/api/v1/identities/${encodeURIComponent(id)}/timeline`);
  const i = r.identity;
  const operate = can("operate");
  // crops by tracklet: each sighting is one group of crops
  const cropsOf = new Map();
  for (const c of r.cameras) for (const k of c.crops) { if (!cropsOf.has(k.tracklet)) cropsOf.set(k.tracklet, []); cropsOf.get(k.tracklet).push(k); }
  const picked = new Set();
  const splitBar = h("div", { class: "split-bar card", "data-testid": "split-bar", hidden: !operate });
  const pickedText = h("span", { "data-testid": "split-count" });
  const reason = h("input", { id: "merge-reason", placeholder: "reason (optional)", size: 30 });
  const updatePicked = () => { pickedText.textContent = picked.size ? `${picked.size} sighting(s) picked` : "Click sightings below to pick the ones that are somebody else."; };
  updatePicked();
  const group = s => {
    const crops = cropsOf.get(s.tracklet) || [];
    const g = h(operate ? "button" : "div", { class: "sighting", type: operate ? "button" : null, "data-tracklet": s.tracklet, "aria-pressed": operate ? "false" : null,
      title: `tracklet ${s.tracklet}${s.similarity !== null && s.similarity !== undefined ? `, similarity ${s.similarity.toFixed(2)}` : ""}, ${s.decision}` },
      h("div", { class: "when" }, `${fmtTime(s.start_ms)}–${fmtTime(s.end_ms)}`, s.decision === "uncertain" ? h("span", { class: "badge possible", text: "uncertain" }) : null),
      h("div", { class: "crops" }, crops.length ? crops.map(k => h("img", { src: k.url, alt: `crop ${k.id}`, title: `quality ${k.quality.toFixed(2)}` })) : h("span", { class: "muted", text: "no crop stored" })));
    if (operate) g.addEventListener("click", () => {
      if (picked.has(s.tracklet)) picked.delete(s.tracklet); else picked.add(s.tracklet);
      g.setAttribute("aria-pressed", picked.has(s.tracklet) ? "true" : "false");
      g.classList.toggle("picked", picked.has(s.tracklet));
      flash("");
      updatePicked();
    });
    return g;
  };
  const byCamera = r.cameras.map(c => h("div", { class: "card percam", "data-camera": c.camera },
    h("div", { class: "percam-head" }, cameraChip(c.camera), h("span", { class: "muted", text: `  ${c.sightings} sighting(s), ${fmtTime(c.first_ms)}–${fmtTime(c.last_ms)}` })),
    h("div", { class: "sightings" }, r.sightings.filter(s => s.camera === c.camera).sort((a, b) => a.start_ms - b.start_ms).map(group))));
  main().append(...[h("h1", { "data-testid": "identity-title", text: `Person #${i.id}` }),
    h("p", { class: "muted", text: `first seen ${fmtWhen(i.created_ms)} · last seen ${fmtWhen(i.last_seen_ms)} · ${i.sightings} sightings on ${i.cameras.length} camera(s)${i.merged_into ? ` · merged into #${i.merged_into}` : ""}` }),
    h("h2", { text: "Timeline: who went where, when" }),
    h("div", { class: "timeline card" }, tl.timeline.length ? drawTimeline(tl.timeline) : h("span", { class: "muted", text: "no sightings" })),
    h("h2", { text: "Sightings by camera" }),
    operate ? splitBar : null,
    ...byCamera].filter(Boolean));
  if (!operate) return;
  const split = h("button", { id: "split", class: "primary", text: "Split them off into a new person", onclick: async () => {
    if (!picked.size) { flash("Pick at least one sighting to split off: click its crops below."); return; }
    if (picked.size === r.sightings.length) { flash("You picked every sighting: leave at least one with this person (or merge instead)."); return; }
    try { const s = await api(`/api/v1/identities/${id}/split`, { method: "POST", json: { tracklets: [...picked], reason: reason.value } }); flash(`split off as #${s.to}`, true); go(`#/identity/${s.to}`); }
    catch (e) { flash(e.message); }
  } });
  splitBar.append(h("strong", { text: "Split: " }), pickedText, " ", split);
  const absorb = h("input", { id: "merge-absorb", type: "number", min: 1, placeholder: "person number" });
  main().append(h("h2", { text: "Correct this identity" }),
    h("div", { class: "row" }, "Same person as #", absorb, "— merge it into this one.", reason,
      h("button", { id: "merge", onclick: async () => {
        const n = Number(absorb.value);
        if (!absorb.value || !Number.isInteger(n) || n < 1) { flash("Type the number of the other person (e.g. 17) to merge into this one."); return; }
        if (String(n) === String(i.id)) { flash("That is this person: type another person's number."); return; }
        try { await api(`/api/v1/identities/${id}/merge`, { method: "POST", json: { absorb: n, reason: reason.value } }); flash(`#${n} merged into #${id}`, true); route(); }
        catch (e) { flash(e.message); }
      }, text: "Merge" })),
    h("p", { class: "muted", text: "The reason is recorded with your name in the audit trail, for merges and splits." }));
};

pages.search = async () => {
  await loadCameras();
  const file = h("input", { id: "search-file", type: "file", accept: "image/jpeg,image/png" });
  const out = h("div", { "data-testid": "search-results" });
  const legend = h("p", { class: "muted", "data-testid": "search-legend" });
  file.onchange = async () => {
    const f = file.files[0]; if (!f) return;
    out.replaceChildren(h("span", { class: "muted", text: "searching…" }));
    legend.textContent = "";
    try {
      const r = await api("/api/v1/search?k=12", { method: "POST", body: f, type: f.type || "image/jpeg" });
      const cal = r.calibration;
      const from = { manifest: "the embedder's calibration in the model manifest", config: "the [linking] values of the site's config", default: "built-in defaults: this embedder has no calibration" };
      if (cal) legend.textContent = `How likely a match is the same person, by ${from[cal.origin] || cal.origin}: likely from ${cal.likely_from.toFixed(2)} (as similar as the linker needs to link a sighting to a person), possible from ${cal.possible_from.toFixed(2)}, unlikely below. A picture of someone never seen still gets a closest match — look at the band, not at the rank.`;
      out.replaceChildren(...(r.matches.length ? r.matches.map(m => h("a", { class: `match card ${m.band || ""}`, href: `#/identity/${m.identity}`, "data-identity": m.identity, "data-band": m.band || "", "data-similarity": m.similarity },
        m.crop ? h("img", { src: m.crop, alt: `person #${m.identity}` }) : h("div", { class: "nocrop", text: "(no crop)" }),
        h("div", {}, h("strong", { text: `#${m.identity}` }), ` · ${m.similarity.toFixed(2)} `, m.band ? h("span", { class: `badge ${m.band}`, text: m.band }) : null),
        h("div", { class: "where" }, (m.cameras || []).map(cameraChip)),
        h("div", { class: "muted when", text: `last seen ${fmtWhen(m.last_seen_ms)}` }))) : [h("span", { text: "no identities yet" })]));
    } catch (e) { out.replaceChildren(); flash(e.message); }
  };
  main().append(h("h1", { text: "Search by image" }), h("p", { class: "muted", text: "Upload a picture of a person (a crop of one person works best); the most similar identities come first." }), file, legend, out);
};

// Plain-language checks of the camera form, before anything is sent (the server checks again).
function cameraFormErrors(id, url) {
  const errs = {};
  if (!id) errs.id = "Give the camera an id, e.g. lobby (letters, digits, - or _).";
  else if (!/^[A-Za-z0-9_-]+$/.test(id)) errs.id = `"${id}" cannot be an id: use only letters, digits, - or _ (no spaces).`;
  if (!url) errs.url = "Give the camera's address: rtsp://host/path for a network camera, file:///path/video.mp4 for a recording, v4l2:///dev/video0 for a local camera.";
  else if (!/^(rtsps?:\/\/[^/\s]+|file:\/\/\/?.+|v4l2:\/\/|test:)/.test(url)) errs.url = `"${url}" is not a camera address: start it with rtsp://, rtsps://, file:// or v4l2://.`;
  else if (/^rtsp/.test(url) && /\s/.test(url)) errs.url = "An RTSP address cannot contain spaces (write %20).";
  return errs;
}

pages.manage = async () => {
  const manage = can("cameras");
  const body = h("tbody");
  const head = h("tr");
  const site = h("div", { "data-testid": "site" });
  const load = async () => {
    const cameras = await loadCameras();
    // a core places its cameras on the edges: where each runs comes from the site's leases
    const st = await api("/api/v1/status").catch(() => null);
    const cl = st && st.pipeline && st.pipeline.cluster;
    const core = !!cl && cl.role === "core";
    const where = core ? Object.fromEntries((cl.placement || []).map(a => [a.camera, a.edge || ""])) : {};
    head.replaceChildren(...["Name", "Id", "URL", "State", ...(core ? ["Runs on"] : []), "Counters", ""].map(t => h("th", { text: t })));
    site.replaceChildren(...(cl ? siteView(cl) : []));
    body.replaceChildren(...cameras.map(c => h("tr", { "data-camera": c.id },
      h("td", {}, cameraChip(c.id)), h("td", {}, c.id, c.origin === "api" ? h("div", { class: "muted small", "data-origin": "api", text: "set through the API" }) : c.origin === "site" ? h("div", { class: "muted small", "data-origin": "site", text: "assigned by the site" }) : null), h("td", { text: c.url }),
      h("td", {}, h("span", { class: `state ${c.status?.state || ""}`, text: c.status?.state || (core ? "on an edge" : "–") }), c.status?.detail && c.status.state !== "live" ? h("div", { class: "muted small", text: c.status.detail }) : null),
      ...(core ? [h("td", { "data-runs-on": where[c.id] || "", class: where[c.id] ? "" : "error", text: where[c.id] || "waiting for an edge" })] : []),
      h("td", { text: core ? "on the edge" : `${c.status?.frames_in ?? 0} in / ${c.status?.analysed ?? 0} analysed / ${c.status?.reconnects ?? 0} reconnects` }),
      h("td", {}, manage ? h("button", { class: "danger cam-remove", onclick: async () => {
        if (!confirm(`Remove camera ${c.id}?`)) return;
        try { await api(`/api/v1/cameras/${encodeURIComponent(c.id)}`, { method: "DELETE" }); flash(`camera ${c.id} removed`, true); load(); } catch (e) { flash(e.message); }
      }, text: "Remove" }) : null))));
  };
  main().append(h("h1", { text: "Manage cameras" }),
    h("table", { "data-testid": "camera-table" }, h("thead", {}, head), body), site);
  timers.push(setInterval(() => load().catch(() => {}), 5000));
  if (!manage) {
    main().append(h("p", { class: "muted", "data-testid": "manage-readonly", text: `Your role (${me.role}) may look at the cameras; adding, changing and removing them needs an integrator or admin.` }));
    await load();
    return;
  }
  const id = h("input", { id: "cam-id", placeholder: "id (e.g. lobby)" });
  const name = h("input", { id: "cam-name", placeholder: "name (e.g. Lobby)" });
  const url = h("input", { id: "cam-url", placeholder: "rtsp://host/stream", size: 40 });
  const idErr = h("div", { class: "field-error", "data-testid": "cam-id-error" });
  const urlErr = h("div", { class: "field-error", "data-testid": "cam-url-error" });
  const cred = h("input", { id: "cam-credential", placeholder: "credential (optional)" });
  const add = h("button", { class: "primary", id: "cam-save", text: "Add or change", onclick: async () => {
    const errs = cameraFormErrors(id.value.trim(), url.value.trim());
    idErr.textContent = errs.id || ""; urlErr.textContent = errs.url || "";
    id.classList.toggle("invalid", !!errs.id); url.classList.toggle("invalid", !!errs.url);
    if (errs.id || errs.url) { flash("Fix the marked fields: nothing was sent."); return; }
    flash("");
    try {
      const r = await api(`/api/v1/cameras/${encodeURIComponent(id.value.trim())}`, { method: "PUT", json: { id: id.value.trim(), name: name.value || undefined, url: url.value.trim(), credential: cred.value.trim() || undefined } });
      flash(`camera ${r.id} saved`, true); load();
    } catch (e) { flash(e.message); }
  } });
  main().append(h("h2", { text: "Add or change a camera" }),
    h("div", { class: "form-grid" },
      h("label", { for: "cam-id", text: "Id" }), h("div", {}, id, idErr),
      h("label", { for: "cam-name", text: "Name" }), h("div", {}, name, h("div", { class: "muted small", text: "shown on the wall and in timelines; the id if left out" })),
      h("label", { for: "cam-url", text: "Address" }), h("div", {}, url, urlErr),
      h("label", { for: "cam-credential", text: "Credential" }), h("div", {}, cred, h("div", { class: "muted small", text: "the name of a credential an admin registered; its user name and password are never shown" })),
      h("span"), h("div", {}, add)),
    h("p", { class: "muted", text: "RTSP credentials: name a credential an admin registered (PUT /api/v1/credentials/{name}); its user name and password are never shown. A password in the URL is stored and shown redacted." }));
  await load();
};

// The site's edges as a core sees them (heartbeats and what it took from the stream), or what
// an edge is part of.
function siteView(cl) {
  if (cl.role === "edge") {
    return [h("p", { class: "muted", "data-testid": "edge-role", text: `This process is the edge ${cl.name} of site ${cl.site}: it runs the cameras the site's core assigned to it (${(cl.assigned || []).join(", ") || "none yet"}) and its own. Cameras are defined, and people followed, at the core.` })];
  }
  const edges = cl.edges || [];
  const num = (v, unit = "") => v === null || v === undefined ? "–" : `${v}${unit}`;
  return [
    h("h2", { text: "Edges" }),
    h("p", { class: "muted", text: `Site ${cl.site}: the cameras above are defined here and run on the live edges below, shared out by each edge's measured speed (how many cameras its analysis keeps up with); when an edge stops, its cameras move to the others within a few seconds.` }),
    h("table", { "data-testid": "edges" },
      h("thead", {}, h("tr", {}, ["Edge", "Heartbeat", "Cameras it runs", "CPU busy / keeps up with", "Waiting for the broker / dropped", "Messages", "Lag", "Last heard"].map(t => h("th", { text: t })))),
      h("tbody", {}, ...(edges.length ? edges.map(e => h("tr", { "data-edge": e.edge },
        h("td", { text: e.edge }),
        h("td", {}, h("span", { class: `state ${e.alive ? "live" : "stalled"}`, text: e.alive ? "alive" : "silent" })),
        h("td", {}, ...((e.assigned || []).length ? e.assigned.map(cameraChip) : [h("span", { class: "muted", text: "none" })]), ...((e.own || []).length ? [h("span", { class: "muted small", text: ` + its own: ${e.own.join(", ")}` })] : [])),
        h("td", { text: `${e.load === null || e.load === undefined ? "–" : Math.round(e.load * 100) + " %"} / ${e.speed === null || e.speed === undefined ? "–" : e.speed.toFixed(1) + " cameras"}` }),
        h("td", { text: `${num(e.buffered)} / ${num(e.dropped)}` }),
        h("td", { text: num(e.messages) }),
        h("td", { text: num(e.lag_ms, " ms") }),
        h("td", { text: fmtWhen(Math.max(e.last_ms || 0, e.heartbeat_ms || 0)) }))) : [h("tr", {}, h("td", { colspan: 8, class: "muted", text: "No edge has been heard from yet." }))]))),
  ];
}

// What a finished job did, in words.
// A decision ends with its full stop before the next sentence follows.
const sentence = (t) => { const s = String(t).trim(); return s && !/[.!?]$/.test(s) ? s + "." : s; };

function jobOutcome(j) {
  const r = j.report || {};
  const serving = r.serving_after || r.serving_before;
  const took = r.seconds !== undefined ? ` after ${fmtDur(r.seconds)}` : "";
  switch (r.status) {
    case "promoted": return `Promoted${took}: ${r.serving_after || "the new model"} is now the registry's current model.${r.decision ? " " + sentence(r.decision) : ""}`;
    case "rejected": return `Not promoted${took}: ${sentence(r.decision || "the candidate was not better")}${r.candidate ? ` The candidate is kept as ${r.candidate}; Promote anyway makes it current.` : ""} Nothing else changed.`;
    case "cancelled": return `Cancelled${took}. Nothing changed: ${serving ? `${serving} stays the current model` : "the current model stays"} and the registry is as it was.`;
    case "failed": return `Failed${took}: ${r.error || "no reason recorded"}. Nothing changed.`;
    default: return `${r.status || j.state}${r.decision || r.error ? ": " + (r.decision || r.error) : ""}`;
  }
}

const SCENARIOS = [
  ["S4", "S4 — re-tune the serving model on this site's stored crops (no labels needed)"],
  ["S0", "S0 — no training: score the serving model as it is"],
  ["S1", "S1 — prune, re-tune by distillation, then fine-tune on labelled source data"],
  ["S2", "S2 — prune gradually while fine-tuning on labelled source data"],
  ["S3", "S3 — fine-tune on labelled source data, then prune and re-tune"],
  ["S5", "S5 — a fresh smaller network of the target cost, distilled then re-tuned on site"],
];

pages.jobs = async () => {
  const scenario = h("select", { id: "job-scenario", title: "How the candidate model is made (docs/retuning.md)" }, SCENARIOS.map(([v, t]) => h("option", { value: v, text: t })));
  const budget = h("input", { id: "job-budget", value: "1ep", size: 6, title: "How long to train: epochs (1ep = one pass over the stored crops) or time (30m, 2h)" });
  const macs = h("input", { id: "job-macs", value: "1.0", size: 5, title: "Share of the serving model's compute (multiply-accumulates) the new model may use: 1.0 = no pruning, 0.5 = half" });
  const jobsBody = h("tbody");
  const modelsBody = h("tbody");
  const compare = h("div", { "data-testid": "job-compare" });
  const start = h("button", { class: "primary", id: "job-start", text: "Start re-tune", onclick: async () => {
    const m = Number(macs.value);
    if (!budget.value.trim()) { flash("Training budget: write a number of epochs (1ep) or a time (30m, 1h30m)."); return; }
    if (!(m > 0.05 && m <= 1)) { flash("Target MACs share: a number above 0.05 and at most 1.0 (1.0 = no pruning, 0.5 = half the compute)."); return; }
    try {
      const j = await api("/api/v1/jobs", { method: "POST", json: { scenario: scenario.value, budget: budget.value.trim(), target_macs: m } });
      flash(`job ${j.id} started`, true); load();
    } catch (e) { flash(e.message); }
  } });
  const score = (s) => s ? `${pct(s.rank1)} / ${pct(s.mAP)} · ${(s.macs / 1e9).toFixed(3)} GMACs` : "–";
  const showCompare = (j) => {
    const r = j.report || {};
    const cls = (a, b) => a === undefined || b === undefined ? "" : (b > a ? "better" : b < a ? "worse" : "");
    compare.replaceChildren(...[h("h2", { text: r.old || r.new ? `Job ${j.id}: old vs new on held-out crops` : `Job ${j.id}` }),
      r.old || r.new ? h("table", {}, h("thead", {}, h("tr", {}, ["", "rank-1", "mAP", "GMACs", "params"].map(t => h("th", { text: t })))),
        h("tbody", {}, ["old", "new"].map(k => r[k] ? h("tr", {}, h("td", { text: k === "old" ? `serving (${r.serving_before || "?"})` : "candidate" }),
          h("td", { class: k === "new" ? cls(r.old?.rank1, r.new?.rank1) : "", text: pct(r[k].rank1) }),
          h("td", { class: k === "new" ? cls(r.old?.mAP, r.new?.mAP) : "", text: pct(r[k].mAP) }),
          h("td", { text: (r[k].macs / 1e9).toFixed(3) }), h("td", { text: (r[k].params / 1e6).toFixed(2) + " M" })) : null))) : null,
      r.status && r.status !== "failed" && r.status !== "cancelled" ? labelGateView(r.labels) : null,
      h("p", { class: `outcome ${r.status || ""}`, "data-testid": "job-outcome", text: jobOutcome(j) }),
      r.status === "failed" && j.log && j.log.length ? h("details", {}, h("summary", { text: "the job's last lines" }), h("pre", { text: j.log.join("\n") })) : null,
      ...(r.candidate ? [h("button", { text: `Promote ${r.candidate} anyway`, onclick: () => promote(r.candidate) })] : [])].filter(Boolean));
  };
  const promote = async (v) => { try { await api(`/api/v1/models/${v}/promote`, { method: "POST" }); flash(`switching to ${v}: the gallery is re-embedded first, ${v} serves when it is done`, true); load(); } catch (e) { flash(e.message); } };
  const progressCell = j => {
    if (j.state !== "running") return h("td", { class: "job-outcome-short", text: jobOutcome(j) });
    const known = j.total > 0;
    const bar = known ? h("progress", { max: j.total, value: j.done }) : h("progress", {});  // no value: indeterminate
    const eta = known && j.done > 0 && j.done < j.total && j.seconds > 0 ? ` · about ${fmtDur(j.seconds / j.done * (j.total - j.done))} left` : "";
    const what = j.label && j.label !== j.phase ? `${j.label}: ` : "";
    const text = known ? `${what}step ${j.done} of ${j.total}${eta}` : j.phase === "queued" ? "starting the job process…" : `${j.phase}: counting the work…`;
    return h("td", {}, bar, h("span", { class: "job-progress", text: ` ${text}` }));
  };
  const load = async () => {
    const { jobs } = await api("/api/v1/jobs");
    jobsBody.replaceChildren(...jobs.map(j => {
      const r = j.report || {};
      const req = j.request;
      return h("tr", { "data-job": j.id, "data-state": j.state, "data-phase": j.phase },
        h("td", {}, h("a", { href: "#/jobs", onclick: (ev) => { ev.preventDefault(); api(`/api/v1/jobs/${j.id}`).then(showCompare); }, text: j.id }),
          req ? h("div", { class: "muted small", text: `${req.scenario}, ${req.budget}, MACs ${req.target_macs}` }) : null),
        h("td", { class: "job-state", text: j.state === "running" ? `${j.phase}${j.cancel_requested ? " (cancelling)" : ""}` : (r.status || "finished") }),
        progressCell(j),
        h("td", { text: r.old && r.new ? `${score(r.old)} → ${score(r.new)}` : "" }),
        h("td", {}, j.state === "running" ? h("button", { class: "danger job-cancel", text: "Cancel", onclick: async () => {
          try { await api(`/api/v1/jobs/${j.id}/cancel`, { method: "POST" }); flash(`cancelling ${j.id}`, true); load(); } catch (e) { flash(e.message); }
        } }) : null));
    }));
    const m = await api("/api/v1/models");
    modelsBody.replaceChildren(...m.versions.slice().reverse().map(v => h("tr", { "data-model": v.id },
      h("td", { text: v.id + (v.id === m.current ? " (current)" : v.id === m.previous ? " (previous)" : "") }),
      h("td", { text: (v.macs / 1e9).toFixed(3) }), h("td", { text: (v.params / 1e6).toFixed(2) + " M" }),
      h("td", { text: v.eval ? `${pct(v.eval.rank1)} / ${pct(v.eval.mAP)}` : "–" }), h("td", { text: v.origin }),
      h("td", {}, v.id !== m.current ? h("button", { text: "Promote", onclick: () => promote(v.id) }) : null))));
    const st = await api("/api/v1/status");
    const rs = st.retune_schedule;
    schedInfo.replaceChildren(rs && rs.schedule && rs.schedule !== "off"
      ? h("span", { "data-testid": "retune-schedule", text: `Re-tuning on a schedule (${rs.schedule}, with at least ${rs.min_new_crops} new crops)${rs.next_ms ? `; next ${new Date(rs.next_ms).toLocaleString()}` : ""}.${rs.last ? ` Last: ${new Date(rs.last.t_ms).toLocaleString()}, ${rs.last.outcome === "started" ? `started ${rs.last.job}` : "skipped"} — ${rs.last.reason}.` : ""}` })
      : h("span", { class: "muted", "data-testid": "retune-schedule", text: "No scheduled re-tuning ([retune] schedule in the config)." }));
    const sw = st.model && st.model.switch;
    const last = st.model_switch_last;
    serving.textContent = `The pipeline serves ${m.serving}${st.model ? ` (since ${new Date(st.model.since_ms).toLocaleString()})` : ""}; the registry's current version is ${m.current || "–"}.`;
    switchInfo.replaceChildren(...(sw
      ? [h("span", { "data-testid": "model-switch", text: `Switching to ${sw.to}: ${sw.phase}${sw.total ? ` ${sw.done}/${sw.total} tracklets` : ""}. ${m.serving} serves until the switch is done.` }),
         ...(sw.total ? [h("progress", { max: sw.total, value: sw.done })] : [])]
      : last && last.outcome === "failed"
        ? [h("span", { class: "error", "data-testid": "model-switch-failed", text: `The switch from ${last.from} to ${last.to} failed; ${last.from} kept serving. ${last.reason}` })]
        : last ? [h("span", { class: "muted", text: `Last switch: ${last.from} → ${last.to} in ${last.seconds.toFixed(1)} s (${last.crops} crops re-embedded, ${last.identities_after} identities).` })] : []));
    rollback.replaceChildren(m.previous
      ? h("button", { id: "rollback", text: `Roll back to ${m.previous}`, onclick: async () => {
        try { const r = await api("/api/v1/models/rollback", { method: "POST" }); flash(`rolling back to ${r.switch.to}: the gallery is re-embedded first`, true); load(); } catch (e) { flash(e.message); }
      } })
      : h("span", { class: "muted", "data-testid": "no-rollback", text: "No earlier version to roll back to: the registry has had one current model so far." }));
  };
  const serving = h("p", { class: "muted" });
  const schedInfo = h("p", {});
  const switchInfo = h("p", {});
  const rollback = h("div", { class: "row" });
  main().append(h("h1", { text: "Jobs & models" }),
    h("div", { class: "card jobform" },
      h("div", { class: "form-grid" },
        h("label", { for: "job-scenario", text: "Scenario" }), h("div", {}, scenario, h("div", { class: "muted small", text: "S4 is the usual choice on site: it learns this site's people and light from the crops the daemon stored, without labels. S1–S3 need a labelled source dataset on the server." })),
        h("label", { for: "job-budget", text: "Training budget" }), h("div", {}, budget, h("div", { class: "muted small", text: "how long to train: epochs (1ep = one pass over the stored crops; 10ep is a real re-tune) or wall time (30m, 2h)." })),
        h("label", { for: "job-macs", text: "Target MACs share" }), h("div", {}, macs, h("div", { class: "muted small", text: "how much of the serving model's compute (multiply-accumulates per crop) the new model may use: 1.0 keeps the network's size, 0.5 prunes it to half the cost (faster, usually a little less accurate)." })),
        h("span"), h("div", {}, start, h("span", { class: "muted small", text: "  The job trains in its own process; the candidate is compared with the serving model on held-out crops and on operators' labels it never trained on (Review page), and promoted only when the labels are enough and it is not worse on them — otherwise you decide, seeing the numbers." })))),
    schedInfo,
    h("table", { "data-testid": "jobs" }, h("thead", {}, h("tr", {}, ["Job", "State", "Progress / outcome", "held-out rank-1 / mAP", ""].map(t => h("th", { text: t })))), jobsBody),
    compare,
    h("h2", { text: "Model registry" }), serving, switchInfo,
    h("table", { "data-testid": "models" }, h("thead", {}, h("tr", {}, ["Version", "GMACs", "Params", "held-out rank-1 / mAP", "Origin", ""].map(t => h("th", { text: t })))), modelsBody),
    rollback);
  await load();
  timers.push(onEvent(e => {
    if (e.type === "job_progress" || e.type === "job_finished" || e.type === "retune_scheduled" || e.type === "model_switch" || e.type === "model_switched") load().catch(() => {});
    if (e.type === "model_switched") flash(e.outcome === "switched" ? `${e.to} serves now` : `switch to ${e.to} failed: ${e.reason}`, e.outcome === "switched");
    if (e.type === "job_finished") { flash(`job ${e.job} ended: ${e.status}`, e.status !== "failed"); api(`/api/v1/jobs/${e.job}`).then(showCompare).catch(() => {}); }
  }));
};

// ---- review queue: one link at a time, answered with one key --------------------------------
// The daemon lists uncertain links first, then near-misses (GET /api/v1/review); an answer is a
// label (POST /api/v1/labels): same = confirm, different = reject; skip moves on without one.
pages.review = async () => {
  await loadCameras();
  let queue = [], pos = 0, answered = 0, skipped = new Set();
  const card = h("div", { class: "card review", "data-testid": "review-card" });
  const status = h("p", { class: "muted", "data-testid": "review-status" });
  const fetchQueue = async () => {
    const { queue: q } = await api("/api/v1/review?limit=100");
    queue = q.filter(it => !skipped.has(it.tracklet)); pos = 0;
  };
  const side = (title, urls, cam) => h("div", { class: "review-side" }, h("div", { class: "review-title" }, title, cam ? cameraChip(cam) : null),
    h("div", { class: "crops" }, urls.length ? urls.map(u => h("img", { src: u, alt: title, loading: "eager" })) : h("span", { class: "muted", text: "no crops kept" })));
  const show = () => {
    const it = queue[pos];
    status.textContent = `${answered} answered this session · ${Math.max(queue.length - pos, 0)} waiting`;
    if (!it) { card.replaceChildren(h("p", { "data-testid": "review-empty", text: "Nothing to review: every uncertain link and near-miss has an answer." })); card.dataset.tracklet = ""; return; }
    card.dataset.tracklet = it.tracklet; card.dataset.identity = it.identity;
    const kind = it.kind === "uncertain" ? "uncertain link" : "near-miss";
    const sim = it.similarity === null ? "" : ` · similarity ${it.similarity.toFixed(2)}`;
    const margin = it.margin === null ? "" : ` · margin ${it.margin.toFixed(2)}`;
    card.replaceChildren(
      h("div", { class: "review-head" }, h("span", { class: `badge ${it.kind === "uncertain" ? "possible" : "unlikely"}`, text: kind }),
        h("span", { class: "muted", text: ` linked to #${it.identity} at ${fmtWhen(it.start_ms)}${sim}${margin}` })),
      h("div", { class: "grid2" }, side(`tracklet ${it.tracklet}`, it.tracklet_crops, it.camera), side(`person #${it.identity}`, it.identity_crops, null)),
      h("div", { class: "row review-keys" },
        h("button", { class: "primary", "data-answer": "same", text: "Same person (S)", onclick: () => answer("same") }),
        h("button", { class: "danger", "data-answer": "different", text: "Different (D)", onclick: () => answer("different") }),
        h("button", { "data-answer": "skip", text: "Skip (space)", onclick: () => answer("skip") }),
        h("a", { href: `#/identity/${it.identity}`, text: `open #${it.identity}` })));
  };
  let busy = false;
  const answer = async (a) => {
    const it = queue[pos];
    if (!it || busy) return;
    busy = true;
    try {
      if (a === "skip") skipped.add(it.tracklet);
      else {
        await api("/api/v1/labels", { method: "POST", json: { kind: a === "same" ? "confirm" : "reject", tracklet: it.tracklet, identity: it.identity } });
        answered++;
      }
      pos++;
      if (pos >= queue.length) await fetchQueue();
      show();
    } catch (e) { flash(e.message); }
    finally { busy = false; }
  };
  const keys = ev => {
    if (ev.target instanceof HTMLInputElement || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const k = ev.key.toLowerCase();
    if (k === "s" || k === "y") { ev.preventDefault(); answer("same"); }
    else if (k === "d" || k === "n") { ev.preventDefault(); answer("different"); }
    else if (k === " " || k === "k") { ev.preventDefault(); answer("skip"); }
  };
  document.addEventListener("keydown", keys);
  timers.push(() => document.removeEventListener("keydown", keys));
  main().append(h("h1", { text: "Review links" }),
    h("p", { class: "muted", text: "Is the tracklet on the left the person on the right? S = same, D = different, space = skip. Each answer is a label: re-tuning learns from it and the promotion gate is judged on it." }),
    status, card);
  await fetchQueue();
  show();
};

// Both models on the operators' held-out labels, every number with its sample size.
function labelGateView(g) {
  if (!g) return h("p", { class: "muted", "data-testid": "job-labels", text: "No operators' labels were held out for this job: label links on the Review page so that the gate can judge a candidate on them." });
  const n = (s) => `${s.same_pairs} same + ${s.different_pairs} different pairs`;
  const row = (name, key, count) => h("tr", {}, h("td", { text: name }),
    ["serving", "candidate"].map(w => h("td", { class: w === "candidate" && g.serving[key] !== null && g.candidate[key] !== null ? (g.candidate[key] > g.serving[key] ? "better" : g.candidate[key] < g.serving[key] ? "worse" : "") : "", text: pct(g[w][key]) })),
    h("td", { class: "muted", text: count }));
  return h("div", { "data-testid": "job-labels" },
    h("h3", { text: `On operators' labels (held out, never trained on)${g.weak ? " — weak evidence" : ""}` }),
    h("table", {}, h("thead", {}, h("tr", {}, ["", "serving", "candidate", "n"].map(t => h("th", { text: t })))),
      h("tbody", {}, row("pair AUC", "auc", n(g.candidate)), row(`TAR at FAR ${(100 * g.candidate.far).toFixed(0)} %`, "tar", `${g.candidate.same_pairs} same pairs`),
        row("rank-1 over labelled people", "rank1", `${g.candidate.rank1_queries} queries`))),
    h("p", { class: g.passed && !g.weak ? "outcome promoted" : "outcome", text: g.reason }));
}

// ---- routing --------------------------------------------------------------------------------
function setupNav() {
  const nav = $("#nav");
  nav.hidden = !me;
  $("#logout").hidden = !me;
  $("#who").textContent = me ? `${me.user} (${me.role})` : "";
  for (const a of nav.querySelectorAll("a")) a.hidden = !!a.dataset.need && !can(a.dataset.need);
  if (me) connectEvents();
}

async function route() {
  for (const t of timers) typeof t === "function" ? t() : clearInterval(t);
  timers = [];
  const [name, ...params] = (location.hash.replace(/^#\//, "") || "cameras").split("/");
  if (!me && name !== "login") {
    try { me = await api("/api/v1/me"); setupNav(); } catch { return go("#/login"); }
  }
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === name);
  main().replaceChildren();
  const page = pages[name] || pages.cameras;
  try { await page(params); }
  catch (e) {
    if (e.status === 403) main().replaceChildren(h("div", { class: "card", "data-testid": "refused" }, h("h1", { text: "Not allowed" }), h("p", { text: e.message })));
    else if (e.status !== 401) flash(e.message);
  }
}

window.addEventListener("hashchange", () => { flash(""); route(); });
window.addEventListener("DOMContentLoaded", () => {
  $("#logout").addEventListener("click", async () => {
    try { await api("/api/v1/logout", { method: "POST" }); } catch { /* signed out either way */ }
    me = null; if (socket) socket.close(); setupNav(); go("#/login");
  });
  route();
});

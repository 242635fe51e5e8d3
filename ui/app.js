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
const pct = x => x === null || x === undefined ? "–" : (100 * x).toFixed(1) + " %";
const palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const idColour = id => id === null || id === undefined ? "#a0a0a0" : palette[((id % 8) + 8) % 8];
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
  switch (e.type) {
    case "identity_created": return `[${e.camera}] new person #${e.identity}`;
    case "identity_linked": return `[${e.camera}] #${e.identity} seen again (${e.similarity.toFixed(2)}${e.uncertain ? ", uncertain" : ""})`;
    case "identity_merged": return `#${e.absorbed} merged into #${e.kept}: ${e.reason}`;
    case "identity_split": return `#${e.from} split: new #${e.to}`;
    case "camera_state": return `[${e.camera}] ${e.state}${e.detail ? ": " + e.detail : ""}`;
    case "job_progress": return `job ${e.job}: ${e.phase} ${e.total ? `${e.done}/${e.total}` : ""}`;
    case "job_finished": return `job ${e.job} ${e.status}`;
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

pages.cameras = async () => {
  const wall = h("div", { class: "wall", "data-testid": "camera-wall" });
  const feed = h("div", { class: "card feed", "data-testid": "event-feed" }, h("strong", { text: "Live events" }));
  main().append(h("h1", { text: "Cameras" }), h("div", { class: "layout" }, wall, feed));
  const cards = new Map();
  const refresh = async () => {
    const { cameras } = await api("/api/v1/cameras");
    for (const c of cameras) {
      let card = cards.get(c.id);
      if (!card) {
        const img = h("img", { alt: `camera ${c.id}` });
        const overlay = svgEl("svg", { preserveAspectRatio: "xMidYMid meet" });
        card = { el: h("div", { class: "card cam", "data-camera": c.id },
          h("h3", {}, h("span", { class: "name" }), h("span", { class: "state" })),
          h("div", { class: "view" }, img, overlay), h("div", { class: "counters" })), img, overlay, frames: 0 };
        cards.set(c.id, card);
        wall.append(card.el);
      }
      const st = c.status || {};
      $(".name", card.el).textContent = c.name;
      const s = $(".state", card.el); s.textContent = st.state || "unknown"; s.className = `state ${st.state || ""}`;
      $(".counters", card.el).textContent = `${st.frames_in ?? 0} frames in · ${st.analysed ?? 0} analysed · ${st.dropped ?? 0} dropped · ${st.reconnects ?? 0} reconnects`;
      card.el.dataset.analysed = st.analysed ?? 0;
      updateView(c.id, card);
    }
    for (const [id, card] of cards) if (!cameras.find(c => c.id === id)) { card.el.remove(); cards.delete(id); }
  };
  const updateView = async (id, card) => {
    try {
      const live = await api(`/api/v1/cameras/${encodeURIComponent(id)}/live`);
      const url = `/api/v1/cameras/${encodeURIComponent(id)}/snapshot.jpg?t=${live.t_ms}`;
      const next = new Image();
      next.onload = () => { card.img.src = url; card.frames++; card.el.dataset.frames = card.frames; };
      next.src = url;
      const o = card.overlay; o.replaceChildren(); o.setAttribute("viewBox", `0 0 ${live.width} ${live.height}`);
      for (const b of live.boxes) {
        const [x1, y1, x2, y2] = b.bbox;
        o.append(svgEl("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1, fill: "none", stroke: idColour(b.identity), "stroke-width": 2 }));
        if (b.identity !== null && b.identity !== undefined) {
          const t = svgEl("text", { x: x1 + 2, y: Math.max(12, y1 - 3), fill: idColour(b.identity), "font-size": 14, "font-weight": 700 });
          t.textContent = `#${b.identity}`;
          o.append(t);
        }
      }
    } catch (e) { if (e.status !== 503) throw e; }
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

pages.identities = async (params) => {
  const { cameras } = await api("/api/v1/cameras");
  const cam = h("select", { id: "filter-camera" }, h("option", { value: "", text: "all cameras" }), cameras.map(c => h("option", { value: c.id, text: c.name })));
  const since = h("select", { id: "filter-since" }, [["", "any time"], ["600000", "last 10 min"], ["3600000", "last hour"], ["86400000", "last day"]].map(([v, t]) => h("option", { value: v, text: t })));
  const body = h("tbody");
  const load = async () => {
    const q = new URLSearchParams({ limit: "200" });
    if (cam.value) q.set("camera", cam.value);
    if (since.value) q.set("since_ms", String(Date.now() - Number(since.value)));
    const r = await api(`/api/v1/identities?${q}`);
    body.replaceChildren(...r.identities.map(i => h("tr", { "data-identity": i.id },
      h("td", {}, h("a", { href: `#/identity/${i.id}`, text: `#${i.id}` })),
      h("td", { text: i.cameras.join(", ") }), h("td", { text: i.sightings }),
      h("td", { text: fmtDate(i.created_ms) }), h("td", { text: fmtDate(i.last_seen_ms) }))));
    count.textContent = `${r.total} identities`;
  };
  const count = h("span", { class: "muted" });
  cam.onchange = since.onchange = () => load().catch(e => flash(e.message));
  main().append(h("h1", { text: "Identities" }), h("div", { class: "row" }, cam, since, count),
    h("table", { "data-testid": "identities" }, h("thead", {}, h("tr", {}, ["Identity", "Cameras", "Sightings", "First seen", "Last seen"].map(t => h("th", { text: t })))), body),
    h("h2", { text: "Who went where, when" }), h("div", { class: "timeline" }, h("img", { src: `/api/v1/timeline.svg?min_cameras=1`, alt: "site timeline" })));
  await load();
};

function drawTimeline(steps) {
  const cams = [...new Set(steps.map(s => s.camera))];
  const t0 = Math.min(...steps.map(s => s.start_ms)), t1 = Math.max(...steps.map(s => s.end_ms), t0 + 1000);
  const W = 900, left = 110, rowH = 28, H = 40 + cams.length * rowH;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, "data-testid": "timeline" });
  const x = t => left + (t - t0) / (t1 - t0) * (W - left - 20);
  cams.forEach((c, i) => {
    const y = 10 + i * rowH;
    const label = svgEl("text", { x: left - 8, y: y + 17, "text-anchor": "end", "font-size": 13 }); label.textContent = c; svg.append(label);
    svg.append(svgEl("line", { x1: left, x2: W - 20, y1: y + rowH / 2, y2: y + rowH / 2, stroke: "#e5e7eb" }));
    for (const s of steps.filter(s => s.camera === c)) {
      const r = svgEl("rect", { x: x(s.start_ms), y: y + 4, width: Math.max(3, x(s.end_ms) - x(s.start_ms)), height: rowH - 8, rx: 3, fill: palette[i % 8] });
      const tip = svgEl("title"); tip.textContent = `${c}: ${fmtTime(s.start_ms)}–${fmtTime(s.end_ms)} (tracklet ${s.tracklet}, ${s.decision})`; r.append(tip);
      svg.append(r);
    }
  });
  const axis = svgEl("text", { x: left, y: H - 8, "font-size": 12, fill: "#6b7280" });
  axis.textContent = `${fmtDate(t0)} → ${fmtTime(t1)} (${((t1 - t0) / 1000).toFixed(0)} s)`;
  svg.append(axis);
  return svg;
}

pages.identity = async ([id]) => {
  const r = await api(`/api/v1/identities/${encodeURIComponent(id)}`);
  const tl = await api(`/api/v1/identities/${encodeURIComponent(id)}/timeline`);
  const i = r.identity;
  main().append(h("h1", { "data-testid": "identity-title", text: `Person #${i.id}` }),
    h("p", { class: "muted", text: `first seen ${fmtDate(i.created_ms)} · last seen ${fmtDate(i.last_seen_ms)} · ${i.sightings} sightings on ${i.cameras.length} camera(s)${i.merged_into ? ` · merged into #${i.merged_into}` : ""}` }),
    h("h2", { text: "Timeline: who went where, when" }),
    h("div", { class: "timeline card" }, tl.timeline.length ? drawTimeline(tl.timeline) : h("span", { class: "muted", text: "no sightings" })),
    h("h2", { text: "Seen by each camera" }),
    ...r.cameras.map(c => h("div", { class: "card", "data-camera": c.camera },
      h("strong", { text: c.camera }), h("span", { class: "muted", text: `  ${c.sightings} sighting(s), ${fmtTime(c.first_ms)}–${fmtTime(c.last_ms)}` }),
      h("div", { class: "crops" }, c.crops.map(k => h("img", { src: k.url, alt: `crop ${k.id}`, title: `tracklet ${k.tracklet}, quality ${k.quality.toFixed(2)}` }))))));
  if (can("operate")) {
    const absorb = h("input", { id: "merge-absorb", type: "number", placeholder: "identity id" });
    const reason = h("input", { id: "merge-reason", placeholder: "reason (optional)" });
    const picks = r.sightings.map(s => h("label", {}, h("input", { type: "checkbox", value: s.tracklet }), ` ${s.camera} · tracklet ${s.tracklet} · ${fmtTime(s.start_ms)} `));
    main().append(h("h2", { text: "Correct this identity" }),
      h("div", { class: "row" }, "Merge identity", absorb, "into this one", reason,
        h("button", { onclick: async () => {
          try { await api(`/api/v1/identities/${id}/merge`, { method: "POST", json: { absorb: Number(absorb.value), reason: reason.value } }); flash(`#${absorb.value} merged into #${id}`, true); route(); }
          catch (e) { flash(e.message); }
        }, text: "Merge" })),
      h("div", { class: "card" }, h("div", { text: "Split the checked sightings off into a new identity:" }), ...picks,
        h("div", {}, h("button", { onclick: async () => {
          const ts = picks.map(p => $("input", p)).filter(x => x.checked).map(x => Number(x.value));
          try { const s = await api(`/api/v1/identities/${id}/split`, { method: "POST", json: { tracklets: ts, reason: reason.value } }); flash(`split off as #${s.to}`, true); go(`#/identity/${s.to}`); }
          catch (e) { flash(e.message); }
        }, text: "Split" }))));
  }
};

pages.search = async () => {
  const file = h("input", { id: "search-file", type: "file", accept: "image/jpeg,image/png" });
  const out = h("div", { "data-testid": "search-results" });
  file.onchange = async () => {
    const f = file.files[0]; if (!f) return;
    out.replaceChildren(h("span", { class: "muted", text: "searching…" }));
    try {
      const r = await api("/api/v1/search?k=12", { method: "POST", body: f, type: f.type || "image/jpeg" });
      out.replaceChildren(...(r.matches.length ? r.matches.map(m => h("a", { class: "match card", href: `#/identity/${m.identity}` },
        m.crop ? h("img", { src: m.crop, alt: `identity ${m.identity}` }) : h("div", { text: "(no crop)" }),
        h("div", { text: `#${m.identity} · ${m.similarity.toFixed(2)}` }))) : [h("span", { text: "no identities yet" })]));
    } catch (e) { out.replaceChildren(); flash(e.message); }
  };
  main().append(h("h1", { text: "Search by image" }), h("p", { class: "muted", text: "Upload a picture of a person (a crop of one person works best); the most similar identities come first." }), file, out);
};

pages.manage = async () => {
  const body = h("tbody");
  const load = async () => {
    const { cameras } = await api("/api/v1/cameras");
    body.replaceChildren(...cameras.map(c => h("tr", { "data-camera": c.id },
      h("td", { text: c.id }), h("td", { text: c.name }), h("td", { text: c.url }),
      h("td", {}, h("span", { class: `state ${c.status?.state || ""}`, text: c.status?.state || "–" })),
      h("td", { text: `${c.status?.frames_in ?? 0} in / ${c.status?.analysed ?? 0} analysed / ${c.status?.reconnects ?? 0} reconnects` }),
      h("td", {}, h("button", { class: "danger", onclick: async () => {
        if (!confirm(`Remove camera ${c.id}?`)) return;
        try { await api(`/api/v1/cameras/${encodeURIComponent(c.id)}`, { method: "DELETE" }); flash(`camera ${c.id} removed`, true); load(); } catch (e) { flash(e.message); }
      }, text: "Remove" })))));
  };
  const id = h("input", { id: "cam-id", placeholder: "id (e.g. lobby)" });
  const name = h("input", { id: "cam-name", placeholder: "name" });
  const url = h("input", { id: "cam-url", placeholder: "rtsp://host/stream", size: 40 });
  const cred = h("input", { id: "cam-credential", placeholder: "credential (optional)" });
  const add = h("button", { class: "primary", text: "Add or change", onclick: async () => {
    try {
      const r = await api(`/api/v1/cameras/${encodeURIComponent(id.value)}`, { method: "PUT", json: { id: id.value, name: name.value || undefined, url: url.value, credential: cred.value || undefined } });
      flash(`camera ${r.id} saved`, true); load();
    } catch (e) { flash(e.message); }
  } });
  main().append(h("h1", { text: "Manage cameras" }),
    h("table", { "data-testid": "camera-table" }, h("thead", {}, h("tr", {}, ["Id", "Name", "URL", "State", "Counters", ""].map(t => h("th", { text: t })))), body),
    h("h2", { text: "Add or change a camera" }),
    h("div", { class: "row" }, id, name, url, cred, add),
    h("p", { class: "muted", text: "RTSP credentials: name a credential an admin registered (PUT /api/v1/credentials/{name}); its user name and password are never shown. A password in the URL is stored and shown redacted." }));
  await load();
};

pages.jobs = async () => {
  const scenario = h("select", { id: "job-scenario" }, ["S4", "S0", "S1", "S2", "S3", "S5"].map(s => h("option", { value: s, text: s })));
  const budget = h("input", { id: "job-budget", value: "1ep", size: 6 });
  const macs = h("input", { id: "job-macs", value: "1.0", size: 5 });
  const jobsBody = h("tbody");
  const modelsBody = h("tbody");
  const compare = h("div", { "data-testid": "job-compare" });
  const start = h("button", { class: "primary", id: "job-start", text: "Start re-tune", onclick: async () => {
    try {
      const j = await api("/api/v1/jobs", { method: "POST", json: { scenario: scenario.value, budget: budget.value, target_macs: Number(macs.value) } });
      flash(`job ${j.id} started`, true); load();
    } catch (e) { flash(e.message); }
  } });
  const score = (s) => s ? `${pct(s.rank1)} / ${pct(s.mAP)} · ${(s.macs / 1e9).toFixed(3)} GMACs` : "–";
  const showCompare = (j) => {
    const r = j.report || {};
    const cls = (a, b) => a === undefined || b === undefined ? "" : (b > a ? "better" : b < a ? "worse" : "");
    compare.replaceChildren(h("h2", { text: `Job ${j.id}: old vs new on held-out crops` }),
      h("table", {}, h("thead", {}, h("tr", {}, ["", "rank-1", "mAP", "GMACs", "params"].map(t => h("th", { text: t })))),
        h("tbody", {}, ["old", "new"].map(k => r[k] ? h("tr", {}, h("td", { text: k === "old" ? `serving (${r.serving_before || "?"})` : "candidate" }),
          h("td", { class: k === "new" ? cls(r.old?.rank1, r.new?.rank1) : "", text: pct(r[k].rank1) }),
          h("td", { class: k === "new" ? cls(r.old?.mAP, r.new?.mAP) : "", text: pct(r[k].mAP) }),
          h("td", { text: (r[k].macs / 1e9).toFixed(3) }), h("td", { text: (r[k].params / 1e6).toFixed(2) + " M" })) : null))),
      h("p", { text: `${r.status || j.state}: ${r.decision || r.error || ""}` }),
      ...(r.candidate ? [h("button", { text: `Promote ${r.candidate} anyway`, onclick: () => promote(r.candidate) })] : []));
  };
  const promote = async (v) => { try { await api(`/api/v1/models/${v}/promote`, { method: "POST" }); flash(`${v} is current`, true); load(); } catch (e) { flash(e.message); } };
  const load = async () => {
    const { jobs } = await api("/api/v1/jobs");
    jobsBody.replaceChildren(...jobs.map(j => {
      const r = j.report || {};
      const prog = j.state === "running" ? h("progress", { max: j.total || 1, value: j.done || 0 }) : null;
      return h("tr", { "data-job": j.id, "data-state": j.state },
        h("td", {}, h("a", { href: "#/jobs", onclick: (ev) => { ev.preventDefault(); api(`/api/v1/jobs/${j.id}`).then(showCompare); }, text: j.id })),
        h("td", { class: "job-state", text: j.state === "running" ? `${j.phase}${j.cancel_requested ? " (cancelling)" : ""}` : (r.status || "finished") }),
        h("td", {}, prog, j.state === "running" ? ` ${j.label} ${j.done}/${j.total || "?"}` : ""),
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
    serving.textContent = `The pipeline serves ${m.serving}; the registry's current version is ${m.current || "–"}.`;
  };
  const serving = h("p", { class: "muted" });
  main().append(h("h1", { text: "Jobs & models" }),
    h("div", { class: "row card" }, "Scenario", scenario, "budget", budget, "target MACs share", macs, start),
    h("table", { "data-testid": "jobs" }, h("thead", {}, h("tr", {}, ["Job", "State", "Progress", "held-out rank-1 / mAP", ""].map(t => h("th", { text: t })))), jobsBody),
    compare,
    h("h2", { text: "Model registry" }), serving,
    h("table", { "data-testid": "models" }, h("thead", {}, h("tr", {}, ["Version", "GMACs", "Params", "held-out rank-1 / mAP", "Origin", ""].map(t => h("th", { text: t })))), modelsBody),
    h("div", { class: "row" }, h("button", { text: "Roll back to previous", onclick: async () => {
      try { const r = await api("/api/v1/models/rollback", { method: "POST" }); flash(`${r.current} is current`, true); load(); } catch (e) { flash(e.message); }
    } })));
  await load();
  timers.push(onEvent(e => { if (e.type === "job_progress" || e.type === "job_finished") load().catch(() => {}); }));
};

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

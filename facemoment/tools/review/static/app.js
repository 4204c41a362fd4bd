// The review page: cards, cameras and the run's state, kept current by server-sent events.
"use strict";

const state = { run: null, highlights: new Map(), cameras: new Map(), playing: null, loaded: false };

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
};
const svgEl = (tag, attrs = {}) => {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
};
const sec = (ns) => (ns == null ? "?" : (ns / 1e9).toFixed(2) + " s");
const num = (v, digits = 1) => (v == null ? "–" : Number(v).toFixed(digits));
const clock = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "");

// --- highlights -------------------------------------------------------------------

function newestFirst(a, b) {
  const wa = a.written_at || "", wb = b.written_at || "";
  if (wa !== wb) return wa < wb ? 1 : -1;
  return (b.event_t_ns || 0) - (a.event_t_ns || 0);
}

function cardMedia(h) {
  const media = el("div", { class: "media", title: h.clip ? "play the clip" : "clip not written yet" });
  if (h.still) media.append(el("img", { src: h.still, alt: `${h.reason} on ${h.camera}`, loading: "lazy" }));
  else media.append(el("span", { class: "pending", text: h.clip_status === "failed" ? "clip failed" : "clip pending" }));
  if (h.clip) {
    media.append(el("span", { class: "play", text: "▶ play" }));
    media.addEventListener("click", () => play(h.key));
  }
  return media;
}

function play(key) {
  const h = state.highlights.get(key);
  const card = document.querySelector(`.card[data-key="${CSS.escape(key)}"]`);
  if (!h || !h.clip || !card) return;
  const media = card.querySelector(".media");
  const video = el("video", { src: h.clip, controls: "", autoplay: "", playsinline: "" });
  video.muted = true;  // lets autoplay start without a gesture policy prompt
  media.replaceChildren(video);
  state.playing = key;
  video.play().catch(() => {});
}

function renderCard(h) {
  const card = el("article", { class: "card", "data-key": h.key, "data-camera": h.camera || "", "data-reason": h.reason || "" });
  const score = h.score == null ? "" : Number(h.score).toFixed(2);
  card.append(
    cardMedia(h),
    el("div", { class: "meta" },
      el("div", { class: "title" }, el("span", { class: "reason", text: h.reason || "?" }), el("span", { class: "score", text: score })),
      el("div", { class: "dim", text: `${h.camera} · event ${sec(h.event_t_ns)} · clip ${sec(h.t_start_ns)}–${sec(h.t_end_ns)}` }),
      el("div", { class: "dim", text: `${clock(h.written_at)}${h.faces != null ? ` · faces ${h.faces}` : ""}${h.clip_status === "failed" ? ` · clip failed: ${h.clip_error || "?"}` : ""}` }),
      el("code", { class: "trig", text: h.message || "" })));
  return card;
}

function renderCards() {
  const camera = $("filter-camera").value, reason = $("filter-reason").value;
  const shown = [...state.highlights.values()]
    .filter((h) => (!camera || h.camera === camera) && (!reason || h.reason === reason))
    .sort(newestFirst);
  const cards = $("cards");
  const existing = new Map([...cards.children].map((c) => [c.dataset.key, c]));
  const next = shown.map((h) => {
    const old = existing.get(h.key);
    // A card whose clip is playing keeps its video element.
    if (old && (old.dataset.version === version(h) || state.playing === h.key)) return old;
    const card = renderCard(h);
    card.dataset.version = version(h);
    if (!old && state.loaded) card.classList.add("fresh");  // new since the page opened
    return card;
  });
  cards.replaceChildren(...next);
  $("highlight-count").textContent = `${shown.length} of ${state.highlights.size}`;
  $("no-highlights").hidden = state.highlights.size > 0;
  updateFilters();
}

const version = (h) => `${h.clip_status}|${h.still}|${h.clip}`;

function updateFilters() {
  const fill = (select, values) => {
    const current = select.value;
    const have = new Set([...select.options].map((o) => o.value));
    for (const v of [...values].sort()) if (!have.has(v)) select.append(el("option", { value: v, text: v }));
    select.value = current;
  };
  const cams = new Set([...state.cameras.keys()]);
  for (const h of state.highlights.values()) if (h.camera) cams.add(h.camera);
  fill($("filter-camera"), cams);
  fill($("filter-reason"), new Set([...state.highlights.values()].map((h) => h.reason).filter(Boolean)));
}

// --- cameras ----------------------------------------------------------------------

function gateText(gate) {
  if (gate.open === true) return el("span", { class: "gate-open", text: `open since ${sec(gate.since_t_ns)}` });
  if (gate.open == null && !(gate.failing || []).length) return el("span", { class: "dim", text: "no decision yet" });
  const failing = (gate.failing || []).map((f) => {
    const value = f.value == null ? "" : ` ${typeof f.value === "number" ? +f.value.toFixed(3) : f.value}`;
    return `${f.label}${value} ${f.op || ""} ${f.threshold ?? ""} (${Math.round(100 * f.share)}% of frames)`;
  });
  return el("span", {},
    el("span", { class: "gate-closed", text: "closed" }),
    el("span", { text: failing.length ? " — " + failing.join("; ") : " — all conditions held, waiting to open" }));
}

function timeline(cam) {
  const t = cam.timeline || {};
  const reasons = Object.keys(t.candidates || {});
  const rowH = 12, labelW = 110, width = 1100;
  const rows = ["gate", ...reasons, "triggers"];
  const svg = svgEl("svg", { class: "timeline", viewBox: `0 0 ${width} ${rows.length * (rowH + 4) + 14}`, role: "img",
                             "aria-label": `timeline of ${cam.camera}` });
  if (t.start_ns == null || t.end_ns == null || t.end_ns <= t.start_ns) return svg;
  const x = (ns) => labelW + ((ns - t.start_ns) / (t.end_ns - t.start_ns)) * (width - labelW - 4);
  const span = (cls, y, a, b) => svg.append(svgEl("rect", { class: cls, x: x(a), y, height: rowH, width: Math.max(1.5, x(b) - x(a)) }));
  rows.forEach((name, i) => {
    const y = i * (rowH + 4);
    const label = svgEl("text", { x: 0, y: y + rowH - 2 });
    label.textContent = name === "gate" ? "gate open" : name;
    svg.append(label, svgEl("line", { class: "axis", x1: labelW, x2: width, y1: y + rowH / 2, y2: y + rowH / 2 }));
    if (name === "gate") for (const [a, b] of t.gate || []) span("gate", y, a, b);
    else if (name === "triggers") for (const p of t.triggers || []) {
      if (p.t_ns != null) svg.append(svgEl("line", { class: "trig", x1: x(p.t_ns), x2: x(p.t_ns), y1: y, y2: y + rowH }));
    } else for (const [a, b] of t.candidates[name]) span("cand", y, a, b);
  });
  const axisY = rows.length * (rowH + 4) + 10;
  for (const [ns, anchor] of [[t.start_ns, "start"], [t.end_ns, "end"]]) {
    const tick = svgEl("text", { x: x(ns), y: axisY, "text-anchor": anchor });
    tick.textContent = sec(ns);
    svg.append(tick);
  }
  return svg;
}

function renderCamera(cam) {
  const figures = el("dl", { class: "figures" });
  const add = (name, value) => { if (value != null && value !== "") figures.append(el("dt", { text: name }), el("dd", {}, value)); };
  if (cam.frames_in_per_s != null) add("frames / s", `${num(cam.frames_in_per_s)} in, ${num(cam.analysed_per_s)} analysed (last ${num(cam.window_s)} s)`);
  add("frames fused", cam.frames_fused);
  const rates = cam.effective_rates || cam.extractor_rates;
  if (rates && Object.keys(rates).length) add("extractor rates", Object.entries(rates).map(([k, v]) => `${k} ${typeof v === "number" ? num(v) : JSON.stringify(v)}/s`).join(", "));
  if (cam.occupancy != null) add("occupancy", typeof cam.occupancy === "number" ? `${Math.round(100 * cam.occupancy)}%` : JSON.stringify(cam.occupancy));
  add("gate", gateText(cam.gate || {}));
  const drops = Object.entries(cam.drops || {});
  if (drops.length) add("dropped", drops.map(([k, v]) => `${k} ${v}`).join(", "));
  if (cam.last_trigger) add("last trigger", `${cam.last_trigger.reason} ${num(cam.last_trigger.score, 2)} at ${sec(cam.last_trigger.t_ns)} ${clock(cam.last_trigger.written_at)}`);
  if (cam.trig_sends) add("TRIG sends", `${cam.trig_sends.sent} sent, ${cam.trig_sends.unheard} unheard, ${cam.trig_sends.dropped} dropped`);
  return el("div", { class: "camera", "data-camera": cam.camera },
    el("h3", {}, el("span", { text: cam.camera }), el("span", { class: "dim", text: cam.t_ns != null ? `at ${sec(cam.t_ns)}` : "" })),
    figures, timeline(cam));
}

function renderCameras() {
  const want = $("filter-camera").value;
  const cams = [...state.cameras.values()].filter((c) => !want || c.camera === want);
  $("cameras").replaceChildren(...cams.map(renderCamera));
}

// --- the run ----------------------------------------------------------------------

function renderRun() {
  const run = state.run;
  if (!run) return;
  const badge = $("run-state");
  badge.textContent = run.live ? "live" : "finished";
  badge.className = "badge " + (run.live ? "live" : "finished");
  $("run-dir").textContent = run.output_dir + (run.last_write ? ` · last write ${clock(run.last_write)}` : "");
  const why = run.why || [];
  $("why").hidden = why.length === 0;
  if (why.length) {
    $("why-title").textContent = why[0].replace(/:$/, "").replace(/^./, (c) => c.toUpperCase());
    $("why-text").textContent = why.slice(1).map((l) => l.replace(/^  /, "")).join("\n");
  }
}

// --- events -----------------------------------------------------------------------

function applySnapshot(snap) {
  state.run = snap.run;
  state.highlights = new Map(snap.highlights.map((h) => [h.key, h]));
  state.cameras = new Map(snap.cameras.map((c) => [c.camera, c]));
  renderRun(); renderCameras(); renderCards();
  state.loaded = true;
}

function connect() {
  const source = new EventSource("api/events");
  source.addEventListener("open", () => { $("connection").textContent = "connected"; });
  source.addEventListener("error", () => { $("connection").textContent = "reconnecting"; });
  source.addEventListener("snapshot", (e) => applySnapshot(JSON.parse(e.data)));
  source.addEventListener("highlight", (e) => { const h = JSON.parse(e.data); state.highlights.set(h.key, h); renderCards(); });
  source.addEventListener("camera", (e) => { const c = JSON.parse(e.data); state.cameras.set(c.camera, c); renderCameras(); updateFilters(); });
  source.addEventListener("run", (e) => { state.run = JSON.parse(e.data); renderRun(); });
}

$("filter-camera").addEventListener("change", () => { renderCards(); renderCameras(); });
$("filter-reason").addEventListener("change", renderCards);
connect();

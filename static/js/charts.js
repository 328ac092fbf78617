// Tiny inline-SVG charts (bars and lines), so no chart library is needed.
const NS = "http://www.w3.org/2000/svg";

export function svg(tag, attrs = {}, text = null) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== null) el.textContent = text;
  return el;
}

// Top of the y axis: four equal steps, each a whole number, so count axes never read "2.5 lesions".
function niceMax(v) {
  if (v <= 0) return 4;
  const raw = v / 4;
  if (raw <= 5) return 4 * Math.ceil(raw);
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return 4 * m * p;
  return 40 * p;
}

// bars: [{label, value, color?, title?}]
export function barChart(bars, { width = 520, height = 220, yLabel = "", color = "#1f6feb", rotate = false } = {}) {
  const m = { l: 48, r: 10, t: 10, b: rotate ? 64 : 36 };
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  const max = niceMax(Math.max(0, ...bars.map((b) => b.value)));
  const iw = width - m.l - m.r;
  const ih = height - m.t - m.b;
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    const y = m.t + ih - (ih * i) / 4;
    root.appendChild(svg("line", { x1: m.l, x2: width - m.r, y1: y, y2: y, stroke: "#e4e7ec" }));
    root.appendChild(svg("text", { x: m.l - 6, y: y + 4, "text-anchor": "end", "font-size": 11, fill: "#667085" }, Number.isInteger(v) ? v : v.toFixed(1)));
  }
  const bw = iw / Math.max(1, bars.length);
  bars.forEach((b, i) => {
    const h = (ih * b.value) / max;
    const x = m.l + i * bw;
    const rect = svg("rect", { x: x + 1.5, y: m.t + ih - h, width: Math.max(1, bw - 3), height: h, fill: b.color || color });
    rect.appendChild(svg("title", {}, b.title || `${b.label}: ${b.value}`));
    root.appendChild(rect);
    const tx = x + bw / 2;
    const ty = m.t + ih + 14;
    const label = svg("text", { x: tx, y: ty, "text-anchor": rotate ? "end" : "middle", "font-size": 11, fill: "#344054" }, b.label);
    if (rotate) label.setAttribute("transform", `rotate(-40 ${tx} ${ty})`);
    root.appendChild(label);
  });
  root.appendChild(svg("line", { x1: m.l, x2: width - m.r, y1: m.t + ih, y2: m.t + ih, stroke: "#667085" }));
  if (yLabel) root.appendChild(svg("text", { x: 12, y: m.t + ih / 2, "font-size": 11, fill: "#667085", transform: `rotate(-90 12 ${m.t + ih / 2})`, "text-anchor": "middle" }, yLabel));
  return root;
}

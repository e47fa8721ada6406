/**
 * Inline SVG charts for report.html: a bar chart and a scatter plot, plain markup with no script and no external
 * resources. Each bar carries `class="bar"`, `data-key` (JSON pointer of its value in report.json) and `data-value`;
 * each point `class="point"`, `data-x-key`/`data-y-key` and `data-x`/`data-y`, so tests can match the picture
 * against the data.
 */

/** Escapes text for HTML and SVG content and attribute values (`& < > " '`). */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const r2 = (x: number): string => String(Math.round(x * 100) / 100);

/** A round step (1, 2, 2.5, 5 × 10^k) giving about `target` intervals over [lo, hi]. */
function niceStep(lo: number, hi: number, target: number, integer = false): number {
  const raw = (hi - lo) / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = (integer ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10]).map((m) => m * mag).find((s) => s >= raw * (1 - 1e-12))!;
  return integer ? Math.max(1, Math.round(step)) : step;
}

/** About `target` round tick values inside [lo, hi] (whole numbers only with `integer`). */
export function niceTicks(lo: number, hi: number, target = 5, integer = false): number[] {
  if (!(hi > lo)) hi = lo + (lo === 0 ? 1 : Math.abs(lo));
  const step = niceStep(lo, hi, target, integer);
  const ticks: number[] = [];
  for (let i = Math.ceil(lo / step - 1e-9); i * step <= hi + step * 1e-9; i++) ticks.push(i === 0 ? 0 : Number((i * step).toPrecision(12)));
  return ticks;
}

/** Axis domain: from min(0, data) to the next round tick at or above the data maximum (or `fixed`). */
export function niceDomain(values: readonly number[], fixed?: [number, number], integer = false): [number, number] {
  if (fixed) return fixed;
  const lo0 = Math.min(0, ...values);
  let hi0 = Math.max(0, ...values);
  if (!(hi0 > lo0)) hi0 = lo0 + 1;
  const step = niceStep(lo0, hi0, 5, integer);
  return [Math.floor(lo0 / step + 1e-9) * step, Number((Math.ceil(hi0 / step - 1e-9) * step).toPrecision(12))];
}

export interface Bar {
  label: string;
  value: number;
  /** JSON pointer (RFC 6901) of the value in report.json. */
  key: string;
  /** Tooltip (defaults to label and formatted value). */
  title?: string;
  color?: string;
}

export interface BarChartOptions {
  title: string;
  yLabel: string;
  format: (v: number) => string;
  /** Counts: whole-number ticks. */
  integer?: boolean;
  /** Fixed y range (e.g. shared by two charts that are compared). */
  yDomain?: [number, number];
  /** Dashed horizontal reference lines (e.g. the overall mean). */
  refLines?: { value: number; label: string }[];
  width?: number;
  height?: number;
  color?: string;
}

const FONT = 'font-family="Helvetica, Arial, sans-serif"';

function svgOpen(width: number, height: number, title: string, cls: string): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" class="chart ${cls}" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${escapeHtml(title)}" ${FONT} font-size="11">` +
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>` +
    `<text x="${width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">${escapeHtml(title)}</text>`;
}

function yAxis(x0: number, y: (v: number) => number, ticks: number[], format: (v: number) => string, width: number, label: string, top: number, bottom: number): string {
  let s = '';
  for (const t of ticks) {
    const yy = r2(y(t));
    s += `<line x1="${x0}" y1="${yy}" x2="${width}" y2="${yy}" stroke="#e3e3e3"/>`;
    s += `<text x="${x0 - 4}" y="${yy}" text-anchor="end" dominant-baseline="middle">${escapeHtml(format(t))}</text>`;
  }
  s += `<line x1="${x0}" y1="${top}" x2="${x0}" y2="${bottom}" stroke="#555"/>`;
  s += `<text transform="translate(12 ${r2((top + bottom) / 2)}) rotate(-90)" text-anchor="middle">${escapeHtml(label)}</text>`;
  return s;
}

/** A vertical bar chart, one `<rect class="bar">` per entry. */
export function barChartSvg(bars: readonly Bar[], o: BarChartOptions): string {
  const width = o.width ?? Math.max(380, Math.min(900, 90 + bars.length * 56));
  const height = o.height ?? 280;
  const [left, right, top, bottom] = [64, 12, 40, height - 44];
  const values = [...bars.map((b) => b.value), ...(o.refLines ?? []).map((l) => l.value)];
  const [lo, hi] = niceDomain(values.length > 0 ? values : [0, 1], o.yDomain, o.integer);
  const y = (v: number): number => bottom - ((v - lo) / (hi - lo)) * (bottom - top);
  let s = svgOpen(width, height, o.title, 'bar-chart');
  s += yAxis(left, y, niceTicks(lo, hi, 5, o.integer), o.format, width - right, o.yLabel, top, bottom);
  const slot = (width - left - right) / Math.max(1, bars.length);
  const bw = Math.max(2, Math.min(48, slot * 0.7));
  bars.forEach((b, i) => {
    const x = left + slot * i + (slot - bw) / 2;
    const [y0, y1] = [y(Math.max(0, lo)), y(b.value)];
    const title = b.title ?? `${b.label}: ${o.format(b.value)}`;
    s += `<rect class="bar" data-key="${escapeHtml(b.key)}" data-value="${b.value}" x="${r2(x)}" y="${r2(Math.min(y0, y1))}" width="${r2(bw)}" height="${r2(Math.abs(y0 - y1))}" fill="${b.color ?? o.color ?? '#4e79a7'}"><title>${escapeHtml(title)}</title></rect>`;
    s += `<text x="${r2(x + bw / 2)}" y="${r2(Math.min(y0, y1) - 3)}" text-anchor="middle" font-size="10">${escapeHtml(o.format(b.value))}</text>`;
    s += `<text x="${r2(x + bw / 2)}" y="${bottom + 14}" text-anchor="middle">${escapeHtml(b.label)}</text>`;
  });
  for (const l of o.refLines ?? []) {
    const yy = r2(y(l.value));
    s += `<line class="ref-line" x1="${left}" y1="${yy}" x2="${width - right}" y2="${yy}" stroke="#c0392b" stroke-dasharray="5 4"/>`;
    s += `<text x="${width - right - 2}" y="${Number(yy) - 3}" text-anchor="end" fill="#c0392b">${escapeHtml(`${l.label} ${o.format(l.value)}`)}</text>`;
  }
  s += `<line x1="${left}" y1="${r2(y(Math.max(0, lo)))}" x2="${width - right}" y2="${r2(y(Math.max(0, lo)))}" stroke="#555"/>`;
  return `${s}</svg>`;
}

export type MarkerShape = 'circle' | 'square' | 'diamond' | 'triangle';

export interface ScatterGroup {
  id: string;
  label: string;
  color: string;
  shape: MarkerShape;
}

export interface ScatterPoint {
  x: number;
  y: number;
  /** Short text next to the marker. */
  label: string;
  /** Tooltip text (defaults to the label). */
  title?: string;
  group: string;
  /** JSON pointers of x and y in report.json. */
  xKey: string;
  yKey: string;
}

export interface ScatterOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  xFormat: (v: number) => string;
  yFormat: (v: number) => string;
  groups: readonly ScatterGroup[];
  yDomain?: [number, number];
  width?: number;
  height?: number;
}

function marker(shape: MarkerShape, x: number, y: number, size: number): { tag: string; geom: string } {
  switch (shape) {
    case 'circle':
      return { tag: 'circle', geom: `cx="${r2(x)}" cy="${r2(y)}" r="${size}"` };
    case 'square':
      return { tag: 'rect', geom: `x="${r2(x - size)}" y="${r2(y - size)}" width="${2 * size}" height="${2 * size}"` };
    case 'diamond':
      return { tag: 'polygon', geom: `points="${r2(x)},${r2(y - size * 1.4)} ${r2(x + size * 1.4)},${r2(y)} ${r2(x)},${r2(y + size * 1.4)} ${r2(x - size * 1.4)},${r2(y)}"` };
    case 'triangle':
      return { tag: 'polygon', geom: `points="${r2(x)},${r2(y - size * 1.4)} ${r2(x + size * 1.3)},${r2(y + size)} ${r2(x - size * 1.3)},${r2(y + size)}"` };
  }
}

/** A scatter plot with a legend, one `class="point"` marker per point (shape and color by group). */
export function scatterSvg(points: readonly ScatterPoint[], o: ScatterOptions): string {
  const width = o.width ?? 560;
  const height = o.height ?? 340;
  const [left, right, top, bottom] = [64, 150, 36, height - 44];
  const [x0, x1] = niceDomain(points.map((p) => p.x));
  const [y0, y1] = niceDomain(points.map((p) => p.y), o.yDomain);
  const x = (v: number): number => left + ((v - x0) / (x1 - x0)) * (width - left - right);
  const y = (v: number): number => bottom - ((v - y0) / (y1 - y0)) * (bottom - top);
  let s = svgOpen(width, height, o.title, 'scatter');
  s += yAxis(left, y, niceTicks(y0, y1), o.yFormat, width - right, o.yLabel, top, bottom);
  for (const t of niceTicks(x0, x1)) {
    s += `<line x1="${r2(x(t))}" y1="${bottom}" x2="${r2(x(t))}" y2="${bottom + 4}" stroke="#555"/>`;
    s += `<text x="${r2(x(t))}" y="${bottom + 15}" text-anchor="middle">${escapeHtml(o.xFormat(t))}</text>`;
  }
  s += `<line x1="${left}" y1="${bottom}" x2="${width - right}" y2="${bottom}" stroke="#555"/>`;
  s += `<text x="${r2((left + width - right) / 2)}" y="${height - 8}" text-anchor="middle">${escapeHtml(o.xLabel)}</text>`;
  const byId = new Map(o.groups.map((g) => [g.id, g]));
  for (const p of points) {
    const g = byId.get(p.group) ?? { color: '#333', shape: 'circle' as const };
    const m = marker(g.shape, x(p.x), y(p.y), 5);
    s += `<${m.tag} class="point" data-x-key="${escapeHtml(p.xKey)}" data-y-key="${escapeHtml(p.yKey)}" data-x="${p.x}" data-y="${p.y}" ${m.geom} fill="${g.color}" fill-opacity="0.85" stroke="#222" stroke-width="0.6"><title>${escapeHtml(`${p.title ?? p.label}: ${o.xFormat(p.x)}, ${o.yFormat(p.y)}`)}</title></${m.tag}>`;
    s += `<text x="${r2(x(p.x) + 7)}" y="${r2(y(p.y) - 6)}" font-size="9" fill="#333">${escapeHtml(p.label)}</text>`;
  }
  const used = o.groups.filter((g) => points.some((p) => p.group === g.id));
  used.forEach((g, i) => {
    const ly = top + 10 + i * 18;
    const m = marker(g.shape, width - right + 16, ly, 5);
    s += `<${m.tag} ${m.geom} fill="${g.color}" stroke="#222" stroke-width="0.6"/>`;
    s += `<text x="${width - right + 26}" y="${ly}" dominant-baseline="middle">${escapeHtml(g.label)}</text>`;
  });
  return `${s}</svg>`;
}

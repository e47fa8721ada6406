/**
 * report.html: one self-contained file (inline CSS, inline SVG charts, no script, no external URL) rendering a
 * `Report`: the claims as tested, quality vs MACs, experts and routing, per-category MACs and adherence, code usage
 * with and without OT, an image grid per expert and the run metadata. Every number cell carries `data-key` (JSON
 * pointer into report.json) and `data-value` (the exact number), so the page can be checked against the JSON.
 * `writeReport` writes report.json and report.html atomically; images are embedded as data URIs or linked relatively.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { InputError, writeFileAtomic, writeJsonAtomic } from '@aptp/core';
import { barChartSvg, escapeHtml, niceDomain, scatterSvg, type ScatterGroup, type ScatterPoint } from './charts';
import { formatMacs, formatNumber, formatRatio, type ClaimStatus, type Report, type ReportPrompt, type ReportRatio, type VariantKind } from './report';

export const REPORT_JSON_FILE = 'report.json';
export const REPORT_HTML_FILE = 'report.html';

/** JSON pointer (RFC 6901) of a path in report.json. */
export function jsonPointer(...parts: (string | number)[]): string {
  return parts.map((p) => `/${String(p).replace(/~/g, '~0').replace(/\//g, '~1')}`).join('');
}

/** A table cell holding a number: formatted text, exact value in `data-value`, its JSON pointer in `data-key`. */
function num(key: string, value: number | null, format: (v: number | null) => string = formatNumber): string {
  return `<td class="num" data-key="${escapeHtml(key)}" data-value="${value === null ? 'null' : value}">${escapeHtml(format(value))}</td>`;
}

function ratioCell(key: string, r: ReportRatio | null | undefined): string {
  if (!r) return '<td class="num">–</td>';
  return `<td class="num" data-key="${escapeHtml(`${key}/ratio`)}" data-value="${r.ratio === null ? 'null' : r.ratio}">${escapeHtml(formatRatio(r))}</td>`;
}

const pct = (v: number): string => `${formatNumber(100 * v, 3)} %`;

const KIND_STYLE: Record<VariantKind, ScatterGroup> = {
  aptp: { id: 'aptp', label: 'APTP (routed)', color: '#e15759', shape: 'diamond' },
  expert: { id: 'expert', label: 'APTP expert', color: '#f28e2b', shape: 'circle' },
  teacher: { id: 'teacher', label: 'full teacher', color: '#59a14f', shape: 'triangle' },
  singleArchitecture: { id: 'singleArchitecture', label: 'single-arch.', color: '#4e79a7', shape: 'square' },
  random: { id: 'random', label: 'random arch.', color: '#9c755f', shape: 'square' },
  noOt: { id: 'noOt', label: 'no OT', color: '#b07aa1', shape: 'square' },
  baseline: { id: 'baseline', label: 'other baseline', color: '#76b7b2', shape: 'square' },
};

const SHORT_LABEL: Record<VariantKind, string> = { aptp: 'APTP', expert: 'E', teacher: 'teacher', singleArchitecture: 'single-arch.', random: 'random', noOt: 'no OT', baseline: 'baseline' };

const STATUS_CLASS: Record<ClaimStatus, string> = { holds: 'holds', 'does not hold': 'fails', untested: 'untested' };

const CSS = `
body{font:14px/1.45 Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}
header,section{max-width:1200px;margin:0 auto;padding:8px 24px}
header{border-bottom:1px solid #ddd;background:#fff}
h1{font-size:22px;margin:12px 0 4px}h2{font-size:18px;margin:24px 0 8px;border-bottom:1px solid #ddd}h3{font-size:15px;margin:16px 0 6px}
nav a{margin-right:12px;color:#335}
table{border-collapse:collapse;margin:8px 0;background:#fff}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.status{font-weight:bold;white-space:nowrap}.holds{color:#1e7b34}.fails{color:#b3261e}.untested{color:#777}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #ddd;background:#fff}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(136px,1fr));gap:8px}
figure{margin:0;background:#fff;border:1px solid #ddd;padding:4px}
figure img{width:100%;image-rendering:pixelated;display:block}
figcaption{font-size:11px;word-wrap:break-word}.missing{color:#b3261e;font-size:11px;padding:24px 4px}
.muted{color:#777;font-size:12px}pre{background:#fff;border:1px solid #ddd;padding:8px;overflow:auto;max-height:480px}
`;

export interface RenderReportOptions {
  /** `src` of a prompt row's image, or null when missing (then a placeholder names the file). */
  imageSrc?: (row: ReportPrompt, index: number) => string | null;
  /** Images shown per expert in the grid, in row order (default 24). */
  maxImagesPerExpert?: number;
}

function table(head: string[], rows: string[]): string {
  return `<table><thead><tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join('')}</tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

function claimsSection(r: Report): string {
  const groups = { quality: '(a) quality', macsByCategory: '(b) MACs per category', codeUsage: '(c) code usage' };
  const rows = r.claims.map(
    (c, i) =>
      `<tr data-key="${escapeHtml(jsonPointer('claims', i))}"><td>${escapeHtml(groups[c.group])}</td><td>${escapeHtml(c.claim)}</td>` +
      `<td>${escapeHtml(c.comparison)}</td><td class="status ${STATUS_CLASS[c.status]}">${escapeHtml(c.status)}</td></tr>`,
  );
  const counts = (['holds', 'does not hold', 'untested'] as const).map((s) => `${s}: ${r.claims.filter((c) => c.status === s).length}`).join(', ');
  return `<section id="claims"><h2>The paper's claims as tested</h2>
<p class="muted">Each status is computed from this run's numbers by the strict comparison shown (lower distance / higher adherence is better; the teacher comparison allows equality). Where the data allow, a p-value says how often a gap this large would arise between two models that do not differ — adherence counts: Fisher's exact test; MACs per category: a permutation test (9999 relabellings); p ≥ 0.05 means the gap may be chance. Distances and code-usage entropies are one number per run and have no p. "Same average MACs" means within ${escapeHtml(pct(r.claimOptions.sameMacsRelTol))} of the baseline. ${escapeHtml(counts)}.</p>
${r.claims.length > 0 ? table(['question', 'claim', 'comparison', 'status'], rows) : '<p>No claims could be tested from the input.</p>'}</section>`;
}

function summarySection(r: Report): string {
  const s = r.summary;
  const rows = [
    `<tr><th>prompts shown (rows)</th>${num(jsonPointer('summary', 'prompts'), s.prompts)}</tr>`,
    `<tr><th>prompts routed</th>${num(jsonPointer('summary', 'promptsRouted'), s.promptsRouted)}</tr>`,
    `<tr><th>experts</th>${num(jsonPointer('summary', 'experts'), s.experts)}</tr>`,
    `<tr><th>mean MACs per UNet call (routed)</th>${num(jsonPointer('summary', 'meanMacsRouted'), s.meanMacsRouted, formatMacs)}</tr>`,
    `<tr><th>teacher MACs per UNet call</th>${num(jsonPointer('summary', 'teacherMacs'), s.teacherMacs, formatMacs)}</tr>`,
    `<tr><th>prompt adherence (rows)</th>${ratioCell(jsonPointer('summary', 'adherence'), s.adherence)}</tr>`,
  ];
  if (s.latency) {
    rows.push(`<tr><th>latency per image, mean (ms)</th>${num(jsonPointer('summary', 'latency', 'meanMs'), s.latency.meanMs)}</tr>`);
    rows.push(`<tr><th>latency per image, p50 / p95 (ms)</th>${num(jsonPointer('summary', 'latency', 'p50Ms'), s.latency.p50Ms)}${num(jsonPointer('summary', 'latency', 'p95Ms'), s.latency.p95Ms)}</tr>`);
  }
  return `<section id="summary"><h2>Summary</h2><table><tbody>${rows.join('')}</tbody></table></section>`;
}

function qualitySection(r: Report): string {
  const cats = r.categories.map((c) => c.name);
  const hasClip = r.variants.some((v) => v.clipScore !== null);
  const head = ['model', 'kind', 'mean MACs', 'MACs / teacher', 'FID-style ↓', 'CMMD-style ↓', ...(hasClip ? ['CLIP score ↑'] : []), 'adherence ↑', ...cats.map((c) => `adherence: ${c}`)];
  const rows = r.variants.map((v, i) => {
    const k = (...p: (string | number)[]): string => jsonPointer('variants', i, ...p);
    return (
      `<tr><td>${escapeHtml(v.name)}</td><td>${escapeHtml(v.kind)}</td>${num(k('meanMacs'), v.meanMacs, formatMacs)}${num(k('macsRatioToTeacher'), v.macsRatioToTeacher)}` +
      `${num(k('fid'), v.fid)}${num(k('cmmd'), v.cmmd)}${hasClip ? num(k('clipScore'), v.clipScore) : ''}${ratioCell(k('adherence', 'overall'), v.adherence?.overall)}` +
      cats.map((c) => ratioCell(k('adherence', 'perCategory', c), v.adherence?.perCategory[c])).join('') +
      '</tr>'
    );
  });
  const groups = Object.values(KIND_STYLE);
  const pointsFor = (y: (i: number) => number | null, yKey: (i: number) => string): ScatterPoint[] =>
    r.variants.flatMap((v, i) => {
      const yy = y(i);
      const label = v.kind === 'expert' ? `E${v.expert}` : v.kind === 'baseline' ? v.name : SHORT_LABEL[v.kind];
      return yy === null ? [] : [{ x: v.meanMacs, y: yy, label, title: v.name, group: v.kind, xKey: jsonPointer('variants', i, 'meanMacs'), yKey: yKey(i) }];
    });
  const fidPoints = pointsFor((i) => r.variants[i]!.fid, (i) => jsonPointer('variants', i, 'fid'));
  const adhPoints = pointsFor((i) => r.variants[i]!.adherence?.overall.ratio ?? null, (i) => jsonPointer('variants', i, 'adherence', 'overall', 'ratio'));
  const macsFmt = (v: number): string => formatMacs(v);
  const charts = [
    fidPoints.length > 0
      ? scatterSvg(fidPoints, { title: 'FID-style distance vs MACs (lower is better)', xLabel: 'mean MACs per UNet call', yLabel: 'FID-style distance', xFormat: macsFmt, yFormat: (v) => formatNumber(v, 3), groups })
      : '<p class="muted">No variant has an FID-style distance.</p>',
    adhPoints.length > 0
      ? scatterSvg(adhPoints, { title: 'Prompt adherence vs MACs (higher is better)', xLabel: 'mean MACs per UNet call', yLabel: 'prompt adherence', xFormat: macsFmt, yFormat: pct, groups, yDomain: [0, 1] })
      : '<p class="muted">No variant has a prompt adherence.</p>',
  ];
  return `<section id="quality"><h2>Quality vs MACs</h2><div class="charts">${charts.join('')}</div>
${r.variants.length > 0 ? table(head, rows) : '<p>No model variants were evaluated.</p>'}
<p class="muted">FID/CMMD-style distances use the same feature extractor for every variant; compare only within this table.</p></section>`;
}

function expertsSection(r: Report): string {
  const rows = r.experts.map((e, i) => {
    const k = (f: string): string => jsonPointer('experts', i, f);
    return `<tr><td>${escapeHtml(e.name)}</td>${num(k('macs'), e.macs, formatMacs)}${num(k('macsRatio'), e.macsRatio)}${num(k('params'), e.params, formatMacs)}${num(k('promptsRouted'), e.promptsRouted)}${num(k('routedShare'), e.routedShare, (v) => (v === null ? '–' : pct(v)))}${num(k('meanLatencyMs'), e.meanLatencyMs)}</tr>`;
  });
  const chart = barChartSvg(
    r.experts.map((e, i) => ({ label: `E${e.id}`, value: e.promptsRouted, key: jsonPointer('experts', i, 'promptsRouted'), title: `${e.name}: ${e.promptsRouted} prompts, ${formatMacs(e.macs)} MACs` })),
    { title: 'Routing histogram (prompts per expert)', yLabel: 'prompts routed', format: (v) => formatNumber(v, 3), integer: true },
  );
  return `<section id="experts"><h2>Experts and routing</h2><div class="charts">${chart}</div>
${table(['expert', 'MACs per UNet call', 'MACs ratio', 'parameters', 'prompts routed', 'share', 'mean latency per image (ms)'], rows)}</section>`;
}

function categoriesSection(r: Report): string {
  const rowCats = r.categories.filter((c) => c.prompts > 0);
  const chart =
    rowCats.length > 0
      ? barChartSvg(
          rowCats.map((c) => ({ label: c.name, value: c.meanMacs, key: jsonPointer('categories', r.categories.indexOf(c), 'meanMacs'), color: '#f28e2b' })),
          { title: 'Mean MACs per prompt category', yLabel: 'MACs per UNet call', format: formatMacs, refLines: r.summary.meanMacsRows !== null ? [{ value: r.summary.meanMacsRows, label: 'all prompts' }] : [] },
        )
      : '<p class="muted">No prompt rows.</p>';
  const aptp = r.variants.map((v, i) => ({ v, i })).filter(({ v }) => v.adherence !== null && v.kind !== 'expert');
  const head = ['category', 'prompts', 'mean MACs', ...r.experts.map((e) => `→ E${e.id}`), 'adherence (rows)', 'mean latency (ms)', ...aptp.map(({ v }) => `adherence: ${v.name}`)];
  const rows = r.categories.map((c, i) => {
    const k = (...p: (string | number)[]): string => jsonPointer('categories', i, ...p);
    return (
      `<tr><td>${escapeHtml(c.name)}</td>${num(k('prompts'), c.prompts)}${num(k('meanMacs'), c.meanMacs, formatMacs)}` +
      c.expertCounts.map((n, e) => num(k('expertCounts', e), n)).join('') +
      `${ratioCell(k('adherence'), c.adherence)}${num(k('meanLatencyMs'), c.meanLatencyMs)}` +
      aptp.map(({ v, i: vi }) => ratioCell(jsonPointer('variants', vi, 'adherence', 'perCategory', c.name), v.adherence?.perCategory[c.name])).join('') +
      '</tr>'
    );
  });
  return `<section id="categories"><h2>Per prompt category: MACs and adherence</h2><div class="charts">${chart}</div>
${r.categories.length > 0 ? table(head, rows) : ''}</section>`;
}

function codeUsageSection(r: Report): string {
  const parts: string[] = [];
  const rows: string[] = [];
  // One y range for both histograms so that they compare at a glance.
  const yDomain = niceDomain([r.codeUsage.withOt, r.codeUsage.withoutOt].flatMap((u) => u?.counts ?? []), undefined, true);
  for (const which of ['withOt', 'withoutOt'] as const) {
    const u = r.codeUsage[which];
    if (!u) continue;
    const label = which === 'withOt' ? 'with OT' : 'without OT';
    parts.push(
      barChartSvg(
        u.counts.map((n, c) => ({ label: `code ${c}`, value: n, key: jsonPointer('codeUsage', which, 'counts', c) })),
        { title: `Code usage ${label}`, yLabel: 'prompts', format: (v) => formatNumber(v, 3), integer: true, yDomain, color: which === 'withOt' ? '#4e79a7' : '#b07aa1' },
      ),
    );
    const k = (f: string): string => jsonPointer('codeUsage', which, f);
    rows.push(`<tr><td>${label}</td>${num(k('codesUsed'), u.codesUsed)}${num(k('total'), u.total)}${num(k('entropy'), u.entropy)}${num(k('normalizedEntropy'), u.normalizedEntropy)}${num(k('maxShare'), u.maxShare)}</tr>`);
  }
  if (parts.length === 0) return '<section id="code-usage"><h2>Code usage with and without OT</h2><p class="muted">Not measured in this run.</p></section>';
  return `<section id="code-usage"><h2>Code usage with and without OT</h2><div class="charts">${parts.join('')}</div>
${table(['routing', 'codes used', 'prompts', 'entropy (nats)', 'normalised entropy', 'max share'], rows)}</section>`;
}

function imagesSection(r: Report, o: RenderReportOptions): string {
  const max = o.maxImagesPerExpert ?? 24;
  const blocks = r.experts.map((e) => {
    const rows = r.prompts.map((p, i) => ({ p, i })).filter(({ p }) => p.expert === e.id);
    const shown = rows.slice(0, max);
    const figures = shown.map(({ p, i }) => {
      const src = o.imageSrc ? o.imageSrc(p, i) : p.image;
      const pic = src === null ? `<div class="missing">missing: ${escapeHtml(p.image)}</div>` : `<img src="${escapeHtml(src)}" alt="${escapeHtml(p.prompt)}" loading="lazy">`;
      const adh = p.adheres === null ? '' : p.adheres ? ' · adheres ✓' : ' · does not adhere ✗';
      return `<figure data-key="${escapeHtml(jsonPointer('prompts', i))}">${pic}<figcaption>${escapeHtml(p.prompt)}<br><span class="muted">${escapeHtml(`${p.category} · seed ${p.seed}${adh}`)}</span></figcaption></figure>`;
    });
    return `<h3>${escapeHtml(`${e.name}: ${formatMacs(e.macs)} MACs (ratio ${formatNumber(e.macsRatio)}), ${e.promptsRouted} prompts routed`)}</h3>
<p class="muted">${escapeHtml(`showing ${shown.length} of ${rows.length} generated images`)}</p>${shown.length > 0 ? `<div class="grid">${figures.join('')}</div>` : ''}`;
  });
  return `<section id="images"><h2>Images per expert</h2>${blocks.join('\n')}</section>`;
}

function runSection(r: Report): string {
  const run = r.run;
  const meta: [string, string][] = [
    ['started', run.startedAt],
    ['finished', run.finishedAt ?? '–'],
    ['backend', run.backend],
    ['run folder', run.runDir ?? '–'],
    ['command', run.command ?? '–'],
    ['seeds', Object.entries(run.seeds).map(([k, v]) => `${k}=${v}`).join(', ') || '–'],
  ];
  const notes = run.notes.length > 0 ? `<ul>${run.notes.map((n) => `<li>${escapeHtml(n)}</li>`).join('')}</ul>` : '';
  return `<section id="run"><h2>Run</h2><table><tbody>${meta.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join('')}</tbody></table>${notes}
<details><summary>Resolved configuration</summary><pre>${escapeHtml(JSON.stringify(run.config, null, 2))}</pre></details></section>`;
}

/** Renders a report as one self-contained HTML page. */
export function renderReportHtml(report: Report, options: RenderReportOptions = {}): string {
  const title = report.run.title;
  const sub = `${report.run.startedAt} · backend ${report.run.backend} · ${report.summary.experts} experts · ${report.summary.promptsRouted} prompts`;
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${escapeHtml(title)}</title><style>${CSS}</style></head>
<body>
<header><h1>${escapeHtml(title)}</h1><p class="muted">${escapeHtml(sub)}</p>
<nav><a href="#claims">claims</a><a href="#summary">summary</a><a href="#quality">quality vs MACs</a><a href="#experts">experts</a><a href="#categories">categories</a><a href="#code-usage">code usage</a><a href="#images">images</a><a href="#run">run</a></nav></header>
${claimsSection(report)}
${summarySection(report)}
${qualitySection(report)}
${expertsSection(report)}
${categoriesSection(report)}
${codeUsageSection(report)}
${imagesSection(report, options)}
${runSection(report)}
</body>
</html>
`;
}

// ---- writing ---------------------------------------------------------------------------------------------------

export interface WriteReportOptions {
  /** Folder the prompt rows' image paths are relative to (default: `dir`). */
  runDir?: string;
  /** `embed`: data URIs; `link`: relative paths; `auto` (default): embed when the grid shows ≤ `embedLimit` images. */
  images?: 'embed' | 'link' | 'auto';
  embedLimit?: number;
  maxImagesPerExpert?: number;
}

export interface WriteReportResult {
  jsonPath: string;
  htmlPath: string;
  imageMode: 'embed' | 'link';
  /** Images shown in the grid. */
  imagesShown: number;
  /** Shown images whose file is missing or not a PNG/JPEG/WebP (run-folder relative paths). */
  missingImages: string[];
}

function imageMime(bytes: Uint8Array): string | null {
  const b = (i: number): number => bytes[i] ?? -1;
  if (b(0) === 0x89 && b(1) === 0x50 && b(2) === 0x4e && b(3) === 0x47) return 'image/png';
  if (b(0) === 0xff && b(1) === 0xd8 && b(2) === 0xff) return 'image/jpeg';
  if (b(0) === 0x52 && b(1) === 0x49 && b(2) === 0x46 && b(3) === 0x46 && b(8) === 0x57 && b(9) === 0x45 && b(10) === 0x42 && b(11) === 0x50) return 'image/webp';
  return null;
}

/**
 * Writes `dir/report.json` and `dir/report.html` (both atomically). Images of the grid are read from
 * `runDir/<row.image>` and embedded as base64 data URIs, or referenced by relative URL from `dir`; a missing or
 * unreadable image is shown as a placeholder and listed in the result, not thrown.
 */
export function writeReport(dir: string, report: Report, options: WriteReportOptions = {}): WriteReportResult {
  const runDir = options.runDir ?? dir;
  const max = options.maxImagesPerExpert ?? 24;
  if (!Number.isInteger(max) || max < 0) throw new InputError('must be an integer >= 0', { field: 'maxImagesPerExpert', found: max });
  const shown = report.experts.reduce((s, e) => s + Math.min(max, report.prompts.filter((p) => p.expert === e.id).length), 0);
  const mode = options.images === 'embed' || options.images === 'link' ? options.images : shown <= (options.embedLimit ?? 300) ? 'embed' : 'link';
  const missing: string[] = [];
  const imageSrc = (row: ReportPrompt): string | null => {
    const file = path.join(runDir, row.image);
    if (mode === 'link') {
      if (!fs.existsSync(file)) {
        missing.push(row.image);
        return null;
      }
      return path.relative(dir, file).split(path.sep).map(encodeURIComponent).join('/');
    }
    let bytes: Buffer;
    try {
      bytes = fs.readFileSync(file);
    } catch {
      missing.push(row.image);
      return null;
    }
    const mime = imageMime(bytes);
    if (mime === null) {
      missing.push(row.image);
      return null;
    }
    return `data:${mime};base64,${bytes.toString('base64')}`;
  };
  const html = renderReportHtml(report, { imageSrc, maxImagesPerExpert: max });
  const jsonPath = path.join(dir, REPORT_JSON_FILE);
  const htmlPath = path.join(dir, REPORT_HTML_FILE);
  writeJsonAtomic(jsonPath, report);
  writeFileAtomic(htmlPath, html);
  return { jsonPath, htmlPath, imageMode: mode, imagesShown: shown, missingImages: missing };
}

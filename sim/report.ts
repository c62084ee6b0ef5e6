import type { Quantiles } from './metrics.ts';
import type { Summary } from './runner.ts';

/**
 * The HTML report of a run: one self-contained file (inline CSS, inline SVG charts, a few lines of
 * inline script that only checks the charts laid out) — no network, no CDN, readable offline. A
 * pure function of the summary, so it is as deterministic as summary.json.
 */

const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#db2777'];

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function fmt(n: number): string {
  if (n === 0) return '0';
  const a = Math.abs(n);
  if (a >= 1e9) return `${+(n / 1e9).toFixed(1)}G`;
  if (a >= 1e6) return `${+(n / 1e6).toFixed(1)}M`;
  if (a >= 1e4) return `${+(n / 1e3).toFixed(1)}k`;
  if (a >= 100) return String(Math.round(n));
  return String(+n.toFixed(a >= 1 ? 1 : 3));
}

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

interface Line {
  name: string;
  x: readonly number[];
  y: readonly number[];
  /** Draw as steps (CDFs). */
  step?: boolean;
}

/** An SVG line chart with axes, ticks and a legend. */
export function lineChart(opts: {
  id: string;
  title: string;
  xLabel: string;
  yLabel: string;
  lines: Line[];
  yMax?: number;
  percent?: boolean;
  /** Logarithmic x axis (values ≤ 0 are clamped to the smallest positive one). */
  logX?: boolean;
}): string {
  const W = 640;
  const H = 260;
  const L = 56;
  const R = 12;
  const T = 28;
  const B = 40;
  const pos = opts.lines.flatMap((l) => l.x).filter((x) => x > 0);
  const floor = pos.length ? Math.min(...pos) : 1;
  const tx = (x: number) => (opts.logX ? Math.log10(Math.max(x, floor)) : x);
  const allX = opts.lines.flatMap((l) => l.x).map(tx);
  const allY = opts.lines.flatMap((l) => l.y);
  const xMin = allX.length ? Math.min(...allX) : 0;
  const xMaxRaw = allX.length ? Math.max(...allX) : 1;
  const xMax = xMaxRaw > xMin ? xMaxRaw : xMin + 1;
  const yMax = opts.yMax ?? niceMax(allY.length ? Math.max(...allY) : 1);
  const sx = (x: number) => L + ((tx(x) - xMin) / (xMax - xMin)) * (W - L - R);
  const sy = (y: number) => T + (1 - y / yMax) * (H - T - B);
  const parts: string[] = [];
  parts.push(`<text x="${W / 2}" y="16" class="title">${esc(opts.title)}</text>`);
  for (let i = 0; i <= 4; i++) {
    const y = (yMax * i) / 4;
    parts.push(
      `<line x1="${L}" x2="${W - R}" y1="${sy(y).toFixed(1)}" y2="${sy(y).toFixed(1)}" class="grid"/>`,
      `<text x="${L - 4}" y="${(sy(y) + 4).toFixed(1)}" class="yt">${opts.percent ? `${Math.round(y * 100)}%` : fmt(y)}</text>`,
    );
    const x = xMin + ((xMax - xMin) * i) / 4;
    const px = L + ((x - xMin) / (xMax - xMin)) * (W - L - R);
    parts.push(
      `<text x="${px.toFixed(1)}" y="${H - B + 16}" class="xt">${fmt(opts.logX ? 10 ** x : x)}</text>`,
    );
  }
  parts.push(
    `<line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" class="axis"/>`,
    `<line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" class="axis"/>`,
    `<text x="${(L + W - R) / 2}" y="${H - 6}" class="xl">${esc(opts.xLabel)}</text>`,
    `<text x="12" y="${(T + H - B) / 2}" class="yl" transform="rotate(-90 12 ${(T + H - B) / 2})">${esc(opts.yLabel)}</text>`,
  );
  opts.lines.forEach((l, i) => {
    if (l.x.length === 0) return;
    const pts: string[] = [];
    l.x.forEach((x, k) => {
      const y = l.y[k]!;
      if (l.step && k > 0) pts.push(`${sx(x).toFixed(1)},${sy(l.y[k - 1]!).toFixed(1)}`);
      pts.push(`${sx(x).toFixed(1)},${sy(y).toFixed(1)}`);
    });
    const color = COLORS[i % COLORS.length]!;
    parts.push(`<path class="data" d="M${pts.join('L')}" stroke="${color}"/>`);
    parts.push(
      `<rect x="${L + 8 + i * 120}" y="${T + 2}" width="10" height="10" fill="${color}"/>`,
      `<text x="${L + 22 + i * 120}" y="${T + 11}" class="lg">${esc(l.name)}</text>`,
    );
  });
  if (opts.lines.every((l) => l.x.length === 0))
    parts.push(`<text x="${W / 2}" y="${H / 2}" class="title">no data</text>`);
  return `<svg class="chart" id="${opts.id}" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" xmlns="http://www.w3.org/2000/svg">${parts.join('')}</svg>`;
}

/** A horizontal bar chart (reasons). */
export function barChart(id: string, title: string, bars: { label: string; value: number }[]): string {
  const W = 640;
  const rowH = 22;
  const H = 30 + Math.max(1, bars.length) * rowH;
  const max = Math.max(1, ...bars.map((b) => b.value));
  const L = 300;
  const parts = [`<text x="${W / 2}" y="16" class="title">${esc(title)}</text>`];
  bars.forEach((b, i) => {
    const y = 26 + i * rowH;
    const w = ((W - L - 60) * b.value) / max;
    parts.push(
      `<text x="${L - 6}" y="${y + 14}" class="yt">${esc(b.label.length > 48 ? `${b.label.slice(0, 47)}…` : b.label)}</text>`,
      `<rect class="data" x="${L}" y="${y + 3}" width="${Math.max(1, w).toFixed(1)}" height="${rowH - 6}" fill="${COLORS[1]}"><title>${esc(b.label)}</title></rect>`,
      `<text x="${(L + w + 4).toFixed(1)}" y="${y + 14}" class="lg">${b.value}</text>`,
    );
  });
  if (bars.length === 0) parts.push(`<text x="${W / 2}" y="44" class="title">none</text>`);
  return `<svg class="chart" id="${id}" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" xmlns="http://www.w3.org/2000/svg">${parts.join('')}</svg>`;
}

function cdfLine(name: string, q: Quantiles, scale = 1): Line {
  return { name, x: q.cdf.map((p) => p[0] * scale), y: q.cdf.map((p) => p[1]), step: true };
}

function qRow(label: string, q: Quantiles, unit: string): string {
  const f = (v: number | null) => (v === null ? '–' : `${fmt(v)} ${unit}`);
  return `<tr><td>${esc(label)}</td><td>${q.count}</td><td>${f(q.p50)}</td><td>${f(q.p90)}</td><td>${f(q.p99)}</td><td>${f(q.max)}</td></tr>`;
}

const CSS = `body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#111;max-width:1340px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.grid2{display:flex;flex-wrap:wrap;gap:16px}.chart{border:1px solid #e5e7eb;background:#fff}
.chart .title{font-size:13px;font-weight:600;text-anchor:middle}.chart .grid{stroke:#eee}
.chart .axis{stroke:#888}.chart .yt{font-size:10px;text-anchor:end}.chart .xt{font-size:10px;text-anchor:middle}
.chart .xl,.chart .yl{font-size:11px;text-anchor:middle;fill:#555}.chart .lg{font-size:11px}
.chart path.data{fill:none;stroke-width:1.6}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}.bad{color:#b91c1c;font-weight:600}.ok{color:#15803d;font-weight:600}
pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:400px}`;

/** Runs in the browser: marks each chart with the size of its plotted marks (a headless test reads it back). */
const CHECK = `(function(){var ok=0,all=document.querySelectorAll('svg.chart');all.forEach(function(s){var w=0,h=0;s.querySelectorAll('.data').forEach(function(e){var b=e.getBBox();w=Math.max(w,b.width);h=Math.max(h,b.height);});s.setAttribute('data-rendered',Math.round(w)+'x'+Math.round(h));if(w>0||h>0)ok++;});document.body.setAttribute('data-charts',ok+'/'+all.length);})();`;

export function renderReport(s: Summary): string {
  const m = s.metrics;
  const se = s.series;
  const parts: string[] = [];
  const verdict =
    s.result === 'ok'
      ? `<span class="ok">all invariants held</span> (${s.invariantChecks} book checks; at rest ${s.restAfterMs} ms after faults stopped)`
      : `<span class="bad">VIOLATION</span>: ${esc(s.violation!.message)}`;
  parts.push(
    `<h1>shoal simulation — ${esc(s.scenario)}</h1>`,
    `<p>seed ${s.seed} · ${s.hosts} hosts · ${s.durationS} s of workload · ${s.events} events · cluster formed in ${s.joinMs} ms (virtual)</p>`,
    `<p>Invariants: ${verdict}</p>`,
  );
  if (s.violation) {
    parts.push(
      `<h2>Violation</h2><p>${esc(s.violation.kind)} at ${(s.violation.atMs / 1000).toFixed(3)} s</p>`,
      `<pre>${esc([...s.violation.details, '', ...s.violation.excerpt].join('\n'))}</pre>`,
    );
  }
  if (m && se) {
    const t = se.t;
    parts.push(
      '<h2>Placement</h2>',
      `<table><tr><th>deploys</th><th>replicas</th><th>placed</th><th>never placed</th><th>success within deadline</th></tr>
<tr><td>${m.deploys}</td><td>${m.replicas}</td><td>${m.placed}</td><td>${m.neverPlaced}</td><td>${m.successRatio === null ? '–' : `${(m.successRatio * 100).toFixed(2)}% of ${m.successEligible}`}</td></tr></table>`,
      '<table><tr><th>latency</th><th>n</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>',
      qRow('submit → held by a host', m.placementLatencyMs, 'ms'),
      qRow('intent reaches every live agent', m.gossip.disseminationMs, 'ms'),
      '</table><div class="grid2">',
      lineChart({
        id: 'chart-latency-cdf',
        title: 'Placement latency (CDF)',
        xLabel: 'ms from submission to a host holding the replica (log scale)',
        logX: true,
        yLabel: 'fraction',
        lines: [cdfLine('placement', m.placementLatencyMs)],
        yMax: 1,
        percent: true,
      }),
      lineChart({
        id: 'chart-replicas',
        title: 'Replicas wanted vs held, deploys pending',
        xLabel: 'virtual time (s)',
        yLabel: 'count',
        lines: [
          { name: 'wanted', x: t, y: se.wanted },
          { name: 'held', x: t, y: se.held },
          { name: 'pending deploys', x: t, y: se.pendingDeploys },
        ],
      }),
      barChart(
        'chart-failed',
        'Replicas never placed, by last reason (host ids and numbers folded)',
        m.failedReasons.map((r) => ({ label: r.reason, value: r.count })),
      ),
      '</div><h2>Resources</h2><div class="grid2">',
      lineChart({
        id: 'chart-util',
        title: 'Utilisation of live hosts (committed / capacity)',
        xLabel: 'virtual time (s)',
        yLabel: 'share',
        lines: [
          { name: 'cpu', x: t, y: se.cpu },
          { name: 'memory', x: t, y: se.memory },
          { name: 'gpu', x: t, y: se.gpu },
        ],
        yMax: 1,
        percent: true,
      }),
      lineChart({
        id: 'chart-frag',
        title: 'Fragmentation: free capacity the typical request cannot use',
        xLabel: 'virtual time (s)',
        yLabel: 'share of free',
        lines: [
          { name: 'cpu', x: t, y: se.fragCpu },
          { name: 'memory', x: t, y: se.fragMemory },
          { name: 'gpu', x: t, y: se.fragGpu },
        ],
        yMax: 1,
        percent: true,
      }),
      '</div><h2>Gossip and membership</h2>',
      `<p>Bytes per live host per second (mean): direct ${fmt(m.gossip.bytesPerHostPerS.direct)} B/s + topic ${fmt(m.gossip.bytesPerHostPerS.topic)} B/s = ${fmt(m.gossip.bytesPerHostPerS.total)} B/s. Messages delivered ${m.gossip.messagesDelivered}, dropped ${m.gossip.messagesDropped}.</p>`,
      `<table><tr><th>heal at (s)</th><th>one state hash after (ms)</th></tr>${m.gossip.healConvergence
        .map((h) => `<tr><td>${(h.healAt / 1000).toFixed(3)}</td><td>${h.convergedAfterMs ?? '–'}</td></tr>`)
        .join('')}</table>`,
      '<div class="grid2">',
      lineChart({
        id: 'chart-dissemination',
        title: 'Intent dissemination to every live agent (CDF)',
        xLabel: 'ms (log scale)',
        logX: true,
        yLabel: 'fraction',
        lines: [cdfLine('dissemination', m.gossip.disseminationMs)],
        yMax: 1,
        percent: true,
      }),
      lineChart({
        id: 'chart-bytes',
        title: 'Bytes per live host per second',
        xLabel: 'virtual time (s)',
        yLabel: 'B/s',
        lines: [{ name: 'direct + topic', x: t, y: se.bytesPerHostPerS }],
      }),
      lineChart({
        id: 'chart-membership',
        title: 'Membership transitions observed (all agents, per interval)',
        xLabel: 'virtual time (s)',
        yLabel: 'observations',
        lines: Object.entries(se.membership)
          .filter(([k]) => !k.startsWith('new->'))
          .map(([k, v]) => ({ name: k, x: t, y: v })),
      }),
      lineChart({
        id: 'chart-hosts',
        title: 'Live hosts',
        xLabel: 'virtual time (s)',
        yLabel: 'hosts',
        lines: [{ name: 'up', x: t, y: se.upHosts }],
      }),
      '</div>',
      `<table><tr><th>transition</th><th>observations</th></tr>${Object.entries(m.membership)
        .map(([k, v]) => `<tr><td>${esc(k)}</td><td>${v}</td></tr>`)
        .join('')}</table>`,
    );
  }
  parts.push(
    '<h2>Faults</h2>',
    `<table><tr><th>at (s)</th><th>fault</th><th>detail</th></tr>${s.faults
      .map(
        (f) =>
          `<tr><td>${(f.atMs / 1000).toFixed(3)}</td><td>${esc(f.kind)}</td><td>${esc(f.detail)}</td></tr>`,
      )
      .join('')}</table>`,
  );
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>shoal sim — ${esc(s.scenario)} (seed ${s.seed})</title><style>${CSS}</style></head><body>${parts.join('\n')}<script>${CHECK}</script></body></html>\n`;
}

import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { renderReport } from '../sim/report.ts';
import { runScenario } from '../sim/runner.ts';
import { loadScenario } from '../sim/scenario.ts';

/**
 * The HTML report renders in headless Chromium, offline: every chart's plotted marks get a
 * non-empty layout box (the report's inline check writes it into the DOM; --dump-dom reads it
 * back), and a screenshot is a real PNG. Chromium comes from scripts/chromium-up.sh; without it
 * the test skips — except under CI=true, where it fails.
 */

function findChromium(): string | undefined {
  const env = process.env.SHOAL_CHROMIUM;
  if (env && existsSync(env)) return env;
  for (const p of ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'])
    if (existsSync(p)) return p;
  return undefined;
}

const chromium = findChromium();
const ci = process.env.CI === 'true';

describe('HTML report', () => {
  it.skipIf(!chromium && !ci)(
    'renders every chart in headless Chromium, offline',
    { timeout: 240_000 },
    async () => {
      if (!chromium)
        expect.fail('CI=true but no Chromium: run scripts/chromium-up.sh (or set SHOAL_CHROMIUM)');
      const r = await runScenario(loadScenario('test/fixtures/sim/tiny.yaml'));
      const html = renderReport(r.summary);
      expect(html).not.toMatch(/(src|href)="(https?:)?\/\//);
      const dir = mkdtempSync(join(tmpdir(), 'shoal-report-'));
      const file = join(dir, 'report.html');
      writeFileSync(file, html);
      const flags = [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-dev-shm-usage',
        '--no-first-run',
        `--user-data-dir=${join(dir, 'profile')}`,
      ];
      const dom = execFileSync(chromium!, [...flags, '--dump-dom', `file://${file}`], {
        encoding: 'utf8',
        timeout: 120_000,
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      const charts = [...dom.matchAll(/<svg class="chart" id="([^"]+)"[^>]*data-rendered="(\d+)x(\d+)"/g)];
      const expected = [...html.matchAll(/<svg class="chart" id="([^"]+)"/g)].map((m) => m[1]);
      expect(charts.map((m) => m[1])).toEqual(expected);
      expect(expected.length).toBeGreaterThanOrEqual(9);
      for (const [, id, w, h] of charts) {
        // Line charts span the plot; bar charts at least one bar.
        expect(Number(w), id).toBeGreaterThan(0);
        if (!id!.includes('failed')) expect(Number(h) + Number(w), id).toBeGreaterThan(50);
      }
      expect(dom).toContain(`data-charts="${expected.length}/${expected.length}"`);
      const png = join(dir, 'shot.png');
      execFileSync(
        chromium!,
        [...flags, '--window-size=1340,2000', `--screenshot=${png}`, `file://${file}`],
        {
          timeout: 120_000,
          stdio: 'ignore',
        },
      );
      const buf = readFileSync(png);
      expect(buf.subarray(1, 4).toString()).toBe('PNG');
      expect(buf.readUInt32BE(16)).toBe(1340);
      expect(buf.length).toBeGreaterThan(30_000);
    },
  );
});

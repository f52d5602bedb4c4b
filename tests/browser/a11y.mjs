// Accessibility checks for run.mjs: axe-core (a dev dependency, from node_modules) run in
// the page. The page's Content-Security-Policy allows only its own scripts
// (script-src 'self'), so axe is not added as a <script>: its source is evaluated through
// the DevTools protocol (page.evaluate), which the CSP does not govern. The served CSP
// stays as strict as it is.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

/** Impacts that fail the run; "minor" and "moderate" are printed but tolerated. */
const FAILING = new Set(['serious', 'critical']);

/** Makes `window.axe` available on the page (again after each navigation). */
async function inject(page) {
  if (await page.evaluate(() => typeof window.axe === 'object')) return;
  await page.evaluate(AXE_SOURCE);
}

/**
 * Runs axe on the whole page (WCAG 2.x A and AA rules and axe's best practices). Returns
 * `{violations, failing}`: every violation, and the serious or critical ones.
 */
export async function axeRun(page) {
  await inject(page);
  const result = await page.evaluate(async () => {
    const r = await window.axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] },
      resultTypes: ['violations'],
    });
    return r.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.map((n) => ({ target: n.target.join(' '), summary: n.failureSummary })),
    }));
  });
  return { violations: result, failing: result.filter((v) => FAILING.has(v.impact)) };
}

/** A violation list in words, one rule a paragraph, at most `perRule` elements each. */
export function describe(violations, perRule = 4) {
  return violations
    .map((v) => {
      const nodes = v.nodes
        .slice(0, perRule)
        .map((n) => `      ${n.target}\n        ${String(n.summary || '').replace(/\n\s*/g, ' / ')}`)
        .join('\n');
      const more = v.nodes.length > perRule ? `\n      … and ${v.nodes.length - perRule} more` : '';
      return `    [${v.impact}] ${v.id}: ${v.help} (${v.nodes.length} element${v.nodes.length === 1 ? '' : 's'})\n${nodes}${more}`;
    })
    .join('\n');
}

// Glass-to-glass player of `bench latency` (bench/src/latency/glass.rs): opens the latency page
// in headless Chromium (playwright-core from web/node_modules), waits for the first decoded
// frame, collects samples for `seconds`, and writes the result as JSON to `out`.
//
//   node latency-player.mjs '{"webDir": ..., "chromium": ..., "url": ..., "seconds": 30,
//                             "timeoutMs": 90000, "out": "result.json"}'
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';

const opts = JSON.parse(process.argv[2] || '{}');
const require = createRequire(`${opts.webDir}/package.json`);
const { chromium } = require('playwright-core');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const logs = [];
const browser = await chromium.launch({
  executablePath: opts.chromium || '/usr/bin/chromium',
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on('console', (m) => logs.push(`[console.${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`[pageerror] ${e.message}`));
  const opened = Date.now();
  await page.goto(opts.url);
  await page.waitForFunction(() => window.samples && window.samples.length > 0, null, {
    timeout: opts.timeoutMs || 90000,
    polling: 50,
  });
  const firstFrame = Date.now();
  process.stderr.write(`first decoded frame ${firstFrame - opened} ms after opening the page\n`);
  await sleep(opts.seconds * 1000);
  const result = await page.evaluate(() => ({
    samples: window.samples,
    info: window.info,
    state: window.hlsState(),
  }));
  result.startupMs = firstFrame - opened;
  result.logs = logs.slice(-50);
  writeFileSync(opts.out, JSON.stringify(result));
} catch (e) {
  writeFileSync(opts.out, JSON.stringify({ error: String(e && e.stack || e), logs: logs.slice(-50) }));
  process.exitCode = 1;
} finally {
  await browser.close();
}

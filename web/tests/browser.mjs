// Drives the vstream page in headless Chromium, for tests/browser.rs (which starts the server).
//
//   node web/tests/browser.mjs <scenario> '<json options>'
//
// Scenarios (options: base = the server's http URL, and as listed):
//   publish-and-watch {channel, key, source, size, seconds, minAdvance, screenshot}
//       one page publishes (camera / pattern) over the WebSocket; once the master playlist
//       exists a second page plays it until video.currentTime advanced minAdvance seconds.
//   watch {channel, minAdvance, screenshot, previews}
//       a page plays a live stream (published by someone else).
//   vod {channel, minAdvance}
//       a page plays a recorded stream's VOD playlist.
//   publish-refused {channel, key}
//       a page tries to publish and shows an error; the error text is returned.
// On success prints one line `RESULT <json>`; on failure exits 1 with the reason.
import { chromium } from 'playwright-core';

const [scenario, json] = process.argv.slice(2);
const opts = JSON.parse(json || '{}');
const TIMEOUT = opts.timeoutMs || 90_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  ],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const logs = [];

async function newPage() {
  const page = await context.newPage();
  page.on('console', (m) => logs.push(`[console.${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`[pageerror] ${e.message}`));
  return page;
}

function fail(message) {
  throw new Error(message);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, check, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) fail(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

async function streams() {
  const response = await fetch(`${opts.base}/api/streams`);
  if (!response.ok) fail(`/api/streams answered ${response.status}`);
  return response.json();
}

function pageUrl(params = {}) {
  const q = new URLSearchParams(params).toString();
  return `${opts.base}/${q ? `?${q}` : ''}`;
}

async function startPublishing(page) {
  await page.goto(pageUrl({ channel: opts.channel, key: opts.key, source: opts.source || 'camera', size: opts.size || '640x360' }));
  await page.click('#start');
  const state = await until('the publish to start or fail', async () => {
    const s = await page.getAttribute('#publish-status', 'data-state');
    return s === 'live' || s === 'error' ? s : null;
  });
  const text = await page.textContent('#publish-status');
  return { state, text };
}

// Plays what `start` selects in a page and measures the progress of video.currentTime.
async function watchAndMeasure(page, start, minAdvance) {
  await start();
  const first = await until('the video to start', () =>
    page.evaluate(() => {
      const v = document.querySelector('#player');
      return v.currentTime > 0 && !v.paused ? v.currentTime : null;
    }));
  const advanced = await until(`video.currentTime to advance by ${minAdvance} s`, () =>
    page.evaluate(([t0, min]) => {
      const v = document.querySelector('#player');
      return v.currentTime - t0 >= min ? v.currentTime - t0 : null;
    }, [first, minAdvance]));
  const info = await page.evaluate(() => ({
    renditions: [...document.querySelectorAll('#rendition option')].map((o) => o.textContent),
    level: document.querySelector('#level').textContent,
    latency: document.querySelector('#latency').textContent,
    status: document.querySelector('#player-status').textContent,
    width: document.querySelector('#player').videoWidth,
    height: document.querySelector('#player').videoHeight,
    hls: typeof window.Hls === 'function' ? window.Hls.version : null,
  }));
  return { started: first, advanced, ...info };
}

async function watchLive(page, channel) {
  await page.goto(pageUrl());
  const button = `#live-list tr[data-channel="${channel}"] button.watch`;
  await until(`${channel} to be listed as live and ready`, async () => {
    const row = await page.$(`#live-list tr[data-channel="${channel}"]`);
    return row && (await row.textContent()).includes('live') ? row : null;
  });
  await page.click(button);
}

async function run() {
  switch (scenario) {
    case 'publish-and-watch': {
      const publisher = await newPage();
      const publishedAt = Date.now();
      const published = await startPublishing(publisher);
      if (published.state !== 'live') fail(`publishing failed: ${published.text}`);
      const live = await until('the master playlist', async () => {
        const list = await streams();
        return list.live.find((s) => s.channel === opts.channel && s.ready);
      });
      const viewer = await newPage();
      const watched = await watchAndMeasure(viewer, () => watchLive(viewer, opts.channel), opts.minAdvance || 5);
      if (opts.screenshot) {
        await viewer.screenshot({ path: opts.screenshot, fullPage: true });
        await publisher.screenshot({ path: opts.screenshot.replace(/\.png$/, '-publisher.png'), fullPage: true });
      }
      const remaining = (opts.seconds || 15) * 1000 - (Date.now() - publishedAt);
      if (remaining > 0) await sleep(remaining);
      const sentText = await publisher.textContent('#publish-status');
      await publisher.click('#stop');
      await sleep(1500); // the last blob and the close
      return { streamId: live.streamId, master: live.master, publishStatus: sentText, ...watched };
    }
    case 'watch': {
      const page = await newPage();
      const watched = await watchAndMeasure(page, () => watchLive(page, opts.channel), opts.minAdvance || 5);
      let previews = 0;
      if (opts.previews) {
        previews = await until('preview images', () =>
          page.evaluate(() => [...document.querySelectorAll('#preview-images img')].filter((i) => i.complete && i.naturalWidth > 0).length));
      }
      if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true });
      return { ...watched, previews };
    }
    case 'vod': {
      const page = await newPage();
      await page.goto(pageUrl());
      const row = `#recorded-list tr[data-channel="${opts.channel}"]`;
      const watched = await watchAndMeasure(page, async () => {
        await until(`${opts.channel} to be listed as recorded`, () => page.$(`${row} button.play`));
        await page.click(`${row} button.play`);
      }, opts.minAdvance || 3);
      if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true });
      return watched;
    }
    case 'publish-refused': {
      const page = await newPage();
      const published = await startPublishing(page);
      if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true });
      return published;
    }
    default:
      fail(`unknown scenario ${scenario}`);
  }
}

try {
  const result = await run();
  console.log(`RESULT ${JSON.stringify(result)}`);
  await browser.close();
} catch (err) {
  console.error(`FAILED ${scenario}: ${err.message}`);
  console.error(logs.slice(-40).join('\n'));
  await browser.close().catch(() => {});
  process.exit(1);
}

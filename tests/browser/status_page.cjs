// Drives the system's Chromium through the status page (GET /) of a running
// `full_system all`, for tests/status_page.rs. Prints one JSON line of what
// it saw on success; exits 1 with the reason otherwise.
//
//   node status_page.cjs watch    WDS_API WDS_TOKEN WDS_SLOW_JOB WDS_HOSTILE_JOB WDS_SCREENSHOT
//   node status_page.cjs control  WDS_API WDS_TOKEN WDS_JOB_A WDS_JOB_B
//
// playwright-core comes from WDS_NODE_MODULES (scripts/test installs the
// pinned version there); the browser is the system's (WDS_CHROMIUM), never
// one downloaded by a tool.
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require(path.join(process.env.WDS_NODE_MODULES, "playwright-core"));

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const row = (job) => `tbody#jobs tr[data-job="${job}"]`;

async function count(page, job, column) {
  // td.num: the state cell also has its state as a class ("cancelled").
  const text = await page.textContent(`${row(job)} td.num.${column}`);
  return Number(String(text).replace(/[^0-9]/g, ""));
}

async function state(page, job) {
  return (await page.textContent(`${row(job)} td.state`)).trim();
}

/// Polls `probe` until it returns a truthy value, up to `ms`.
async function until(what, ms, probe) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await probe();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}

async function openPage(browser) {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(env("WDS_API") + "/");
  // Without the token the API refuses, and the page says what to do.
  await page.waitForSelector("text=Enter the API token", { timeout: 10000 });
  await page.fill("#token", env("WDS_TOKEN"));
  await page.click("#token-form button");
  return { page, errors };
}

async function watch(browser) {
  const { page, errors } = await openPage(browser);
  const slow = env("WDS_SLOW_JOB");
  await page.waitForSelector(row(slow), { timeout: 30000 });
  const lines = await count(page, slow, "lines");
  // The delivered count rises while the page is open, with no reload.
  const first = await until("the slow job to deliver its first lines", 30000, async () => {
    const d = await count(page, slow, "delivered");
    return d > 0 ? d : 0;
  });
  const later = await until("the delivered count to rise on the page", 30000, async () => {
    const d = await count(page, slow, "delivered");
    return d > first ? d : 0;
  });
  const rate = (await page.textContent(`${row(slow)} td.rate`)).trim();
  const eta = (await page.textContent(`${row(slow)} td.eta`)).trim();
  const started = (await page.textContent(`${row(slow)} td.started`)).trim();

  // A hostile file name is shown as text, never parsed as HTML.
  const hostile = env("WDS_HOSTILE_JOB");
  await page.waitForSelector(row(hostile), { timeout: 30000 });
  const shownName = (await page.textContent(`${row(hostile)} summary`)).trim();
  const injected = await page.$$eval("tbody#jobs b, tbody#jobs img", (n) => n.length);

  // The slow job's rejected lines, with their reasons.
  await page.click(`${row(slow)} summary`);
  await page.waitForSelector(`tr[data-detail="${slow}"] table.rejects tbody tr`, { timeout: 10000 });
  const rejects = await page.$$eval(`tr[data-detail="${slow}"] table.rejects tbody tr`, (rows) =>
    rows.map((r) => r.textContent));

  // The queue view.
  const ready = await page.textContent('dd[data-metric="Ready to send"]');

  // An upload through the form becomes a job on the page.
  await page.setInputFiles('#upload input[type="file"]', {
    name: "from-the-page.csv", mimeType: "text/csv", buffer: Buffer.from("page-user-1,hello\npage-user-2,hello\n"),
  });
  await page.click('#upload button[type="submit"]');
  const uploaded = await until("the upload to be accepted", 20000, async () => {
    const n = (await page.textContent("#notice")) || "";
    const m = n.match(/as job ([0-9a-f]{16})/);
    if (n.includes("failed")) throw new Error(n);
    return m ? m[1] : "";
  });
  await page.waitForSelector(row(uploaded), { timeout: 30000 });
  // Did user-1 get it: their line with its receipt.
  await page.fill('#lookup input[name="job"]', slow);
  await page.fill('#lookup input[name="user"]', "user-1");
  await page.click('#lookup button[type="submit"]');
  await page.waitForSelector("#lookup-result li", { timeout: 10000 });
  const lookup = await page.$$eval("#lookup-result li", (items) => items.map((i) => i.textContent));
  const stillDelivering = await count(page, slow, "delivered");

  // The Workers table: the `all` process's own worker, live, its count rising.
  const workers = await until("a live worker that delivered on the Workers table", 30000, async () => {
    const rows = await page.$$eval("tbody#workers tr", (trs) => trs.map((tr) => {
      const cell = (c) => (tr.querySelector("td." + c) || {}).textContent || "";
      return { worker: cell("worker"), process: cell("process"), state: cell("state"), rate: cell("rate"),
        delivered: Number(cell("delivered").replace(/[^0-9]/g, "")), inFlight: cell("in_flight"), seen: cell("seen") };
    }));
    return rows.length > 0 && rows.every((r) => r.delivered > 0) ? rows : null;
  });

  await page.screenshot({ path: env("WDS_SCREENSHOT"), fullPage: true });
  return { lines, first, later, stillDelivering, rate, eta, started, shownName, injected, rejects, ready, uploaded, lookup, workers, errors };
}

async function control(browser) {
  const { page, errors } = await openPage(browser);
  page.on("dialog", (d) => d.accept());
  const a = env("WDS_JOB_A");
  const b = env("WDS_JOB_B");
  await page.waitForSelector(row(a), { timeout: 30000 });
  await until("job A to deliver", 30000, async () => (await count(page, a, "delivered")) > 0);

  await page.click(`${row(a)} button[data-action="pause"]`);
  await until("job A to show paused", 10000, async () => (await state(page, a)).startsWith("paused"));
  // Batches already leased may still land (a worker holds up to 4 batches
  // of 100, which take a second or two each at this rate, shared with B):
  // wait until the count holds still for 5 s, then watch it hold for 3 s.
  let held = await until("job A's count to settle", 40000, async () => {
    const before = await count(page, a, "delivered");
    await new Promise((r) => setTimeout(r, 5000));
    const after = await count(page, a, "delivered");
    return before === after ? after + 1 : 0;
  }) - 1;
  await new Promise((r) => setTimeout(r, 3000));
  const whilePaused = await count(page, a, "delivered");
  if (whilePaused !== held) throw new Error(`delivered rose from ${held} to ${whilePaused} while paused`);

  await page.click(`${row(a)} button[data-action="resume"]`);
  const resumed = await until("job A to deliver again after resume", 20000, async () => {
    const d = await count(page, a, "delivered");
    return d > held ? d : 0;
  });

  await page.click(`${row(b)} button[data-action="cancel"]`);
  const cancelled = await until("job B's cancelled count", 20000, async () => {
    const c = await count(page, b, "cancelled");
    return c > 0 ? c : 0;
  });
  const stateB = await state(page, b);
  return { held, whilePaused, resumed, cancelled, stateB, errors };
}

(async () => {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "wds-chromium-"));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.WDS_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1500, height: 900 },
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  let code = 0;
  try {
    const scenario = process.argv[2];
    const result = scenario === "watch" ? await watch(browser)
      : scenario === "control" ? await control(browser)
      : (() => { throw new Error(`unknown scenario ${scenario}`); })();
    process.stdout.write(JSON.stringify(result) + "\n");
  } catch (e) {
    process.stderr.write(`status page test: ${e && e.stack ? e.stack : e}\n`);
    code = 1;
  } finally {
    await browser.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  process.exit(code);
})();

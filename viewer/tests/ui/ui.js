// Browser test of `profscope serve` in headless Chromium (playwright-core,
// the system's /usr/bin/chromium). Run by viewer/tests/serve_browser.rs:
//
//   node ui.js BASE_URL SCREENSHOT_DIR AGENT_URL [LARGE_SNAPSHOT_ID]
//
// BASE_URL serves a store seeded with the Go fixtures (labels go-cpu,
// before, after, allocs); AGENT_URL is a live agent (or a stub) serving
// /debug/pprof/heap. Prints one line per step and, last, `RESULT {json}`
// with the measured timings; exits non-zero on the first failure.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const [base, shots, agent, largeId] = process.argv.slice(2);
if (!base || !shots || !agent) {
  console.error("usage: node ui.js BASE_URL SCREENSHOT_DIR AGENT_URL [LARGE_SNAPSHOT_ID]");
  process.exit(2);
}
const executablePath = process.env.PROFSCOPE_CHROMIUM || "/usr/bin/chromium";
const result = { steps: [], timings: {} };
// Script errors and failed loads seen so far; checked before the step that
// opens error pages on purpose.
const errors = [];
let expectFailedLoads = false;

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
}
function step(name) {
  result.steps.push(name);
  console.log("ok: " + name);
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, name + ".png"), fullPage: true });
}

async function main() {
  fs.mkdirSync(shots, { recursive: true });
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "profscope-chromium-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    viewport: { width: 1600, height: 1000 },
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--no-first-run", "--disable-quic", "--disable-component-update", "--disable-sync",
    ],
  });
  // The pages must not reach anything but the server under test.
  const offsite = [];
  context.on("request", (r) => {
    if (!r.url().startsWith(base) && !r.url().startsWith("data:")) offsite.push(r.url());
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error" && !expectFailedLoads) errors.push(m.text()); });
  page.on("dialog", (d) => d.accept());
  try {
    await run(page);
  } catch (e) {
    // Leave evidence: where the page was and what it showed.
    console.error("at " + page.url());
    try {
      await shot(page, "failure");
      console.error((await page.locator("main").innerText()).slice(0, 2000));
    } catch (_) { /* the page may be gone */ }
    throw e;
  } finally {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  check(offsite.length === 0, "no requests off the server: " + offsite.join(", "));
  step("no off-site requests");
}

async function run(page) {
  // A row of the snapshot list by its label (labels live in input values).
  const byLabel = (l) => page.locator("tr").filter({ has: page.locator(`input[name=label][value="${l}"]`) });

  // 1. The list.
  await page.goto(base + "/");
  check((await page.title()).includes("Snapshots"), "list title");
  const rows = await page.locator("table.snapshots tbody tr").count();
  check(rows >= 4, "at least 4 snapshot rows, got " + rows);
  for (const l of ["go-cpu", "before", "after", "allocs"]) check((await byLabel(l).count()) === 1, "row " + l);
  await shot(page, "1-list");
  step("list shows " + rows + " snapshots");

  // 2. Open the CPU snapshot from the list; the flamegraph is inline SVG.
  await byLabel("go-cpu").locator("a.open").click();
  await page.waitForSelector("#fg[data-ready]");
  const frames = await page.locator("#fg svg#frames > g").count();
  check(frames > 10, "flamegraph frames: " + frames);
  check((await page.locator("#fg img, #fg iframe, #fg object, #fg embed").count()) === 0, "no img/iframe/object");
  check(await page.locator("aside table.toptable tbody tr").count() > 3, "top table beside");
  await shot(page, "2-snapshot");
  step("snapshot page: inline flamegraph with " + frames + " frames and the top table");

  // 3. Search a function name: frames turn magenta, the matched share shows.
  const fn = await page.locator("aside table.toptable tbody tr td.name a").first().getAttribute("data-search");
  const term = fn.split(/[.(/]/).filter((s) => s.length > 2).pop() || fn;
  await page.fill("#fg-search", term);
  await page.waitForFunction(() => document.querySelector("#fg-matched").textContent.startsWith("Matched"));
  const share = parseFloat(await page.locator("#fg-matched").getAttribute("data-share"));
  check(share > 0 && share <= 100, "matched share " + share);
  const hl = await page.evaluate((t) => {
    const re = new RegExp(t, "i");
    let lit = 0, wrong = 0;
    for (const g of document.querySelectorAll("#frames > g")) {
      const name = g.querySelector("title").textContent;
      const on = g.querySelector("rect").getAttribute("fill") === "rgb(230,0,230)";
      const should = re.test(name.slice(0, name.lastIndexOf(" (")));
      if (on) lit++;
      if (on !== should) wrong++;
    }
    return { lit, wrong };
  }, term);
  check(hl.lit > 0 && hl.wrong === 0, "highlighted frames " + JSON.stringify(hl));
  check(page.url().includes("s="), "search kept in the URL");
  await shot(page, "3-search");
  step("search " + JSON.stringify(term) + ": " + hl.lit + " frames highlighted, " + share.toFixed(2) + "% matched");

  // 4. Click to zoom, then reset; the icicle toggle flips the layout.
  const target = await page.evaluate(() => {
    let best = null, bw = 0;
    for (const g of document.querySelectorAll("#frames > g")) {
      const r = g.querySelector("rect");
      const w = parseFloat(r.getAttribute("width"));
      const y = parseFloat(r.getAttribute("y"));
      if (w > 5 && w < 60 && (!best || w > bw)) { best = g.getAttribute("data-i"); bw = w; }
    }
    return best;
  });
  check(target !== null, "a frame to zoom into");
  await page.locator(`#frames > g[data-i="${target}"] rect`).click({ force: true });
  const zw = await page.locator(`#frames > g[data-i="${target}"] rect`).getAttribute("width");
  check(zw === "100.0000%", "zoomed frame fills the width: " + zw);
  check(!(await page.locator("#fg-reset").isDisabled()), "reset enabled");
  await shot(page, "4-zoom");
  await page.click("#fg-reset");
  check(await page.locator("#fg-reset").isDisabled(), "reset disabled after reset");
  const yBefore = await page.locator("#frames > g").first().locator("rect").getAttribute("y");
  await page.check("#fg-icicle");
  const yAfter = await page.locator("#frames > g").first().locator("rect").getAttribute("y");
  check(yBefore !== yAfter, "icicle moves the root");
  await shot(page, "5-icicle");
  await page.uncheck("#fg-icicle");
  step("zoom, reset and icicle");

  // The zoomed frame in full detail: a page of only the stacks under it.
  await page.locator(`#frames > g[data-i="${target}"] rect`).click({ force: true });
  check(await page.locator("#fg-focus").isVisible(), "full-detail link after zoom");
  const focusName = await page.evaluate((i) => {
    const t = document.querySelector(`#frames > g[data-i="${i}"] title`).textContent;
    return t.slice(0, t.lastIndexOf(" ("));
  }, target);
  await page.click("#fg-focus");
  await page.waitForURL(/focus=/);
  await page.waitForSelector("#fg[data-ready]");
  check((await page.locator("p.focus code").textContent()) === focusName, "focused on " + focusName);
  const widest = await page.evaluate((name) => {
    for (const g of document.querySelectorAll("#frames > g")) {
      const t = g.querySelector("title").textContent;
      if (t.slice(0, t.lastIndexOf(" (")) === name) return g.querySelector("rect").getAttribute("width");
    }
    return null;
  }, focusName);
  check(widest === "100.0000%" || parseFloat(widest) > 99.9, "focused frame spans the page: " + widest);
  await shot(page, "5b-focus");
  step("full detail of a zoomed frame (" + focusName + ")");

  // 5. Sample-type switch on a heap snapshot.
  await page.goto(base + "/");
  await byLabel("before").locator("a.open").click();
  await page.waitForSelector("#fg[data-ready]");
  await page.selectOption("#type-select", "alloc_space");
  await page.waitForURL(/type=alloc_space/);
  await page.waitForSelector("#fg[data-ready]");
  check((await page.locator("#fg svg #title").textContent()).includes("alloc_space"), "switched type");
  await shot(page, "6-sample-type");
  step("sample-type switch");

  // 6. Diff: pick BASE and NEW in the list.
  await page.goto(base + "/");
  await byLabel("before").locator("input[name=base]").check();
  await byLabel("after").locator("input[name=new]").check();
  await page.click("#diff-selected");
  await page.waitForURL(/\/diff\?/);
  await page.waitForSelector("#fg[data-ready]");
  const dframes = await page.locator("#fg svg#frames > g").count();
  check(dframes > 5, "diff frames " + dframes);
  check((await page.locator("#fg svg #title").textContent()).includes("NEW vs BASE"), "differential title");
  const drows = await page.locator("aside table.toptable tbody tr").count();
  check(drows > 3, "delta table rows " + drows);
  await shot(page, "7-diff");
  step("diff page: " + dframes + " frames, " + drows + " delta rows");

  // 7. Capture from the live agent: progress, then the new snapshot.
  await page.goto(base + "/capture");
  await page.fill("#capture-url", agent);
  await page.selectOption("#capture-kind", "heap");
  await page.fill("#capture-seconds", "2");
  await page.fill("#capture-label", "ui-captured");
  await page.click("#capture-go");
  await page.waitForURL(/\/capture\/\d+$/);
  await page.waitForSelector("#capture-progress progress");
  await shot(page, "8-capture-progress");
  await page.waitForURL(/\/snapshot\//, { timeout: 30000 });
  await page.waitForSelector("#fg[data-ready]");
  check((await page.locator("h1").textContent()).includes("ui-captured"), "captured snapshot opened");
  await shot(page, "9-captured");
  step("capture form → progress → new snapshot");

  // 8. Relabel and delete it from the list.
  await page.goto(base + "/");
  const captured = byLabel("ui-captured");
  check((await captured.count()) === 1, "captured row in the list");
  await captured.locator("form.relabel input[name=label]").fill("ui-renamed");
  await captured.locator("form.relabel button").click();
  await page.waitForLoadState();
  const renamed = byLabel("ui-renamed");
  check((await renamed.count()) === 1, "renamed");
  await renamed.locator("form.delete button").click();
  await page.waitForLoadState();
  check((await page.locator("input[value=ui-renamed]").count()) === 0, "deleted");
  step("relabel and delete");

  check(errors.length === 0, "no script errors or failed loads: " + errors.join(" | "));
  step("no script errors or failed loads");

  // 9. Bad requests render error pages.
  expectFailedLoads = true;
  const r404 = await page.goto(base + "/snapshot/20990101-000000-cpu");
  check(r404.status() === 404, "404 status");
  const r400 = await page.goto(base + "/snapshot/..%2F..%2Fetc%2Fpasswd");
  check(r400.status() === 400, "400 status");
  step("404 and 400 pages");

  expectFailedLoads = false;

  // 10. Responsiveness on a large profile.
  if (largeId) {
    const t0 = Date.now();
    await page.goto(base + "/snapshot/" + largeId, { timeout: 120000 });
    await page.waitForSelector("#fg[data-ready]", { timeout: 120000 });
    const loadMs = Date.now() - t0;
    const nav = await page.evaluate(() => {
      const n = performance.getEntriesByType("navigation")[0];
      return { ttfb: n.responseStart - n.startTime, response: n.responseEnd - n.startTime, dcl: n.domContentLoadedEventEnd - n.startTime, bytes: n.transferSize };
    });
    const frames = await page.evaluate(() => window.profscope.frames);
    const t = {};
    t.search = await page.evaluate(() => { const s = performance.now(); window.profscope.search("fn_1"); return performance.now() - s; });
    t.searchPaint = await page.evaluate(() => new Promise((res) => { const s = performance.now(); window.profscope.search("fn_2"); requestAnimationFrame(() => requestAnimationFrame(() => res(performance.now() - s))); }));
    t.zoom = await page.evaluate(() => new Promise((res) => {
      let best = 0, bw = 0;
      const gs = document.querySelectorAll("#frames > g");
      for (const g of gs) { const w = parseFloat(g.querySelector("rect").getAttribute("width")); if (w < 50 && w > bw) { bw = w; best = +g.getAttribute("data-i"); } }
      const s = performance.now(); window.profscope.zoom(best);
      requestAnimationFrame(() => requestAnimationFrame(() => res(performance.now() - s)));
    }));
    t.reset = await page.evaluate(() => new Promise((res) => { const s = performance.now(); window.profscope.reset(); requestAnimationFrame(() => requestAnimationFrame(() => res(performance.now() - s))); }));
    t.icicle = await page.evaluate(() => new Promise((res) => { const s = performance.now(); window.profscope.icicle(true); requestAnimationFrame(() => requestAnimationFrame(() => res(performance.now() - s))); }));
    const init = await page.evaluate(() => window.profscope.timings.init);
    await shot(page, "10-large");
    result.timings = { load_ms: loadMs, ...nav, frames, init_ms: init, ...t };
    step("large profile: " + JSON.stringify(result.timings, (k, v) => (typeof v === "number" ? Math.round(v) : v)));
  }
}

main().then(
  () => { console.log("RESULT " + JSON.stringify(result)); },
  (e) => { console.error("FAILED: " + (e && e.stack || e)); process.exit(1); },
);

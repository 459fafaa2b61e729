// Browser test of `profscope serve` in headless Chromium (playwright-core,
// the system's /usr/bin/chromium). Run by viewer/tests/serve_browser.rs:
//
//   node ui.js BASE_URL SCREENSHOT_DIR AGENT_URL [LARGE_SNAPSHOT_ID]
//
// BASE_URL serves a store seeded with the Go fixtures (labels go-cpu,
// before, after, allocs) and, when PROFSCOPE_UI_DEMO=1, the snapshots of
// `profscope demo` (demo-cpu: a Rust service's CPU profile with deep async
// stacks and `thread` labels), and with PROFSCOPE_UI_INCIDENT=ID the stub
// agent's incident ID as `profscope incidents` stores it; AGENT_URL is a live agent (or a stub)
// serving /debug/pprof/heap. Prints one line per step and, last,
// `RESULT {json}` with the measured timings; exits non-zero on the first
// failure. `label-check KEY VALUE TOTAL` lines give the totals the page
// showed under a label filter, for the caller to check against
// `go tool pprof -tagfocus`.
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
  // The icicle is the default: the root row is the top one.
  check(await page.locator("#fg-icicle").isChecked(), "icicle by default");
  const rootY = async () => parseFloat(await page.locator("#frames > g").first().locator("rect").getAttribute("y"));
  const rowYs = await page.evaluate(() => Array.from(document.querySelectorAll("#frames > g > rect")).map((r) => parseFloat(r.getAttribute("y"))));
  const yBefore = await rootY();
  check(yBefore === Math.min(...rowYs), "icicle: the root on top");
  await page.uncheck("#fg-icicle");
  const yAfter = await rootY();
  check(yAfter === Math.max(...rowYs) && yAfter > yBefore, "flame graph: the root at the bottom");
  check(page.url().includes("icicle=0"), "orientation kept in the URL");
  await shot(page, "5-flame");
  await page.check("#fg-icicle");
  check((await rootY()) === yBefore, "icicle again");
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

  if (process.env.PROFSCOPE_UI_DEMO === "1") await demo(page);

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

// The demo's CPU snapshot: a Rust service's deep stacks on one laptop screen,
// the shell's switches, the peek and source panes, label filters.
async function demo(page) {
  const byLabel = (l) => page.locator("tr").filter({ has: page.locator(`input[name=label][value="${l}"]`) });
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.goto(base + "/");
  check((await byLabel("demo-cpu").count()) === 1, "demo-cpu snapshot in the list");
  await byLabel("demo-cpu").locator("a.open").click();
  await page.waitForSelector("#fg[data-ready]");
  const demoUrl = page.url();

  // 11. First screen: the root and the widest application frame are in
  // the viewport without scrolling.
  const firstScreen = () => page.evaluate(() => {
    const vh = window.innerHeight, vw = window.innerWidth;
    const seen = (el) => { const r = el.getBoundingClientRect(); return r.top >= 0 && r.bottom <= vh && r.left >= 0 && r.right <= vw && r.width > 0; };
    const gs = Array.from(document.querySelectorAll("#frames > g"));
    const full = (g) => { const t = g.querySelector("title").textContent; return t.slice(0, t.lastIndexOf(" (")); };
    const root = gs.find((g) => full(g) === "all");
    let app = null, aw = -1;
    for (const g of gs) {
      const w = parseFloat(g.querySelector("rect").getAttribute("fg:w"));
      if (/profscope::cli::demo::/.test(full(g)) && w > aw) { app = g; aw = w; }
    }
    return {
      scrollY: window.scrollY, root: !!root && seen(root.querySelector("rect")),
      app: app && full(app), appShort: app && app.getAttribute("data-s"), appVisible: !!app && seen(app.querySelector("rect")),
      appBottom: app && Math.round(app.querySelector("rect").getBoundingClientRect().bottom),
      depth: Math.max(...gs.map((g) => parseFloat(g.querySelector("rect").getAttribute("y")))),
    };
  });
  const fs0 = await firstScreen();
  check(fs0.scrollY === 0 && fs0.root, "root frame on the first screen: " + JSON.stringify(fs0));
  check(fs0.app && fs0.appVisible, "widest application frame on the first screen: " + JSON.stringify(fs0));
  await page.screenshot({ path: path.join(shots, "11-demo-1280x800.png") });
  step("first screen at 1280x800: root and " + fs0.app + " (bottom at " + fs0.appBottom + " px)");

  // 12. Short names shown, full names on hover; the switches reload the page.
  check(fs0.appShort && fs0.appShort.length < fs0.app.length, "short name shown: " + fs0.appShort);
  const appG = page.locator("#frames > g").filter({ has: page.locator("title", { hasText: fs0.app + " (" }) }).first();
  await appG.locator("rect").hover({ force: true });
  check((await page.locator("#fg-details").textContent()).startsWith(fs0.app + " ("), "full name on hover");
  const countFrames = () => page.locator("#frames > g").count();
  const hiddenShown = () => page.evaluate(() => Array.from(document.querySelectorAll("#frames > g > title")).filter((t) => /^<?tokio::runtime::/.test(t.textContent)).length);
  check((await hiddenShown()) === 0, "hide-list: no tokio::runtime frames");
  const framesHidden = await countFrames();
  await page.uncheck("#sw-hide");
  await page.waitForURL(/[?&]v=1/);
  await page.waitForSelector("#fg[data-ready]");
  check((await hiddenShown()) > 0, "hide-list off: tokio::runtime frames shown");
  await page.uncheck("#sw-short");
  await page.waitForSelector("#fg[data-ready]");
  check((await page.locator("#frames > g[data-s]").count()) === 0, "short names off: whole names shown");
  const longest = await page.evaluate(() => Math.max(...Array.from(document.querySelectorAll("#frames > g > title")).map((t) => t.textContent.length)));
  await page.check("#sw-hide");
  await page.waitForSelector("#fg[data-ready]");
  await page.check("#sw-short");
  await page.waitForSelector("#fg[data-ready]");
  check((await countFrames()) === framesHidden, "switches back: same picture");
  await page.check("#sw-my");
  await page.waitForSelector("#fg[data-ready]");
  const mine = await page.evaluate(() => Array.from(document.querySelectorAll("#frames > g > title")).map((t) => t.textContent.slice(0, t.textContent.lastIndexOf(" ("))));
  check(mine.length > 1 && mine.some((n) => /profscope::cli::demo::/.test(n)) && mine.every((n) => n === "all" || /^(<)?profscope/.test(n) || /profscope::cli::demo/.test(n)),
    "my code: only the demo's frames: " + mine.slice(0, 12).join(" | "));
  await page.uncheck("#sw-my");
  await page.waitForSelector("#fg[data-ready]");
  step("switches: short names (hover shows the full name), hide-list, my code (" + mine.length + " frames); longest whole name " + longest + " chars");

  // 13. Peek and source panes on a click: the known caller and hot line.
  const hot = page.locator("#frames > g").filter({ has: page.locator("title", { hasText: /::checksum_receipt \(/ }) }).first();
  check((await hot.count()) === 1, "checksum_receipt frame");
  await hot.locator("rect").click({ force: true });
  await page.waitForSelector("#panes[data-ready]");
  const sourceText = await page.locator("#pane-source").textContent();
  const peek = await page.evaluate(() => {
    const names = (cls) => Array.from(document.querySelectorAll(`#pane-peek tr.${cls} td.name`)).map((td) => td.textContent);
    return { self: names("self"), callers: names("caller"), callees: names("callee") };
  });
  check(peek.self.length === 1 && /checksum_receipt$/.test(peek.self[0]), "peek shows checksum_receipt: " + JSON.stringify(peek));
  check(peek.callers.some((n) => /price_cart$/.test(n)), "peek: price_cart calls it: " + JSON.stringify(peek));
  // The hot line: the source line with the largest flat value.
  const rows = sourceText.split("\n").map((l) => /^\s*(\S+)\s+(\S+)\s+(\d+): (.*)$/.exec(l)).filter(Boolean);
  const scale = (v) => { const m = /^(\d[\d.]*)(\w*)$/.exec(v); if (!m) return 0; const u = { ns: 1e-9, us: 1e-6, ms: 1e-3, s: 1, "": 1 }; return parseFloat(m[1]) * (u[m[2]] !== undefined ? u[m[2]] : 1); };
  let hotRow = null;
  for (const r of rows) if (!hotRow || scale(r[1]) > scale(hotRow[1])) hotRow = r;
  // Its inner loop: the iteration (Iter::next, inlined) or the multiply.
  check(hotRow && /for &p in prices|wrapping_mul/.test(hotRow[4]), "source: the hot line is the inner mixing loop: " + (hotRow && hotRow[0]) + "\n" + sourceText.slice(0, 1200));
  await page.screenshot({ path: path.join(shots, "12-peek-source.png") });
  step("peek and source panes: price_cart → checksum_receipt, hot line " + hotRow[3] + ": " + hotRow[4].trim());

  // 14. A label filter narrows the graph and the tables to the label's share.
  await page.goto(demoUrl);
  await page.waitForSelector("#fg[data-ready]");
  const threadSelect = page.locator("select.tag-select[data-key=thread]");
  check((await threadSelect.count()) === 1, "a thread label dropdown");
  const choice = await threadSelect.evaluate((sel) => {
    // The largest value that is not the whole profile.
    const opts = Array.from(sel.options).filter((o) => o.value && !/\(100\.00%\)$/.test(o.textContent));
    return opts.length ? { value: opts[0].value, label: opts[0].getAttribute("data-value") } : null;
  });
  check(choice, "a thread value to filter by");
  const whole = await page.evaluate(() => ({ total: +document.querySelector("#fg").getAttribute("data-total"), by: +document.querySelector("#by-label").getAttribute("data-total") }));
  const byRow = await page.evaluate((v) => { const r = document.querySelector(`#by-label tr[data-value="${CSS.escape(v)}"]`); return r ? +r.getAttribute("data-raw") : null; }, choice.label);
  await threadSelect.selectOption(choice.value);
  await page.waitForURL(/[?&]tag=/);
  await page.waitForSelector("#fg[data-ready]");
  const narrowed = await page.evaluate(() => ({
    total: +document.querySelector("#fg").getAttribute("data-total"),
    svgTotal: +document.querySelector("#frames").getAttribute("total_samples"),
    by: +document.querySelector("#by-label").getAttribute("data-total"),
    byRows: document.querySelectorAll("#by-label tbody tr").length,
    top: +document.querySelector("table.toptable:not(.bylabel)").getAttribute("data-total"),
  }));
  check(narrowed.total < whole.total && narrowed.total === narrowed.svgTotal, "graph narrowed: " + JSON.stringify({ whole, narrowed }));
  check(narrowed.total === byRow, "graph total is the label's by-label row: " + byRow + " vs " + narrowed.total);
  check(narrowed.by === narrowed.total && narrowed.byRows === 1 && narrowed.top === narrowed.total, "tables narrowed: " + JSON.stringify(narrowed));
  console.log("label-check thread " + choice.label + " " + narrowed.total);
  await page.screenshot({ path: path.join(shots, "13-label-filter.png") });
  step("label filter thread=" + choice.label + ": " + narrowed.total + " of " + whole.total);

  // 15. Leaving a label value out (tagignore) from the by-label table.
  await page.goto(demoUrl + "?by=thread");
  await page.waitForSelector("#fg[data-ready]");
  await page.locator(`#by-label tr[data-value="${choice.label}"] a.notag`).click();
  await page.waitForURL(/[?&]notag=/);
  await page.waitForSelector("#fg[data-ready]");
  const left = await page.evaluate(() => ({
    total: +document.querySelector("#fg").getAttribute("data-total"),
    rows: Array.from(document.querySelectorAll("#by-label tbody tr")).map((r) => r.getAttribute("data-value")),
  }));
  check(left.total === whole.total - byRow && !left.rows.includes(choice.label), "left out: " + JSON.stringify({ left, whole, byRow }));
  check(await page.locator("#notag-clear").isVisible(), "the exclusion is shown, with a way back");
  console.log("label-ignore-check thread " + choice.label + " " + left.total);
  step("label left out thread=" + choice.label + ": " + left.total + " of " + whole.total);
  await page.setViewportSize({ width: 1600, height: 1000 });

  // 16. An incident fetched from the agent (`profscope incidents URL`):
  // listed beside the snapshots, opened as its heap diff (at the trigger
  // vs before) from the list.
  const incident = process.env.PROFSCOPE_UI_INCIDENT;
  if (incident) {
    await page.goto(base + "/");
    const listed = page.locator(`section.incidents tr[data-incident="${incident}"] a.open-incident`);
    check((await listed.count()) === 1, "incident " + incident + " listed");
    const row = await page.locator("section.incidents").innerText();
    check(row.includes("heap_growth"), "the incident's trigger listed: " + row);
    await listed.click();
    await page.waitForURL(/\/incident\//);
    await page.waitForSelector("#fg[data-ready]");
    check((await page.locator("h1").textContent()).includes("heap_growth"), "incident page title");
    const iframes = await page.locator("#fg svg#frames > g").count();
    check(iframes > 5, "incident diff frames " + iframes);
    check((await page.locator("#fg svg #title").textContent()).includes("NEW vs BASE"), "incident: a differential flamegraph");
    const irows = await page.locator("aside table.toptable tbody tr").count();
    check(irows > 3, "incident growth rows " + irows);
    await shot(page, "16-incident");
    step("incident listed and opened: " + iframes + " frames, " + irows + " growth rows");
  }
}

main().then(
  () => { console.log("RESULT " + JSON.stringify(result)); },
  (e) => { console.error("FAILED: " + (e && e.stack || e)); process.exit(1); },
);

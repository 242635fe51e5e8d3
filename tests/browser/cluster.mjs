// Browser check of a core's camera page in a cluster, in real headless Chromium (Debian's),
// driven by playwright-core. Run by tests/cluster.rs against a running core with two edges:
//   node cluster.mjs <core-url>   with ADMIN_USER/ADMIN_PASSWORD, EDGES=e1,e2 (the live edges),
//   CAMERAS=c1,c2,... (the site's cameras), optional SCREENSHOTS=<dir> and CHROMIUM=<path>
import { chromium } from "playwright-core";
import { join } from "node:path";

const base = process.argv[2];
if (!base) { console.error("usage: node cluster.mjs <core-url>"); process.exit(2); }
const env = k => { const v = process.env[k]; if (!v) { console.error(`${k} is not set`); process.exit(2); } return v; };
const edges = env("EDGES").split(",");
const cameras = env("CAMERAS").split(",");
const step = (m) => console.log(`cluster-ui: ${m}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-extensions", "--disable-sync", "--no-first-run", "--mute-audio"],
});
const errors = [];
try {
  const ctx = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await ctx.newPage();
  page.setDefaultTimeout(30_000);
  page.on("pageerror", e => errors.push(`page error: ${e.message}`));
  page.on("console", m => { if (m.type() === "error" && !/status of (401|403|404|409|503)/.test(m.text())) errors.push(`console: ${m.text()}`); });
  await page.goto(base + "/");
  await page.waitForSelector("[data-testid=login]");
  await page.fill("#user", env("ADMIN_USER"));
  await page.fill("#password", env("ADMIN_PASSWORD"));
  await page.click("[data-testid=login] button");
  await page.waitForSelector("#nav");
  await page.goto(base + "/#/manage");

  // every camera of the site names the live edge running it
  await page.waitForFunction((cams) => cams.every(c => document.querySelector(`[data-camera="${c}"] [data-runs-on]`)?.dataset.runsOn), cameras);
  const runsOn = await page.evaluate(() => Object.fromEntries([...document.querySelectorAll("[data-camera]")]
    .map(r => [r.dataset.camera, r.querySelector("[data-runs-on]")?.dataset.runsOn])));
  for (const c of cameras) if (!edges.includes(runsOn[c])) throw new Error(`camera ${c} runs on ${runsOn[c]}, not one of ${edges}`);
  step(`cameras placed: ${JSON.stringify(runsOn)}`);

  // the edges table: each live edge, alive, with the cameras the placement gives it
  await page.waitForFunction((es) => es.every(e => document.querySelector(`[data-testid=edges] tr[data-edge="${e}"]`)), edges);
  for (const e of edges) {
    const row = page.locator(`[data-testid=edges] tr[data-edge="${e}"]`);
    const text = await row.innerText();
    if (!text.includes("alive")) throw new Error(`edge ${e} is not shown alive: ${text}`);
    const chips = await row.locator("[data-camera-chip]").evaluateAll(cs => cs.map(c => c.dataset.cameraChip).sort());
    const placed = cameras.filter(c => runsOn[c] === e).sort();
    if (JSON.stringify(chips) !== JSON.stringify(placed)) throw new Error(`edge ${e} shows cameras ${chips}, the placement says ${placed}`);
  }
  step(`edges shown: ${edges.join(", ")}`);
  // each edge's measured load and speed, once it has analysed enough frames (the table reloads
  // every 5 s)
  await page.waitForFunction((es) => es.every(e => /\d+ % \/ \d+\.\d cameras/.test(document.querySelector(`[data-testid=edges] tr[data-edge="${e}"]`)?.innerText || "")), edges, { timeout: 60000 });
  step("edges' analysis load and speed shown");
  const leak = await page.evaluate(() => document.body.innerText.match(/.{0,40}\b(null|undefined|NaN|\[object Object\])\b.{0,40}/));
  if (leak) throw new Error(`the page shows ${JSON.stringify(leak[0])}`);
  if (process.env.SCREENSHOTS) {
    await page.screenshot({ path: join(process.env.SCREENSHOTS, "ui-edges.png"), fullPage: true });
    step("screenshot ui-edges.png");
  }
  if (errors.length) throw new Error(errors.join("\n"));
  step("all checks passed");
} finally {
  await browser.close();
}

// Browser test of the crosscam web UI in real headless Chromium (Debian's), driven by
// playwright-core. Run by tests/web_ui.rs against a running daemon:
//   node ui.mjs <base-url>   with ADMIN_USER/ADMIN_PASSWORD, OPERATOR_USER/OPERATOR_PASSWORD,
//   optional SCREENSHOTS=<dir> (one PNG per page) and CHROMIUM=<path> (default /usr/bin/chromium)
import { chromium } from "playwright-core";
import { writeFileSync, mkdtempSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";

const base = process.argv[2];
if (!base) { console.error("usage: node ui.mjs <base-url>"); process.exit(2); }
const shots = process.env.SCREENSHOTS;
const env = k => { const v = process.env[k]; if (!v) { console.error(`${k} is not set`); process.exit(2); } return v; };

const step = (m) => console.log(`ui: ${m}`);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-extensions", "--disable-sync", "--no-first-run", "--mute-audio"],
});
const errors = [];
async function newPage() {
  const ctx = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await ctx.newPage();
  page.setDefaultTimeout(30_000);
  page.on("pageerror", e => errors.push(`page error: ${e.message}`));
  page.on("console", m => { if (m.type() === "error" && !/status of (401|403|404|409|503)/.test(m.text())) errors.push(`console: ${m.text()}`); });
  return page;
}
async function shot(page, name) {
  if (shots) { await page.screenshot({ path: join(shots, `ui-${name}.png`), fullPage: false }); step(`screenshot ui-${name}.png`); }
}
async function login(page, user, pw) {
  await page.goto(base + "/");
  await page.waitForSelector("[data-testid=login]");
  await page.fill("#user", user);
  await page.fill("#password", pw);
  await page.click("[data-testid=login] button");
  await page.waitForSelector("[data-testid=camera-wall] .cam");
}

try {
  // ---- admin ------------------------------------------------------------------------------
  const page = await newPage();
  await page.goto(base + "/");
  await page.waitForSelector("[data-testid=login]");
  await shot(page, "login");
  // a wrong password is refused with the API's message
  await page.fill("#user", env("ADMIN_USER"));
  await page.fill("#password", "wrong password");
  await page.click("[data-testid=login] button");
  await page.waitForFunction(() => /wrong user name or password/.test(document.querySelector("#flash").textContent));
  await login(page, env("ADMIN_USER"), env("ADMIN_PASSWORD"));
  step("signed in as admin");

  // the camera wall updates: snapshots load again and again, the analysed counter grows
  const cam = page.locator("[data-testid=camera-wall] .cam").first();
  await page.waitForFunction(() => Number(document.querySelector(".cam")?.dataset.frames || 0) >= 1, null, { timeout: 60_000 });
  const f0 = Number(await cam.getAttribute("data-frames"));
  const a0 = Number(await cam.getAttribute("data-analysed"));
  await page.waitForFunction(([f, a]) => {
    const c = document.querySelector(".cam");
    return Number(c.dataset.frames) >= f + 3 && Number(c.dataset.analysed) > a;
  }, [f0, a0], { timeout: 30_000 });
  const state = await cam.locator(".state").textContent();
  if (state !== "live") throw new Error(`camera state ${state}, expected live`);
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=event-feed] div").length > 0, null, { timeout: 60_000 });
  step("camera wall updates (snapshots, counters, events)");
  await shot(page, "cameras");

  // identities, then one identity's page with crops and its timeline
  await page.click("#nav a[data-page=identities]");
  await page.waitForSelector("[data-testid=identities] tbody tr", { timeout: 60_000 });
  await shot(page, "identities");
  await page.locator("[data-testid=identities] tbody tr a").first().click();
  await page.waitForSelector("[data-testid=identity-title]");
  await page.waitForSelector("[data-testid=timeline] rect");
  const crops = await page.locator(".crops img").count();
  if (crops < 1) throw new Error("the identity page shows no crops");
  await page.waitForFunction(() => [...document.querySelectorAll(".crops img")].every(i => i.complete && i.naturalWidth > 0));
  step(`identity page: timeline and ${crops} crop(s)`);
  await shot(page, "identity");

  // search by image with one of the crops
  const cropUrl = await page.locator(".crops img").first().getAttribute("src");
  const bytes = await (await page.request.get(base + cropUrl)).body();
  const file = join(mkdtempSync(join(tmpdir(), "crosscam-ui-")), "person.jpg");
  writeFileSync(file, bytes);
  await page.click("#nav a[data-page=search]");
  await page.setInputFiles("#search-file", file);
  await page.waitForSelector("[data-testid=search-results] .match");
  step("search by image found matches");
  await shot(page, "search");

  await page.click("#nav a[data-page=manage]");
  await page.waitForSelector("[data-testid=camera-table] tbody tr");
  await shot(page, "manage");

  // start a re-tune job, see it run, cancel it, see it end as cancelled
  await page.click("#nav a[data-page=jobs]");
  await page.waitForSelector("[data-testid=models] tbody tr");
  await page.click("#job-start");
  const running = page.locator("[data-testid=jobs] tr[data-state=running]");
  await running.first().waitFor({ timeout: 30_000 });
  const jobId = await running.first().getAttribute("data-job");
  step(`job ${jobId} running`);
  await shot(page, "jobs");
  await page.locator(`tr[data-job="${jobId}"] .job-cancel`).click();
  await page.waitForSelector(`tr[data-job="${jobId}"][data-state=finished]`, { timeout: 120_000 });
  const outcome = await page.locator(`tr[data-job="${jobId}"] .job-state`).textContent();
  if (outcome !== "cancelled") throw new Error(`job ended ${outcome}, expected cancelled`);
  step(`job ${jobId} cancelled`);

  // ---- operator: no admin pages -----------------------------------------------------------
  const op = await newPage();
  await login(op, env("OPERATOR_USER"), env("OPERATOR_PASSWORD"));
  if (await op.locator("#nav a[data-page=jobs]").isVisible()) throw new Error("an operator sees the Jobs link");
  await op.goto(base + "/#/jobs");
  await op.waitForSelector("[data-testid=refused]");
  const why = await op.locator("[data-testid=refused]").textContent();
  if (!/admin/.test(why)) throw new Error(`refusal does not say who may: ${why}`);
  step("operator refused on the jobs page");
  await shot(op, "refused");

  if (errors.length) throw new Error(errors.join("\n"));
  console.log("ui: all checks passed");
  await browser.close();
} catch (e) {
  console.error(`ui: FAILED: ${e.message}`);
  for (const x of errors) console.error(x);
  await browser.close();
  process.exit(1);
}

// Browser test of the crosscam web UI in real headless Chromium (Debian's), driven by
// playwright-core. Run by tests/web_ui.rs against a running daemon:
//   node ui.mjs <base-url>   with ADMIN_USER/ADMIN_PASSWORD, OPERATOR_USER/OPERATOR_PASSWORD,
//   FOOTBALLER=<picture of a person never seen by the cameras>, optional SCREENSHOTS=<dir> (one PNG
//   per page) and CHROMIUM=<path> (default /usr/bin/chromium)
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
  // every page shown is checked for JavaScript values leaking into the text
  const leak = await page.evaluate(() => document.body.innerText.match(/.{0,40}\b(null|undefined|NaN|\[object Object\])\b.{0,40}/));
  if (leak) throw new Error(`page ${name} shows ${JSON.stringify(leak[0])}`);
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

// the colour a camera chip shows, by camera id
const chipColours = (page) => page.evaluate(() => Object.fromEntries(
  [...document.querySelectorAll("[data-camera-chip]")].map(c => [c.dataset.cameraChip, c.querySelector("i").dataset.colour])));
const overlaps = (a, b) => a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height;
const NAMES = { entrance: "Main entrance", plaza: "Plaza", dock: "Loading dock" };

try {
  // ---- admin ------------------------------------------------------------------------------
  const page = await newPage();
  const sent = [];
  page.on("request", r => sent.push(`${r.method()} ${new URL(r.url()).pathname}`));
  await page.goto(base + "/");
  await page.waitForSelector("[data-testid=login]");
  // nothing but the sign-in form before signing in: no menu, no sign-out
  if (await page.locator("#nav").isVisible() || await page.locator("#nav a").first().isVisible()) throw new Error("the menu shows on the sign-in page");
  if (await page.locator("#logout").isVisible()) throw new Error("sign-out shows on the sign-in page");
  await shot(page, "login");
  // a wrong password is refused with the API's message
  await page.fill("#user", env("ADMIN_USER"));
  await page.fill("#password", "wrong password");
  await page.click("[data-testid=login] button");
  await page.waitForFunction(() => /wrong user name or password/.test(document.querySelector("#flash").textContent));
  await login(page, env("ADMIN_USER"), env("ADMIN_PASSWORD"));
  if (!await page.locator("#nav a[data-page=jobs]").isVisible()) throw new Error("the admin has no Jobs link");
  step("signed in as admin; no menu before");

  // the camera wall updates: frames load again and again, the analysed counter grows
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
  if (await cam.locator("[data-testid=offline]").isVisible()) throw new Error("a live camera shows the offline panel");
  // tiles are named by camera name, each camera in its own colour
  for (const [id, name] of Object.entries(NAMES)) {
    const t = await page.locator(`.cam[data-camera=${id}] .name`).textContent();
    if (t.trim() !== name) throw new Error(`tile ${id} is titled ${JSON.stringify(t)}, expected ${name}`);
  }
  // box colours by the server's formula (src/plot.rs identity_colour, whose test pins these)
  const rgb = await page.evaluate(() => [idRgb(1), idRgb(2), idRgb(null)]);
  if (JSON.stringify(rgb) !== "[[19,82,236],[146,236,19],[160,160,160]]") throw new Error(`identity colours ${JSON.stringify(rgb)}`);
  const wallColours = await chipColours(page);
  if (new Set(Object.values(wallColours)).size !== 3) throw new Error(`three cameras, colours ${JSON.stringify(wallColours)}`);
  // the file camera that played to its end: an offline tile that says so, no broken image
  const dock = page.locator(".cam[data-camera=dock]");
  await page.waitForSelector(".cam[data-camera=dock][data-state=stopped] [data-testid=offline]:not([hidden])", { timeout: 90_000 });
  const why = await dock.locator("[data-testid=offline]").innerText();
  if (!/Stopped/.test(why) || !/end of file/.test(why)) throw new Error(`offline tile says ${JSON.stringify(why)}`);
  const broken = await page.evaluate(() => [...document.querySelectorAll(".cam img")].filter(i => i.getAttribute("src") && !(i.complete && i.naturalWidth > 0)).length);
  if (broken) throw new Error(`${broken} broken image(s) on the wall`);
  // boxes: drawn from the response that carried the frame; labels do not cover each other
  await page.waitForFunction(() => document.querySelectorAll(".cam .view svg rect").length > 0, null, { timeout: 60_000 });
  for (let k = 0; k < 5; k++) {
    const boxes = await page.evaluate(() => [...document.querySelectorAll(".cam")].map(c =>
      [...c.querySelectorAll(".label-bg")].map(r => ({ x: +r.getAttribute("x"), y: +r.getAttribute("y"), width: +r.getAttribute("width"), height: +r.getAttribute("height") }))));
    for (const labels of boxes) for (let i = 0; i < labels.length; i++) for (let j = i + 1; j < labels.length; j++)
      if (overlaps(labels[i], labels[j])) throw new Error(`labels overlap: ${JSON.stringify([labels[i], labels[j]])}`);
    await page.waitForTimeout(500);
  }
  if (sent.some(r => /snapshot\.jpg/.test(r))) throw new Error("the wall fetched snapshot.jpg besides the live view");
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=event-feed] div").length > 0, null, { timeout: 60_000 });
  step("camera wall: names, one colour per camera, offline tile with its reason, labels apart");
  await page.setViewportSize({ width: 1400, height: 1060 });  // the third tile whole
  await shot(page, "cameras");
  await page.setViewportSize({ width: 1400, height: 900 });

  // identities: thumbnails, camera names, the site timeline with wall-clock times
  await page.click("#nav a[data-page=identities]");
  await page.waitForSelector("[data-testid=identities] tbody tr", { timeout: 60_000 });
  await page.waitForFunction(() => [...document.querySelectorAll("td.thumb img")].some(i => i.complete && i.naturalWidth > 0), null, { timeout: 30_000 });
  const camCells = await page.locator("[data-testid=identities] tbody tr td:nth-child(3)").allInnerTexts();
  const shown = camCells.flatMap(t => t.split("\n").map(x => x.trim()).filter(Boolean));
  if (!shown.length || shown.some(n => !Object.values(NAMES).includes(n))) throw new Error(`camera column: ${JSON.stringify(camCells.slice(0, 5))}`);
  const listColours = await chipColours(page);
  for (const [id, c] of Object.entries(listColours)) if (wallColours[id] !== c) throw new Error(`camera ${id}: ${c} in the list, ${wallColours[id]} on the wall`);
  await page.waitForFunction(() => { const i = document.querySelector("[data-testid=site-timeline]"); return i && i.complete && i.naturalWidth > 0; });
  const svg = await (await page.request.get(base + await page.locator("[data-testid=site-timeline]").getAttribute("src"))).text();
  if (/seconds/.test(svg) || !/>\d\d:\d\d(:\d\d)?</.test(svg)) throw new Error("the site timeline has no wall-clock times");
  const legend = Object.fromEntries([...svg.matchAll(/<rect[^>]*fill="(#[0-9a-f]{6})"\/><text[^>]*>([^<]+)<\/text>/g)].map(m => [m[2], m[1]]));
  for (const [id, name] of Object.entries(NAMES)) if (legend[name] && legend[name] !== wallColours[id]) throw new Error(`${name}: ${legend[name]} in the server's timeline, ${wallColours[id]} in the UI`);
  if (!legend[NAMES.entrance] && !legend[NAMES.plaza]) throw new Error(`the site timeline's legend names no camera: ${JSON.stringify(legend)}`);
  const titles = await page.evaluate(() => [...document.querySelectorAll("h1, h2")].filter(e => /who went where/i.test(e.textContent)).length);
  if (titles) throw new Error("the site timeline's title is repeated above it");
  step("identities: thumbnails, camera names, colours as on the wall and in the server's timeline");
  await shot(page, "identities");
  if (shots) { await page.locator(".timeline").screenshot({ path: join(shots, "ui-timeline.png") }); step("screenshot ui-timeline.png"); }

  // a person's page: timeline coloured per camera, sightings as crop groups, split by picking them
  const rows = await page.locator("[data-testid=identities] tbody tr").evaluateAll(trs => trs.map(t => [t.dataset.identity, Number(t.children[3].textContent)]));
  const [who] = rows.sort((a, b) => b[1] - a[1])[0];
  await page.locator(`[data-testid=identities] tbody tr[data-identity="${who}"] td:nth-child(2) a`).click();
  await page.waitForSelector("[data-testid=identity-title]");
  await page.waitForSelector("[data-testid=timeline] rect");
  const bars = await page.locator("[data-testid=timeline] rect[data-camera]").evaluateAll(rs => rs.map(r => [r.dataset.camera, r.getAttribute("fill")]));
  for (const [id, fill] of bars) if (fill !== wallColours[id]) throw new Error(`timeline bar of ${id} is ${fill}, the wall's is ${wallColours[id]}`);
  const labels = await page.locator("[data-testid=timeline] text").allTextContents();
  if (labels.some(t => t === "entrance" || t === "plaza")) throw new Error(`timeline rows by camera id: ${labels}`);
  const groups = page.locator(".sighting");
  const nGroups = await groups.count();
  if (nGroups < 2) throw new Error(`person #${who} shows ${nGroups} sighting group(s), expected 2 or more`);
  const crops = await page.locator(".sighting .crops img").count();
  if (crops < 1) throw new Error("the sightings show no crops");
  await page.waitForFunction(() => [...document.querySelectorAll(".crops img")].every(i => i.complete && i.naturalWidth > 0));
  // split with nothing picked: a plain message, nothing sent
  const before = sent.length;
  await page.click("#split");
  await page.waitForFunction(() => /Pick at least one sighting/.test(document.querySelector("#flash").textContent));
  if (sent.slice(before).some(r => /split/.test(r))) throw new Error("an empty split was sent");
  const pick = groups.last();
  const tracklet = await pick.getAttribute("data-tracklet");
  await pick.click();
  if (await pick.getAttribute("aria-pressed") !== "true") throw new Error("a clicked sighting is not picked");
  await page.waitForFunction(() => /1 sighting/.test(document.querySelector("[data-testid=split-count]").textContent));
  step(`person #${who}: timeline in camera colours, ${nGroups} sightings as crop groups, empty split explained`);
  await shot(page, "identity");
  await page.click("#split");
  await page.waitForFunction(w => { const t = document.querySelector("[data-testid=identity-title]"); return t && t.textContent !== `Person #${w}`; }, who, { timeout: 30_000 });
  const newTitle = await page.locator("[data-testid=identity-title]").textContent();
  const moved = await page.locator(`.sighting[data-tracklet="${tracklet}"]`).count();
  if (!moved || await page.locator(".sighting").count() !== 1) throw new Error(`the split-off identity (${newTitle}) does not hold exactly the picked sighting`);
  step(`split tracklet ${tracklet} off into ${newTitle}`);

  // search by image: results with camera, time and a calibrated band
  const cropUrl = await page.locator(".crops img").first().getAttribute("src");
  const bytes = await (await page.request.get(base + cropUrl)).body();
  const dir = mkdtempSync(join(tmpdir(), "crosscam-ui-"));
  const file = join(dir, "person.jpg");
  writeFileSync(file, bytes);
  const checkResults = async () => {
    await page.waitForSelector("[data-testid=search-results] .match");
    const legendText = await page.locator("[data-testid=search-legend]").textContent();
    const [, likely, possible] = legendText.match(/likely from ([\d.]+).*possible from ([\d.]+)/) || [];
    if (!likely) throw new Error(`no calibration shown: ${legendText}`);
    const ms = await page.locator("[data-testid=search-results] .match").evaluateAll(as => as.map(a => ({
      band: a.dataset.band, badge: a.querySelector(".badge")?.textContent, sim: Number(a.dataset.similarity), shown: a.textContent,
      where: a.querySelector(".where").textContent, when: a.querySelector(".when").textContent })));
    for (const m of ms) {
      if (!m.shown.includes(`· ${m.sim.toFixed(2)}`)) throw new Error(`match does not show its similarity: ${JSON.stringify(m)}`);
      const want = m.sim >= Number(likely) - 0.005 ? "likely" : m.sim >= Number(possible) - 0.005 ? "possible" : "unlikely";
      if (m.badge !== m.band || (m.band !== want && Math.abs(m.sim - Number(likely)) > 0.01 && Math.abs(m.sim - Number(possible)) > 0.01)) throw new Error(`match ${JSON.stringify(m)}: expected ${want}`);
      if (!/Main entrance|Plaza|Loading dock/.test(m.where) || !/last seen \d/.test(m.when)) throw new Error(`match without camera or time: ${JSON.stringify(m)}`);
    }
    return ms;
  };
  await page.click("#nav a[data-page=search]");
  await page.setInputFiles("#search-file", file);
  const own = await checkResults();
  step(`search with a crop: ${own.length} matches, best ${own[0].sim} (${own[0].band})`);
  // a footballer who was never in front of these cameras
  await page.goto(base + "/#/identities");
  await page.click("#nav a[data-page=search]");
  await page.setInputFiles("#search-file", env("FOOTBALLER"));
  const far = await checkResults();
  if (far[0].band === "likely") throw new Error(`a person never seen matches as likely: ${JSON.stringify(far[0])}`);
  step(`search with a stranger: best ${far[0].sim} (${far[0].band})`);
  await shot(page, "search");

  // managing cameras: the form says what is missing before anything is sent
  await page.click("#nav a[data-page=manage]");
  await page.waitForSelector("[data-testid=camera-table] tbody tr");
  const n0 = sent.length;
  await page.click("#cam-save");
  await page.waitForFunction(() => /Give the camera an id/.test(document.querySelector("[data-testid=cam-id-error]").textContent)
    && /Give the camera's address/.test(document.querySelector("[data-testid=cam-url-error]").textContent));
  await page.fill("#cam-id", "back door");
  await page.fill("#cam-url", "http://10.0.0.9/stream");
  await page.click("#cam-save");
  await page.waitForFunction(() => /only letters, digits/.test(document.querySelector("[data-testid=cam-id-error]").textContent)
    && /start it with rtsp/.test(document.querySelector("[data-testid=cam-url-error]").textContent));
  if (sent.slice(n0).some(r => /^(PUT|POST) \/api\/v1\/cameras/.test(r))) throw new Error("an invalid camera form was sent");
  if (await page.locator(".cam-remove").count() < 3) throw new Error("the admin has no Remove buttons");
  step("camera form: plain-language checks before sending");
  await shot(page, "manage");

  // jobs: explained form; a running job shows phase, step of total and ETA; a readable cancel
  await page.click("#nav a[data-page=jobs]");
  await page.waitForSelector("[data-testid=models] tbody tr");
  const form = await page.locator(".jobform").innerText();
  if (!/one pass over the stored crops/.test(form) || !/compute/.test(form) || !/S4 —/.test(form)) throw new Error(`the job form explains nothing: ${form}`);
  if (await page.locator("#rollback").count()) throw new Error("roll back offered with no previous version");
  await page.waitForSelector("[data-testid=no-rollback]");
  await page.click("#job-start");
  const running = page.locator("[data-testid=jobs] tr[data-state=running]");
  await running.first().waitFor({ timeout: 30_000 });
  const jobId = await running.first().getAttribute("data-job");
  step(`job ${jobId} running`);
  if (/\/\?/.test(await running.first().innerText())) throw new Error("a running job shows an unknown total as ?");
  await page.waitForFunction(id => /step \d+ of \d+ · about .+ left/.test(document.querySelector(`tr[data-job="${id}"] .job-progress`)?.textContent || ""), jobId, { timeout: 240_000 });
  const prog = await page.locator(`tr[data-job="${jobId}"]`).innerText();
  step(`job progress: ${prog.replace(/\s+/g, " ")}`);
  await shot(page, "jobs");
  await page.locator(`tr[data-job="${jobId}"] .job-cancel`).click();
  await page.waitForSelector(`tr[data-job="${jobId}"][data-state=finished]`, { timeout: 120_000 });
  const outcome = await page.locator(`tr[data-job="${jobId}"] .job-state`).textContent();
  if (outcome !== "cancelled") throw new Error(`job ended ${outcome}, expected cancelled`);
  await page.locator(`tr[data-job="${jobId}"] a`).click();
  await page.waitForSelector("[data-testid=job-outcome]");
  const said = await page.locator("[data-testid=job-outcome]").textContent();
  if (!/^Cancelled after .+ Nothing changed: v0001 stays the current model/.test(said)) throw new Error(`cancelled job panel says ${JSON.stringify(said)}`);
  if (await page.locator("[data-testid=job-compare] table").count()) throw new Error("a cancelled job shows an empty score table");
  step(`job ${jobId} cancelled: ${said}`);
  await shot(page, "jobs-cancelled");

  // ---- operator: no admin pages, no camera changes -------------------------------------------
  const op = await newPage();
  await login(op, env("OPERATOR_USER"), env("OPERATOR_PASSWORD"));
  if (await op.locator("#nav a[data-page=jobs]").isVisible()) throw new Error("an operator sees the Jobs link");
  await op.goto(base + "/#/jobs");
  await op.waitForSelector("[data-testid=refused]");
  const refusal = await op.locator("[data-testid=refused]").textContent();
  if (!/admin/.test(refusal)) throw new Error(`refusal does not say who may: ${refusal}`);
  step("operator refused on the jobs page");
  await shot(op, "refused");
  await op.goto(base + "/#/manage");
  await op.waitForSelector("[data-testid=camera-table] tbody tr");
  await op.waitForSelector("[data-testid=manage-readonly]");
  if (await op.locator(".cam-remove, #cam-save, #cam-id").count()) throw new Error("an operator sees Add or Remove");
  step("operator: cameras read-only, no Add or Remove");

  // ---- operator: the review queue, one key per answer -----------------------------------------
  const posted = [];
  op.on("request", r => { if (r.method() === "POST" && new URL(r.url()).pathname === "/api/v1/labels") posted.push(JSON.parse(r.postData())); });
  await op.goto(base + "/#/review");
  const current = () => op.locator("[data-testid=review-card]").getAttribute("data-tracklet");
  await op.waitForSelector("[data-testid=review-card][data-tracklet]:not([data-tracklet=''])");
  // crops of both sides shown
  await op.waitForFunction(() => document.querySelectorAll("[data-testid=review-card] .review-side").length === 2
    && [...document.querySelectorAll("[data-testid=review-card] .review-side")].every(s => [...s.querySelectorAll("img")].some(i => i.complete && i.naturalWidth > 0)));
  await shot(op, "review");
  const answers = [];
  for (const key of ["s", "d", " "]) {
    const before = await current();
    const identity = await op.locator("[data-testid=review-card]").getAttribute("data-identity");
    answers.push([key, Number(before), Number(identity)]);
    await op.keyboard.press(key === " " ? "Space" : key);
    await op.waitForFunction(t => document.querySelector("[data-testid=review-card]").dataset.tracklet !== t, before);
  }
  if (posted.length !== 2) throw new Error(`the review queue sent ${posted.length} labels for two answers and a skip`);
  const [[, t0, i0], [, t1, i1], [, t2]] = answers;
  if (posted[0].kind !== "confirm" || posted[0].tracklet !== t0 || posted[0].identity !== i0) throw new Error(`S sent ${JSON.stringify(posted[0])}`);
  if (posted[1].kind !== "reject" || posted[1].tracklet !== t1 || posted[1].identity !== i1) throw new Error(`D sent ${JSON.stringify(posted[1])}`);
  const stored = await op.evaluate(() => fetch("/api/v1/labels").then(r => r.json()));
  const mine = stored.labels.filter(l => l.tracklet === t0 || l.tracklet === t1 || l.tracklet === t2);
  if (mine.length !== 2 || mine.some(l => l.user !== env("OPERATOR_USER"))) throw new Error(`stored labels: ${JSON.stringify(mine)}`);
  if (!/2 answered/.test(await op.locator("[data-testid=review-status]").textContent())) throw new Error("the review status does not count the answers");
  step(`review queue: S confirmed ${t0} as #${i0}, D rejected ${t1} as #${i1}, space skipped ${t2}`);

  if (errors.length) throw new Error(errors.join("\n"));
  console.log("ui: all checks passed");
  await browser.close();
} catch (e) {
  console.error(`ui: FAILED: ${e.message}`);
  for (const x of errors) console.error(x);
  await browser.close();
  process.exit(1);
}

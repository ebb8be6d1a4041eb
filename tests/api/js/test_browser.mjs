// tests/api/js/test_browser.mjs: the node's page (actors/web/index.html) in headless
// Chromium (Debian's /usr/bin/chromium, driven by playwright-core over the DevTools
// protocol; no browser download) against a 2-node cluster: the ring and the node table show
// both nodes, a chat message typed into the form streams its reply (the reply element
// changes several times before the stream's end), and a screenshot is saved and checked
// (PNG, not tiny). Skips (77) only without chromium or playwright-core, saying so.
import fs from "node:fs";
import path from "node:path";
import { startCluster, check, eq, done, skip, build, reference } from "./cluster.mjs";

const chromiumPath = process.env.EXO_CHROMIUM || "/usr/bin/chromium";
if (!fs.existsSync(chromiumPath)) skip(`no ${chromiumPath} (tools/deps.sh installs Debian's chromium)`);
let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch {
  skip("playwright-core is not installed (tools/deps.sh runs `npm ci` in tests/api/js)");
}

const ref = reference();
const chatRef = ref.prompts.find((p) => p.prompt.startsWith("<|im_start|>user\n"));
const userText = chatRef.prompt.slice("<|im_start|>user\n".length, chatRef.prompt.indexOf("<|im_end|>"));
let sentBody = null;
const shotDir = process.env.EXO_API_SCREENSHOT_DIR || build;
const shot = path.join(shotDir, "api-page.png");
const cluster = await startCluster();
let browser;
try {
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    timeout: 60000,
    // this machine's network is closed: keep Chromium off it, and root needs --no-sandbox
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync"],
  });
  const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  const consoleErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  await page.goto(cluster.url(0, "/"), { waitUntil: "load" });

  // every node of the cluster, in the table and on the ring, with its layer range
  await page.waitForFunction(() => document.querySelectorAll(".node-row").length === 2 &&
                                   document.querySelectorAll(".ring-node").length === 2, null, { timeout: 20000 });
  const rows = await page.$$eval(".node-row", (rs) => rs.map((r) => ({ node: r.dataset.node, cells: [...r.cells].map((c) => c.textContent) })));
  eq(rows.map((r) => r.node).sort(), ["1", "2"], "table rows for nodes 1 and 2");
  check(rows.every((r) => r.cells[3] === "alive"), "both nodes alive", rows);
  check(rows.every((r) => /^\[\d+,\d+\)$/.test(r.cells[2])), "each row shows a layer range", rows);
  const ring = await page.$$eval(".ring-node", (ls) => ls.map((l) => l.textContent));
  eq(ring.length, 2, "ring labels");
  check(ring.some((t) => /^node 1 \[\d+,\d+\)$/.test(t)) && ring.some((t) => /^node 2 \[\d+,\d+\)$/.test(t)),
        "ring labels name both nodes and their ranges", ring);
  eq(await page.textContent("#model"), "demo", "model id shown");

  // type a message and send it through the form; record every change of the reply
  await page.evaluate(() => {
    window.__replySnapshots = [];
    new MutationObserver(() => {
      const r = document.querySelector('[id^="reply-"]');
      if (r) window.__replySnapshots.push({ text: r.textContent, done: !!r.dataset.done });
    }).observe(document.getElementById("log"), { subtree: true, childList: true, characterData: true, attributes: true });
  });
  // the page samples at temperature 1 with no seed; the test makes its request greedy (the
  // body is otherwise the page's own) so the reply is known: transformers' greedy text
  await page.route("**/v1/chat/completions", (route) => {
    const body = JSON.parse(route.request().postData());
    sentBody = body;
    route.continue({ postData: JSON.stringify({ ...body, temperature: 0 }) });
  });
  await page.fill("#msg", userText);
  await page.click("#send");
  await page.waitForFunction(() => { const r = document.querySelector('[id^="reply-"]'); return r && (r.dataset.done || r.className === "err"); },
                             null, { timeout: 60000 });
  // tokens/s is the node's count in the last whole second: within the next two seconds one
  // of the page's refreshes (run here every 200 ms) shows the reply's tokens
  let rateNow = "";
  for (const t = Date.now(); Date.now() - t < 3000;) {
    await page.evaluate(() => refresh());
    rateNow = await page.textContent("#rate");
    if (/^tokens\/s: (?!0\.0 )/.test(rateNow)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const reply = await page.$eval('[id^="reply-"]', (r) => ({ text: r.textContent, cls: r.className, done: !!r.dataset.done }));
  const snaps = await page.evaluate(() => window.__replySnapshots);
  const partial = new Set(snaps.filter((s) => !s.done && s.text.startsWith("model: ") && s.text !== reply.text).map((s) => s.text));
  eq(reply.cls, "assistant", "the reply is not an error");
  check(reply.done && reply.text.startsWith("model: ") && reply.text.length > "model: ".length, "a non-empty reply arrived", reply);
  eq(sentBody && { model: sentBody.model, messages: sentBody.messages, stream: sentBody.stream },
     { model: "demo", messages: [{ role: "user", content: userText }], stream: true }, "the page's request");
  check(reply.text.startsWith("model: " + chatRef.decoded), "the reply is the greedy continuation (transformers' reference)",
        reply.text.slice(0, 120));
  check(partial.size >= 2, "the reply grew in several steps before the stream ended (streamed)", `${partial.size} partial texts`);
  eq(await page.$$eval(".err", (e) => e.length), 0, "no error lines on the page");
  check(/^tokens\/s: (?!0\.0 )[\d.]+ · /.test(rateNow ?? ""), "tokens/s above 0 shown after the reply", rateNow);
  await page.waitForFunction(() => /active requests: 0$/.test(document.getElementById("rate").textContent), null, { timeout: 10000 });

  fs.mkdirSync(shotDir, { recursive: true });
  await page.screenshot({ path: shot, fullPage: true });
  const png = fs.readFileSync(shot);
  check(png.length > 10000 && png.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])),
        "screenshot is a PNG of more than 10 kB", `${png.length} bytes`);
  console.log(`page: rows ${JSON.stringify(rows.map((r) => r.cells))}, ring ${JSON.stringify(ring)}`);
  console.log(`reply (${partial.size} partial texts before the end): ${JSON.stringify(reply.text.slice(0, 100))}`);
  console.log(`screenshot ${shot}: ${png.length} bytes`);

  // the other node's page shows the same cluster
  const page2 = await browser.newPage();
  await page2.goto(cluster.url(1, "/"));
  await page2.waitForFunction(() => document.querySelectorAll(".node-row").length === 2, null, { timeout: 20000 });
  const self2 = await page2.$$eval(".node-row", (rs) => rs.filter((r) => r.cells[0].textContent.includes("(this)")).map((r) => r.dataset.node));
  eq(self2, ["2"], "node 2's page marks node 2 as this node");
  eq(consoleErrors, [], "no console errors");
  cluster.check();
} catch (e) {
  check(false, "exception", e.stack);
} finally {
  if (browser) await browser.close().catch(() => {});
  await cluster.stop();
}
done("api_browser");

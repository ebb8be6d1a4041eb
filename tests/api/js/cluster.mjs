// tests/api/js/cluster.mjs: starts a 2-node cluster for the client tests: two
// `exo-actors run` processes on loopback (configs written to a temp dir, ports from the
// kernel), the demo model split by the partitioner, each node with its own api actor.
// Owns the children: stop() (and any exit of this process) ends them. Must not judge
// the API: readiness is "node 1's /v1/cluster shows both nodes and a live map".
import { spawn, execFile } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

export const root = process.env.EXO_SOURCE_ROOT || path.resolve(new URL("../../..", import.meta.url).pathname);
export const build = process.env.EXO_BUILD_ROOT || path.join(root, "build");
export const exe = path.join(build, "actors", "exo-actors");
export const model = path.join(root, "models", "demo");

// Exit code meson reads as "skipped": only for what cannot run here, always with a reason.
export function skip(why) {
  console.error(`SKIP: ${why}`);
  process.exit(77);
}

// Below the kernel's ephemeral range (32768-60999): a port listen(0) hands out can be taken
// as an outgoing connection's source port before the node binds it (actors/local_cluster.c).
function canListen(port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.on("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

export async function pickPort() {
  for (let i = 0; i < 500; i++) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    if (await canListen(port)) return port;
  }
  throw new Error("no free loopback port in 20000-31999");
}

const children = new Set();
const tmpDirs = new Set(); // removed at exit too, when a test dies before stop()
function killAll(sig) {
  for (const c of children) {
    try { c.kill(sig); } catch { /* already gone */ }
  }
}
process.on("exit", () => {
  killAll("SIGKILL");
  if (!process.env.EXO_KEEP_TMP) for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
});
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => { killAll("SIGKILL"); process.exit(1); });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// n nodes; apiOptions: extra api actor options as YAML flow text (e.g. "keepalive_ms: 200");
// apiKey: the key readiness checks send when apiOptions sets keys.
export async function startCluster({ n = 2, apiOptions = "keepalive_ms: 200", apiKey, timeoutMs = 30000 } = {}) {
  if (!fs.existsSync(exe)) throw new Error(`no ${exe} (build first; EXO_BUILD_ROOT=${build})`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "exo-api-js-"));
  tmpDirs.add(dir);
  const nodePorts = [], apiPorts = [], procs = [], configs = [], logs = [];
  for (let i = 0; i < n; i++) {
    nodePorts.push(await pickPort());
    apiPorts.push(await pickPort());
  }
  for (let i = 0; i < n; i++) {
    const peers = nodePorts.filter((_, j) => j !== i).map((p) => `tcp://127.0.0.1:${p}`);
    const cfg = path.join(dir, `node${i + 1}.yaml`);
    fs.writeFileSync(cfg, [
      "cluster: apijs",
      `node:\n  id: ${i + 1}\n  listen: tcp://127.0.0.1:${nodePorts[i]}`,
      "loops: 2",
      "log: warn",
      `model: ${JSON.stringify(model)}`,
      `peers: [${peers.join(", ")}]`,
      "actors:",
      '  - {name: discovery, kind: discovery, loop: 0, options: {broadcast: "off", interval_ms: 100}}',
      "  - {name: health, kind: health, loop: 0}",
      `  - {name: partitioner, kind: partitioner, loop: 0, options: {min_nodes: ${n}, settle_ms: 0, strategy: even}}`,
      "  - {name: origin, kind: origin, loop: 0}",
      "  - {name: shard, kind: shard-worker, loop: 1}",
      `  - {name: api, kind: api, loop: 0, options: {port: ${apiPorts[i]}${apiOptions ? ", " + apiOptions : ""}}}`,
      "",
    ].join("\n"));
    configs.push(cfg);
    const log = path.join(dir, `node${i + 1}.log`);
    logs.push(log);
    const fd = fs.openSync(log, "w");
    const p = spawn(exe, ["run", cfg], { stdio: ["ignore", fd, fd] });
    fs.closeSync(fd);
    children.add(p);
    p.exitInfo = null;
    p.on("exit", (code, sig) => { p.exitInfo = { code, sig }; children.delete(p); });
    procs.push(p);
  }
  const cluster = {
    dir, nodePorts, apiPorts, configs, logs, procs,
    url: (i, p = "") => `http://127.0.0.1:${apiPorts[i]}${p}`,
    check() {
      procs.forEach((p, i) => {
        if (p.exitInfo) {
          const tail = fs.readFileSync(logs[i], "utf8").trim().split("\n").slice(-3).join("\n");
          throw new Error(`node ${i + 1} exited (${JSON.stringify(p.exitInfo)}):\n${tail}`);
        }
      });
    },
    async stop() {
      for (const p of procs) if (!p.exitInfo) p.kill("SIGTERM");
      const deadline = Date.now() + 5000;
      while (procs.some((p) => !p.exitInfo) && Date.now() < deadline) await sleep(20);
      for (const p of procs) if (!p.exitInfo) p.kill("SIGKILL");
      if (!process.env.EXO_KEEP_TMP) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  const t0 = Date.now();
  for (;;) {
    cluster.check();
    let ok = true;
    for (let i = 0; i < n && ok; i++) {
      try {
        const r = await fetch(cluster.url(i, "/v1/cluster"),
                              { headers: apiKey ? { Authorization: `Bearer ${apiKey}` } : {} });
        const c = r.ok ? await r.json() : null;
        ok = !!c && c.nodes.length === n && c.epoch > 0 && c.ranges.length === n;
      } catch { ok = false; }
    }
    if (ok) break;
    if (Date.now() - t0 > timeoutMs) {
      await cluster.stop();
      throw new Error(`cluster did not come up within ${timeoutMs} ms (logs in ${dir})`);
    }
    await sleep(50);
  }
  return cluster;
}

// `exo-actors generate` on its own 2-node cluster (or through a running one with config):
// the reference the API must match. Resolves to the ids, or the text without generate's
// closing newline.
export function generate({ promptIds, prompt, seed, temperature, maxTokens, ids = true, nodes = 2, config }) {
  const args = ["generate", "--model", model, "--max-tokens", String(maxTokens),
                "--temperature", String(temperature), "--seed", String(seed)];
  if (config) args.push("--config", config); else args.push("--nodes", String(nodes));
  if (promptIds) args.push("--prompt-ids", promptIds.join(","));
  else args.push("--prompt", prompt);
  if (ids) args.push("--ids");
  // up to 3 tries: on a heavily loaded machine a whole generate run can fail ("no progress
  // after 8 attempts"); each try is logged, and the reference is what the run printed
  const once = () => new Promise((resolve, reject) => {
    execFile(exe, args, { encoding: "utf8", timeout: 60000, maxBuffer: 1 << 20 }, (e, out, err) => {
      if (e) return reject(new Error(`exo-actors ${args.join(" ")}: ${e.message}\n${err}`));
      resolve(ids ? out.trim().split(/\s+/).filter(Boolean).map(Number) : out.replace(/\n$/, ""));
    });
  });
  return (async () => {
    for (let t = 1; ; t++) {
      try {
        return await once();
      } catch (e) {
        if (t === 3) throw e;
        console.error(`generate try ${t} failed, retrying: ${e.message.split("\n").filter((l) => l.startsWith("exo-actors generate:")).join(" ")}`);
      }
    }
  })();
}

// Minimal check helpers: count failures, print each, exit non-zero at the end.
let failures = 0, checks = 0;
export function check(cond, what, detail) {
  checks++;
  if (!cond) {
    failures++;
    console.error(`FAIL: ${what}${detail !== undefined ? ": " + (typeof detail === "string" ? detail : JSON.stringify(detail)) : ""}`);
  }
  return !!cond;
}
export function eq(got, want, what) {
  return check(JSON.stringify(got) === JSON.stringify(want), what, `got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}
export function done(name) {
  console.log(`${name}: ${checks - failures}/${checks} checks passed`);
  process.exitCode = failures ? 1 : 0;
  return failures;
}

// The demo model's reference prompts (models/demo/reference.json, made by transformers).
export function reference() {
  return JSON.parse(fs.readFileSync(path.join(model, "reference.json"), "utf8"));
}

// tests/api/js/test_curl.mjs: the api actor through curl (a real HTTP client) on a 2-node
// cluster: chat and completions, streamed and not, return the tokens `exo-actors generate`
// returns for the same prompt ids, seed and temperature (on its own cluster and through
// this one with --config); stop strings cut exactly; usage counts; 24 malformed bodies get
// the documented status and error JSON while the node keeps serving; a client that
// disconnects mid-stream frees the request's KV caches on both nodes (exo_shard_kv_caches).
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { startCluster, generate, check, eq, done, reference, skip } from "./cluster.mjs";

try { execFileSync("curl", ["--version"], { stdio: "ignore" }); } catch { skip("no curl (tools/deps.sh installs it)"); }

function curl(url, body, extra = []) {
  const args = ["-sS", "-o", "-", "-w", "\n%{http_code}", ...extra];
  if (body !== undefined) args.push("-H", "Content-Type: application/json", "--data-binary", "@-");
  args.push(url);
  const out = execFileSync("curl", args, { input: body ?? "", maxBuffer: 64 << 20, timeout: 60000 }).toString("utf8");
  const nl = out.lastIndexOf("\n");
  return { status: Number(out.slice(nl + 1)), body: out.slice(0, nl) };
}
const json = (r) => { try { return JSON.parse(r.body); } catch { return null; } };

// SSE body -> {chunks, done}; every event must be `data: ...` or a comment.
function sse(body) {
  const chunks = [];
  let finished = false, bad = 0;
  for (const ev of body.split("\n\n")) {
    if (!ev) continue;
    if (ev.startsWith(":")) continue;
    if (!ev.startsWith("data: ")) { bad++; continue; }
    const d = ev.slice(6);
    if (d === "[DONE]") { finished = true; continue; }
    chunks.push(JSON.parse(d));
  }
  return { chunks, finished, bad };
}
const chatText = (chunks) => chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
const complText = (chunks) => chunks.map((c) => c.choices[0]?.text ?? "").join("");

const ref = reference();
const chatRef = ref.prompts.find((p) => p.prompt.startsWith("<|im_start|>user\n"));
const userText = chatRef.prompt.slice("<|im_start|>user\n".length, chatRef.prompt.indexOf("<|im_end|>"));

// generate's answers, computed while the cluster comes up (each starts its own nodes)
const prompt = "The Debian project is";
const samples = [[11, 0.8], [12345, 1.3]];
const chatGen = (o) => generate({ promptIds: chatRef.prompt_ids, ...o });
const tStart = Date.now();
const lap = (what) => console.log(`  ${what} done at ${((Date.now() - tStart) / 1000).toFixed(1)} s`);
// two at a time: each is a 2-process cluster, and a loaded 2-core machine makes steps
// time out (the origin re-issues, and gives up after 8 attempts)
async function twoAtATime(jobs) {
  const out = new Array(jobs.length);
  let next = 0;
  const worker = async () => { while (next < jobs.length) { const k = next++; out[k] = await jobs[k](); } };
  await Promise.all([worker(), worker()]);
  return out;
}
const [cluster, [gGreedyChat, gGreedyIds, gGreedyText, ...gSamples]] = await Promise.all([
  startCluster(),
  twoAtATime([
    () => chatGen({ seed: 0, temperature: 0, maxTokens: ref.max_new_tokens }),
    () => generate({ prompt, seed: 0, temperature: 0, maxTokens: 32 }),
    () => generate({ prompt, seed: 0, temperature: 0, maxTokens: 32, ids: false }),
    ...samples.flatMap(([seed, temperature]) => [() => chatGen({ seed, temperature, maxTokens: 24 }),
                                                 () => chatGen({ seed, temperature, maxTokens: 24, ids: false })]),
  ]),
]);
const chatUrl = (i) => cluster.url(i, "/v1/chat/completions");
const complUrl = (i) => cluster.url(i, "/v1/completions");
const eos = ref.eos_token_id;

try {
  lap("cluster up and generate's references");
  // --- 1. greedy chat equals transformers' reference ids (decoded) and generate's ids ----
  {
    const req = { model: "demo", messages: [{ role: "user", content: userText }], temperature: 0,
                  max_tokens: ref.max_new_tokens };
    const r = curl(chatUrl(0), JSON.stringify(req));
    const j = json(r);
    eq(r.status, 200, "greedy chat status");
    const stopAt = chatRef.greedy_ids.indexOf(eos);
    const nGen = stopAt >= 0 ? stopAt + 1 : chatRef.greedy_ids.length;
    eq(j?.usage, { prompt_tokens: chatRef.prompt_ids.length, completion_tokens: nGen,
                   total_tokens: chatRef.prompt_ids.length + nGen }, "greedy chat usage");
    if (stopAt < 0) eq(j?.choices?.[0]?.message?.content, chatRef.decoded, "greedy chat text = transformers' reference");
    eq(j?.choices?.[0]?.finish_reason, stopAt >= 0 ? "stop" : "length", "greedy chat finish_reason");
    const ids = gGreedyChat;
    eq(ids, chatRef.greedy_ids.slice(0, nGen), "generate --nodes 2 greedy ids = reference ids");
  }

  lap("greedy chat");
  // --- 2. sampled chat (seed, temperature): API = generate, streamed = not streamed ------
  for (const [k, [seed, temperature]] of samples.entries()) {
    const maxTokens = 24;
    const base = { model: "demo", messages: [{ role: "user", content: userText }], temperature, seed,
                   max_tokens: maxTokens, logprobs: true };
    const [ids, text] = [gSamples[2 * k], gSamples[2 * k + 1]];
    const viaConfig = await chatGen({ seed, temperature, maxTokens, config: cluster.configs[1] });
    eq(viaConfig, ids, `seed ${seed}: generate --config (this cluster) = generate --nodes 2`);
    const finish = ids[ids.length - 1] === eos ? "stop" : "length";
    for (const node of [0, 1]) {
      const r = curl(chatUrl(node), JSON.stringify(base));
      const j = json(r);
      eq(r.status, 200, `seed ${seed} node ${node + 1}: status`);
      const c = j?.choices?.[0];
      eq(c?.message?.content, text, `seed ${seed} node ${node + 1}: chat text = generate's text`);
      eq(j?.usage?.completion_tokens, ids.length, `seed ${seed} node ${node + 1}: completion_tokens = generate's id count`);
      eq(j?.usage?.prompt_tokens, chatRef.prompt_ids.length, `seed ${seed} node ${node + 1}: prompt_tokens`);
      eq(c?.finish_reason, finish, `seed ${seed} node ${node + 1}: finish_reason`);
      // one logprobs entry per generated token, each the token decoded alone
      const lp = c?.logprobs?.content ?? [];
      eq(lp.length, ids.length, `seed ${seed} node ${node + 1}: one logprob per token`);
      check(lp.every((t) => typeof t.logprob === "number" && t.logprob <= 0), `seed ${seed}: logprobs are log-probabilities`);
    }
    const rs = curl(chatUrl(1), JSON.stringify({ ...base, logprobs: undefined, stream: true,
                                                stream_options: { include_usage: true } }), ["-N"]);
    eq(rs.status, 200, `seed ${seed}: stream status`);
    const s = sse(rs.body);
    check(s.finished && s.bad === 0, `seed ${seed}: stream ends with [DONE], only data/comment lines`);
    eq(s.chunks[0]?.choices?.[0]?.delta?.role, "assistant", `seed ${seed}: first chunk names the role`);
    eq(chatText(s.chunks), text, `seed ${seed}: streamed chat text = generate's text`);
    const last = s.chunks[s.chunks.length - 1];
    eq(last?.choices, [], `seed ${seed}: usage chunk has no choices`);
    eq(last?.usage, { prompt_tokens: chatRef.prompt_ids.length, completion_tokens: ids.length,
                      total_tokens: chatRef.prompt_ids.length + ids.length }, `seed ${seed}: streamed usage`);
    eq(s.chunks.filter((c) => c.choices?.[0]?.finish_reason).map((c) => c.choices[0].finish_reason), [finish],
       `seed ${seed}: exactly one finish_reason chunk`);
  }

  lap("sampled chat");
  // --- 3. completions: text prompt (tokenized as generate --prompt does) -----------------
  const promptRef = ref.prompts.find((p) => p.prompt === prompt);
  const [greedyIds, greedyText] = [gGreedyIds, gGreedyText];
  {
    const r = curl(complUrl(1), JSON.stringify({ model: "demo", prompt, temperature: 0, max_tokens: 32 }));
    const j = json(r);
    eq(j?.choices?.[0]?.text, greedyText, "greedy completion text = generate --prompt");
    // the demo tokenizer's post-processor adds no BOS: the prompt is reference.json's ids
    eq(j?.usage?.prompt_tokens, promptRef.prompt_ids.length, "completion prompt_tokens");
    eq(greedyIds, promptRef.greedy_ids, "generate --prompt greedy ids = transformers' reference ids");
    eq(j?.choices?.[0]?.text, promptRef.decoded, "greedy completion text = transformers' reference text");
    eq(j?.usage?.completion_tokens, greedyIds.length, "completion completion_tokens");
    const rs = curl(complUrl(0), JSON.stringify({ model: "demo", prompt, temperature: 0, max_tokens: 32, stream: true }), ["-N"]);
    const s = sse(rs.body);
    check(s.finished, "streamed completion ends with [DONE]");
    eq(complText(s.chunks), greedyText, "streamed greedy completion = generate --prompt");
    // token ids as the prompt: same continuation as the text prompt
    const ri = curl(complUrl(0), JSON.stringify({ model: "demo", prompt: promptRef.prompt_ids, temperature: 0, max_tokens: 32 }));
    eq(json(ri)?.choices?.[0]?.text, greedyText, "completion from prompt ids = from text");
  }

  lap("completions");
  // --- 4. stop strings cut exactly, across token boundaries, never emitted --------------
  {
    const cases = [];
    for (const at of [3, Math.floor(greedyText.length / 2), greedyText.length - 6]) {
      const stop = greedyText.slice(at, at + 4);
      if (stop.length === 4) cases.push([stop]);
    }
    cases.push(["no such text zzz", greedyText.slice(10, 13)]); // a list: the one that occurs
    for (const stop of cases) {
      const cut = Math.min(...stop.map((s) => { const k = greedyText.indexOf(s); return k < 0 ? Infinity : k; }));
      const want = greedyText.slice(0, cut);
      for (const stream of [false, true]) {
        const req = { model: "demo", prompt, temperature: 0, max_tokens: 32, stop: stop.length === 1 ? stop[0] : stop, stream };
        const r = curl(complUrl(0), JSON.stringify(req), stream ? ["-N"] : []);
        let text, finish;
        if (stream) {
          const s = sse(r.body);
          text = complText(s.chunks);
          finish = s.chunks.map((c) => c.choices?.[0]?.finish_reason).filter(Boolean)[0];
          check(s.finished, `stop ${JSON.stringify(stop)} stream: [DONE]`);
        } else {
          const j = json(r);
          text = j?.choices?.[0]?.text;
          finish = j?.choices?.[0]?.finish_reason;
          check(j?.usage?.completion_tokens >= 1 && j?.usage?.completion_tokens <= greedyIds.length,
                `stop ${JSON.stringify(stop)}: completion_tokens within what was generated`, j?.usage);
        }
        eq(text, want, `stop ${JSON.stringify(stop)} (${stream ? "stream" : "json"}): text ends right before the stop string`);
        eq(finish, "stop", `stop ${JSON.stringify(stop)} (${stream ? "stream" : "json"}): finish_reason`);
      }
    }
  }

  lap("stop strings");
  // --- 5. malformed bodies: documented status + error JSON; the node keeps serving ------
  {
    const msg = [{ role: "user", content: "hi" }];
    const chat = (o) => JSON.stringify({ model: "demo", messages: msg, ...o });
    const huge = path.join(cluster.dir, "huge.json");
    fs.writeFileSync(huge, JSON.stringify({ model: "demo", messages: [{ role: "user", content: "x".repeat(1536 * 1024) }] }));
    const bad = [
      ["bad JSON", "chat", "{\"model\": \"demo\", ", 400, "invalid_json", null],
      ["body not an object", "chat", "[1, 2]", 400, "invalid_type", null],
      ["messages a string", "chat", JSON.stringify({ model: "demo", messages: "hi" }), 400, "invalid_type", "messages"],
      ["empty messages", "chat", JSON.stringify({ model: "demo", messages: [] }), 400, "empty_array", "messages"],
      ["no messages", "chat", JSON.stringify({ model: "demo" }), 400, "missing_required_parameter", "messages"],
      ["unknown role", "chat", JSON.stringify({ model: "demo", messages: [{ role: "wizard", content: "hi" }] }), 400, "invalid_value", "messages[0].role"],
      ["content a number", "chat", JSON.stringify({ model: "demo", messages: [{ role: "user", content: 42 }] }), 400, "invalid_type", "messages[0].content"],
      ["negative max_tokens", "chat", chat({ max_tokens: -5 }), 400, "invalid_value", "max_tokens"],
      ["max_tokens a string", "chat", chat({ max_tokens: "ten" }), 400, "invalid_type", "max_tokens"],
      ["max_tokens over the window", "chat", chat({ max_tokens: 511 }), 400, "context_length_exceeded", "max_tokens"],
      ["temperature 3", "chat", chat({ temperature: 3 }), 400, "invalid_value", "temperature"],
      ["temperature a string", "chat", chat({ temperature: "hot" }), 400, "invalid_type", "temperature"],
      ["top_p 0", "chat", chat({ top_p: 0 }), 400, "invalid_value", "top_p"],
      ["presence_penalty 5", "chat", chat({ presence_penalty: 5 }), 400, "invalid_value", "presence_penalty"],
      ["n = 2", "chat", chat({ n: 2 }), 400, "unsupported_value", "n"],
      ["five stop strings", "chat", chat({ stop: ["a", "b", "c", "d", "e"] }), 400, "array_above_max_length", "stop"],
      ["stream a string", "chat", chat({ stream: "yes" }), 400, "invalid_type", "stream"],
      ["stream_options without stream", "chat", chat({ stream_options: { include_usage: true } }), 400, "invalid_value", "stream_options"],
      ["top_logprobs without logprobs", "chat", chat({ top_logprobs: 2 }), 400, "invalid_value", "top_logprobs"],
      ["unknown model", "chat", JSON.stringify({ model: "gpt-4", messages: msg }), 404, "model_not_found", "model"],
      ["no model", "chat", JSON.stringify({ messages: msg }), 400, "missing_required_parameter", "model"],
      ["prompt an object", "compl", JSON.stringify({ model: "demo", prompt: { a: 1 } }), 400, "invalid_type", "prompt"],
      ["prompt ids negative", "compl", JSON.stringify({ model: "demo", prompt: [1, -3] }), 400, "invalid_value", "prompt"],
      ["huge body (1.5 MiB > max_body_bytes)", "chat", "@" + huge, 413, "request_too_large", null],
    ];
    let served = 0;
    for (const [what, ep, body, status, code, param] of bad) {
      const url = ep === "chat" ? chatUrl(0) : complUrl(0);
      const r = body.startsWith("@")
        ? (() => {
            const o = execFileSync("curl", ["-sS", "-o", "-", "-w", "\n%{http_code}", "-H", "Content-Type: application/json",
                                            "--data-binary", body, url], { maxBuffer: 8 << 20 }).toString();
            const nl = o.lastIndexOf("\n");
            return { status: Number(o.slice(nl + 1)), body: o.slice(0, nl) };
          })()
        : curl(url, body);
      const e = json(r)?.error;
      eq(r.status, status, `${what}: status`);
      check(e && typeof e.message === "string" && e.message.length > 0 && "type" in e && "param" in e && "code" in e,
            `${what}: error JSON {message, type, param, code}`, r.body.slice(0, 200));
      eq(e?.code, code, `${what}: code`);
      eq(e?.param ?? null, param, `${what}: param`);
      eq(e?.type, status === 413 || status === 404 || status === 400 ? "invalid_request_error" : e?.type, `${what}: type`);
      const h = await fetch(cluster.url(0, "/healthz"));
      if (h.status === 200 && (await h.json()).status === "ok") served++;
    }
    eq(served, bad.length, "the node answered /healthz after every malformed body");
    const ok = curl(chatUrl(0), chat({ max_tokens: 3, temperature: 0 }));
    eq(ok.status, 200, "a valid request after the malformed ones");
    check(bad.length >= 20, "at least 20 malformed bodies");
  }

  lap("malformed bodies");
  // --- 6. disconnect mid-stream frees the KV caches on every node --------------------
  {
    const metrics = async (i) => {
      const t = await (await fetch(cluster.url(i, "/metrics"))).text();
      const v = (name) => { const m = t.match(new RegExp(`^${name} (\\S+)$`, "m")); return m ? Number(m[1]) : NaN; };
      return { kv: v("exo_shard_kv_caches"), active: v("exo_api_active_requests"),
               disc: v("exo_api_client_disconnects_total"), cancels: v("exo_api_cancels_total") };
    };
    const before = await Promise.all([metrics(0), metrics(1)]);
    eq(before.map((m) => m.kv), [0, 0], "no KV caches held before");
    // greedy on this prompt repeats itself without an EOS: a stream of 500 tokens
    const body = JSON.stringify({ model: "demo", prompt, max_tokens: 500, temperature: 0, stream: true });
    const c = spawn("curl", ["-sS", "-N", "-H", "Content-Type: application/json", "--data-binary", body, complUrl(0)]);
    let got = "";
    c.stdout.on("data", (d) => { got += d; });
    const maxKv = [0, 0];
    const t0 = Date.now();
    // sampled while waiting for the first text and once after it (500 tokens take far
    // longer than one sample, so the stream still runs then)
    for (let seen = false; !seen && Date.now() - t0 < 20000;) {
      seen = /"text":"[^"]/.test(got);
      const m = await Promise.all([metrics(0), metrics(1)]);
      m.forEach((x, i) => { maxKv[i] = Math.max(maxKv[i], x.kv); });
    }
    c.kill("SIGKILL"); // the client goes away after its first text
    check(/"text":"[^"]/.test(got), "the long stream sent text");
    check(!got.includes("[DONE]"), "the client left before the stream ended");
    eq(maxKv, [1, 1], "while streaming: each node's shard-worker held the request's KV cache");
    let after;
    const t1 = Date.now();
    for (;;) {
      after = await Promise.all([metrics(0), metrics(1)]);
      if ((after[0].kv === 0 && after[1].kv === 0 && after[0].active === 0) || Date.now() - t1 > 10000) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    eq([after[0].kv, after[1].kv, after[0].active], [0, 0, 0], "after the disconnect: KV caches freed on both nodes, no active request");
    console.log(`cancel: KV caches freed on both nodes ${Date.now() - t1} ms after the client went away`);
    eq(after[0].disc, before[0].disc + 1, "the disconnect was counted");
    eq(after[0].cancels, before[0].cancels + 1, "the request was cancelled through the origin");
    const ok = curl(complUrl(0), JSON.stringify({ model: "demo", prompt: "Hi", max_tokens: 2 }));
    eq(ok.status, 200, "the node serves after the cancel");
  }
  lap("cancel");
  cluster.check();
} catch (e) {
  check(false, "exception", e.stack);
} finally {
  await cluster.stop();
}
done("api_curl");

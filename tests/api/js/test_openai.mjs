// tests/api/js/test_openai.mjs: the api actor through the official `openai` npm library (a
// second, independent client) on a 2-node cluster with an API key: models.list, chat and
// completions streamed and not equal `exo-actors generate` for the same seed, usage, stop,
// the library's typed errors (401, 400 with param/code, 404), and an aborted stream whose
// KV caches every node frees.
import { startCluster, generate, check, eq, done, reference, skip } from "./cluster.mjs";

let OpenAI;
try {
  OpenAI = (await import("openai")).default;
} catch {
  skip("the openai npm package is not installed (tools/deps.sh runs `npm ci` in tests/api/js)");
}

const KEY = "sk-exo-test-0123456789";
const ref = reference();
const chatRef = ref.prompts.find((p) => p.prompt.startsWith("<|im_start|>user\n"));
const userText = chatRef.prompt.slice("<|im_start|>user\n".length, chatRef.prompt.indexOf("<|im_end|>"));
const prompt = "A database is";
const seed = 21, temperature = 0.9, maxTokens = 20;
const chatGen = (o) => generate({ promptIds: chatRef.prompt_ids, seed, temperature, maxTokens, ...o });

const [cluster, ids, text, complText] = await Promise.all([
  startCluster({ apiOptions: `keepalive_ms: 200, api_keys: "${KEY}"`, apiKey: KEY }),
  chatGen({}),
  chatGen({ ids: false }),
  generate({ prompt, seed: 0, temperature: 0, maxTokens: 32, ids: false }),
]);
const client = (i, apiKey = KEY) => new OpenAI({ baseURL: cluster.url(i, "/v1"), apiKey, maxRetries: 0, timeout: 60000 });
const usage = (n) => ({ prompt_tokens: chatRef.prompt_ids.length, completion_tokens: n, total_tokens: chatRef.prompt_ids.length + n });
const finish = ids[ids.length - 1] === ref.eos_token_id ? "stop" : "length";
const messages = [{ role: "user", content: userText }];

async function expectError(what, fn, status, code, param) {
  try {
    await fn();
    check(false, `${what}: should have failed`);
  } catch (e) {
    check(e instanceof OpenAI.APIError, `${what}: an OpenAI.APIError`, String(e));
    eq(e.status, status, `${what}: status`);
    eq(e.code ?? null, code, `${what}: code`);
    eq(e.param ?? null, param, `${what}: param`);
  }
}

try {
  const models = await client(0).models.list();
  eq(models.data.map((m) => m.id), ["demo"], "models.list");
  eq((await client(1).models.retrieve("demo")).id, "demo", "models.retrieve");

  for (const node of [0, 1]) {
    const r = await client(node).chat.completions.create({ model: "demo", messages, seed, temperature, max_tokens: maxTokens });
    eq(r.object, "chat.completion", `node ${node + 1}: object`);
    eq(r.choices[0].message.content, text, `node ${node + 1}: chat text = generate's`);
    eq(r.choices[0].finish_reason, finish, `node ${node + 1}: finish_reason`);
    eq(r.usage, usage(ids.length), `node ${node + 1}: usage`);
  }

  const stream = await client(1).chat.completions.create({ model: "demo", messages, seed, temperature,
                                                           max_completion_tokens: maxTokens, stream: true,
                                                           stream_options: { include_usage: true } });
  let streamed = "", lastUsage = null, finishes = [], chunks = 0;
  for await (const c of stream) {
    chunks++;
    if (c.choices.length) {
      streamed += c.choices[0].delta.content ?? "";
      if (c.choices[0].finish_reason) finishes.push(c.choices[0].finish_reason);
    }
    if (c.usage) lastUsage = c.usage;
  }
  eq(streamed, text, "streamed chat text = generate's");
  check(chunks >= ids.length, "one chunk or more per token", chunks);
  eq(finishes, [finish], "streamed finish_reason");
  eq(lastUsage, usage(ids.length), "streamed usage");

  const c = await client(0).completions.create({ model: "demo", prompt, temperature: 0, max_tokens: 32 });
  eq(c.choices[0].text, complText, "greedy completion = generate --prompt");
  const stop = complText.slice(8, 12);
  const cs = await client(0).completions.create({ model: "demo", prompt, temperature: 0, max_tokens: 32, stop: [stop] });
  eq(cs.choices[0].text, complText.slice(0, complText.indexOf(stop)), `stop ${JSON.stringify(stop)} cuts exactly`);
  eq(cs.choices[0].finish_reason, "stop", "stop finish_reason");

  await expectError("wrong key", () => client(0, "sk-wrong-key-000000").models.list(), 401, "invalid_api_key", null);
  await expectError("temperature 3", () => client(0).chat.completions.create({ model: "demo", messages, temperature: 3 }),
                    400, "invalid_value", "temperature");
  await expectError("empty messages", () => client(0).chat.completions.create({ model: "demo", messages: [] }),
                    400, "empty_array", "messages");
  await expectError("unknown model", () => client(1).chat.completions.create({ model: "gpt-4o", messages }),
                    404, "model_not_found", "model");

  // abort a long stream after its first text: both nodes free the request's KV cache
  const metric = async (i, name) => {
    const t = await (await fetch(cluster.url(i, "/metrics"), { headers: { Authorization: `Bearer ${KEY}` } })).text();
    return Number(t.match(new RegExp(`^${name} (\\S+)$`, "m"))?.[1]);
  };
  const kv = (i) => metric(i, "exo_shard_kv_caches");
  const disc0 = await metric(0, "exo_api_client_disconnects_total");
  const ac = new AbortController();
  const long = await client(0).completions.create({ model: "demo", prompt, temperature: 0, max_tokens: 450, stream: true },
                                                  { signal: ac.signal });
  let got = "", finished = false;
  try {
    for await (const ch of long) {
      got += ch.choices[0]?.text ?? "";
      finished ||= !!ch.choices[0]?.finish_reason;
      if (got.length > 0) ac.abort();
    }
  } catch (e) { /* the library ends an aborted stream either quietly or with an abort error */
    check(e instanceof OpenAI.APIUserAbortError || e.name === "AbortError", "abort error type", String(e));
  }
  check(ac.signal.aborted && got.length > 0 && !finished, "the stream was aborted after some text, before its end");
  let after = [NaN, NaN];
  for (let t = Date.now(); Date.now() - t < 10000;) {
    after = await Promise.all([kv(0), kv(1)]);
    if (after[0] === 0 && after[1] === 0) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  eq(after, [0, 0], "after the abort: no KV cache held on either node");
  eq(await metric(0, "exo_api_client_disconnects_total"), disc0 + 1, "the abort was a client disconnect");
  const again = await client(0).completions.create({ model: "demo", prompt, temperature: 0, max_tokens: 32 });
  eq(again.choices[0].text, complText, "the node serves the same answer after the abort");
  cluster.check();
} catch (e) {
  check(false, "exception", e.stack);
} finally {
  await cluster.stop();
}
done("api_openai");

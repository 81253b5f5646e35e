// The TypeScript client's overhead (docs/performance.md#clients): figures, never assertions.
//
//   (cd clients/typescript && npm ci && npm run build) && node bench/clients/bench_node.mjs
//
// - allow() with a warm cache (the switch read once, then served from the 5 s cache)
// - the OpenAI wrapper's added work per call: allow(), reading the usage, report(); the SDK's
//   `create` replaced by one returning a prebuilt completion, so only the wrapper is timed
// - report() per record (the caller's cost), and records/s flushed to a local sink over HTTP
import { createServer } from "node:http";
import { Guard, wrapOpenAI } from "../../clients/typescript/dist/index.js";

const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

let received = 0;
const server = createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    if (req.method === "POST") received += Buffer.concat(chunks).toString().split('"id":').length - 1;
    res.setHeader("content-type", "application/json");
    res.end(req.method === "GET" ? '{"scope":"bench","state":"open","limit_factor":"1"}' : '{"accepted":1,"duplicates":0,"alerts_published":0}');
  });
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const url = `http://127.0.0.1:${server.address().port}`;

/** The median over rounds of the mean time per call, in µs. */
async function perCallUs(fn, n, rounds = 5) {
  const results = [];
  for (let r = 0; r < rounds; r++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < n; i++) await fn();
    results.push(Number(process.hrtime.bigint() - start) / n / 1000);
  }
  return results.sort((a, b) => a - b)[Math.floor(rounds / 2)];
}

const guard = new Guard(url, SECRET, "t".repeat(40), "bench/node", { flushIntervalMs: 3_600_000, maxQueue: 1_000_000 });
await guard.allow(); // warm
const allowUs = await perCallUs(() => guard.allow(), 200_000);

let counter = 0;
const completion = {
  id: "chatcmpl-1", object: "chat.completion", created: 1, model: "gpt-4o",
  choices: [{ index: 0, message: { role: "assistant", content: "hi" }, finish_reason: "stop" }],
  usage: { prompt_tokens: 1200, completion_tokens: 350, total_tokens: 1550, prompt_tokens_details: { cached_tokens: 200 } },
};
// the shape of the SDK's APIPromise that the wrapper uses
const create = () => {
  const promise = Promise.resolve(completion);
  promise.withResponse = async () => ({ data: completion, response: null, request_id: `req_${counter++}` });
  return promise;
};
const client = { chat: { completions: { create } } };
const wrapped = wrapOpenAI(client, guard);
const bareUs = await perCallUs(() => create().withResponse(), 50_000);
const wrappedUs = await perCallUs(() => wrapped.chat.completions.create({ model: "gpt-4o", messages: [] }), 50_000);
await guard.flush(120_000);

const n = 100_000;
const record = { model: "gpt-4o", tokens_in: 1200, tokens_out: 350, provider: "openai" };
const before = received;
const start = process.hrtime.bigint();
for (let i = 0; i < n; i++) guard.report(record);
const queued = Number(process.hrtime.bigint() - start) / 1e9;
await guard.flush(300_000);
const flushed = Number(process.hrtime.bigint() - start) / 1e9;
const sent = received - before;
await guard.close();
server.close();

console.log(`| TypeScript client (Node ${process.versions.node}) | figure |`);
console.log("|---|---:|");
console.log(`| \`allow()\`, warm cache | ${allowUs.toFixed(2)} µs |`);
console.log(`| wrapper's added work per OpenAI call (allow + usage + report) | ${(wrappedUs - bareUs).toFixed(1)} µs |`);
console.log(`| \`report()\` per record (the caller's cost) | ${((queued / n) * 1e6).toFixed(1)} µs (${Math.round(n / queued).toLocaleString("en")} records/s queued) |`);
console.log(`| ${n.toLocaleString("en")} records queued and flushed to a local sink | ${flushed.toFixed(2)} s (${Math.round(sent / flushed).toLocaleString("en")} records/s, ${guard.stats.batchesSent} signed batches) |`);
if (sent !== n) console.log(`| (records the sink received) | ${sent} of ${n} |`);

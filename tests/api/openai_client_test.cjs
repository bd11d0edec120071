// The official OpenAI client (npm `openai`) against `sepal serve-api`, as its users call it:
// models, completions and chat, streamed and not, logprobs, JSON mode and JSON schemas, 8 clients
// at once, and the errors.
//   node openai_client_test.cjs OPENAI_PACKAGE_DIR BASE_URL MODEL API_KEY EXPECTED.json ADJUSTED.json
// EXPECTED.json: [{"prompt": P, "completion": greedy text `sepal generate` writes after P}]
// ADJUSTED.json: {"prompt", "completion", "logit_bias", "presence_penalty", "frequency_penalty"}:
// the greedy text `sepal generate` writes with those adjustments.
const [pkg, baseURL, model, apiKey, expectedFile, adjustedFile] = process.argv.slice(2);
const OpenAI = require(pkg).default ?? require(pkg);
const fs = require('fs');
const expected = JSON.parse(fs.readFileSync(expectedFile, 'utf8'));
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120000 });
const MAX = 24;
let failures = 0;
function check(ok, what) {
  if (ok) {
    console.log(`ok: ${what}`);
  } else {
    console.log(`FAILED: ${what}`);
    failures++;
  }
}
async function expectError(promise, status, what) {
  try {
    await promise;
    check(false, `${what}: accepted`);
  } catch (e) {
    const shaped = e.error && typeof e.error.message === 'string' && typeof e.error.type === 'string';
    check(e.status === status && shaped, `${what}: HTTP ${e.status} (want ${status}), ${JSON.stringify(e.error)}`);
  }
}

async function streamedText(stream, chat) {
  let text = '', finish = null, usage = null, tokens = 0;
  for await (const chunk of await stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += chat ? (c.delta.content ?? '') : c.text;
      if (c.finish_reason) finish = c.finish_reason;
      if (c.logprobs) tokens += chat ? c.logprobs.content.length : c.logprobs.tokens.length;
    }
  }
  return { text, finish, usage, tokens };
}

async function main() {
  const models = await client.models.list();
  check(models.data.some((m) => m.id === model), `models.list names ${model}`);

  // 8 clients at once, each its own prompt: greedy texts are the ones `sepal generate` writes.
  const clients = expected.map(() => new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120000 }));
  const answers = await Promise.all(expected.map((e, i) =>
    clients[i].completions.create({ model, prompt: e.prompt, max_tokens: MAX, temperature: 0 })));
  answers.forEach((a, i) => {
    check(a.choices[0].text === expected[i].completion,
          `client ${i}: ${JSON.stringify(a.choices[0].text)} == ${JSON.stringify(expected[i].completion)}`);
    check(a.usage.completion_tokens === MAX && a.usage.total_tokens === a.usage.prompt_tokens + MAX, `client ${i}: usage`);
  });

  // The same 8 streamed at once.
  const streams = await Promise.all(expected.map((e, i) => streamedText(
    clients[i].completions.create({ model, prompt: e.prompt, max_tokens: MAX, temperature: 0, stream: true,
                                    stream_options: { include_usage: true } }), false)));
  streams.forEach((s, i) => {
    check(s.text === expected[i].completion && s.finish === 'length' && s.usage && s.usage.completion_tokens === MAX,
          `streamed client ${i}: ${JSON.stringify(s.text)}, ${s.finish}`);
  });

  // Logit bias and penalties: `sepal generate`'s text with the same adjustments.
  const adjusted = JSON.parse(fs.readFileSync(adjustedFile, 'utf8'));
  const { completion, prompt, ...adjustments } = adjusted;
  const a = await client.completions.create({ model, prompt, max_tokens: MAX, temperature: 0, ...adjustments });
  check(a.choices[0].text === completion && completion !== expected[0].completion,
        `logit_bias and penalties: ${JSON.stringify(a.choices[0].text)} == ${JSON.stringify(completion)}`);
  await expectError(client.completions.create({ model, prompt, logit_bias: { '99999999': 1 } }), 400, 'a logit_bias outside the vocabulary');

  // JSON mode: the reply is a JSON object's beginning (the whole object when it ends by itself),
  // the same streamed.
  const jsonRequest = { model, messages: [{ role: 'user', content: 'Describe a cat as JSON.' }], max_tokens: MAX, temperature: 0,
                        response_format: { type: 'json_object' } };
  const js = await client.chat.completions.create(jsonRequest);
  const jsText = js.choices[0].message.content;
  const jsStream = await streamedText(client.chat.completions.create({ ...jsonRequest, stream: true }), true);
  let whole = js.choices[0].finish_reason !== 'stop';
  try { whole = whole || (typeof JSON.parse(jsText) === 'object'); } catch (e) { whole = false; }
  check(jsText.trimStart().startsWith('{') && whole && jsStream.text === jsText, `JSON mode: ${JSON.stringify(jsText)}, ${js.choices[0].finish_reason}`);
  // Structured output: the whole reply is the JSON the schema validates, the same streamed; what
  // sepal cannot keep (a back-reference in a pattern) is a 400 that names it.
  const schema = { type: 'object', properties: { name: { type: 'string', maxLength: 8 }, age: { type: 'integer' },
                                                 pet: { enum: ['cat', 'dog'] } },
                   required: ['name', 'age', 'pet'], additionalProperties: false };
  const schemaRequest = { ...jsonRequest, max_tokens: 200, response_format: { type: 'json_schema', json_schema: { name: 'cat', schema, strict: true } } };
  const structured = await client.chat.completions.create(schemaRequest);
  const sText = structured.choices[0].message.content;
  const sStream = await streamedText(client.chat.completions.create({ ...schemaRequest, stream: true }), true);
  let valid = false;
  try {
    const v = JSON.parse(sText);
    valid = JSON.stringify(Object.keys(v)) === '["name","age","pet"]' && typeof v.name === 'string' && [...v.name].length <= 8 &&
            Number.isInteger(v.age) && ['cat', 'dog'].includes(v.pet);
  } catch (e) { valid = false; }
  check(valid && structured.choices[0].finish_reason === 'stop' && sStream.text === sText, `response_format json_schema: ${JSON.stringify(sText)}`);
  await expectError(client.chat.completions.create({ ...schemaRequest, response_format: { type: 'json_schema',
                      json_schema: { name: 'x', schema: { type: 'string', pattern: '^(a)\\1$' } } } }), 400, 'a json_schema with a back-reference');

  // Log probabilities: one per token, natural logs, the chosen token among the alternatives.
  const lp = await client.completions.create({ model, prompt: expected[0].prompt, max_tokens: 8, temperature: 0, logprobs: 3 });
  const l = lp.choices[0].logprobs;
  check(l.tokens.length === 8 && l.token_logprobs.every((x) => x <= 0) && l.tokens.join('') === lp.choices[0].text &&
        l.top_logprobs.every((t, k) => Object.keys(t).length >= 1 && Math.abs(Math.max(...Object.values(t)) - l.token_logprobs[k]) < 1e-9),
        `completion logprobs: ${JSON.stringify(l.tokens)}`);

  // Chat, streamed and not, with logprobs: the same greedy text either way.
  const messages = [{ role: 'system', content: 'You tell stories.' }, { role: 'user', content: 'Tell me about a cat.' }];
  const chat = await client.chat.completions.create({ model, messages, max_tokens: MAX, temperature: 0, logprobs: true, top_logprobs: 2 });
  const c0 = chat.choices[0];
  check(c0.message.role === 'assistant' && c0.message.content.length > 0, `chat: ${JSON.stringify(c0.message.content)}`);
  check(c0.logprobs.content.length === MAX && c0.logprobs.content.every((t) => t.top_logprobs.length === 2 && t.logprob <= 0) &&
        c0.logprobs.content.map((t) => t.token).join('') === c0.message.content, 'chat logprobs');
  const chatStream = await streamedText(client.chat.completions.create(
    { model, messages, max_tokens: MAX, temperature: 0, stream: true, logprobs: true }), true);
  check(chatStream.text === c0.message.content && chatStream.tokens === MAX, `streamed chat: ${JSON.stringify(chatStream.text)}`);

  // Stop strings, n and seeds.
  const full = expected[0].completion;
  const cut = full.indexOf(' ', 3);
  const stop = full.slice(cut, cut + 3);
  const stopped = await client.completions.create({ model, prompt: expected[0].prompt, max_tokens: MAX, temperature: 0, stop: [stop] });
  check(stopped.choices[0].text === full.slice(0, full.indexOf(stop)) && stopped.choices[0].finish_reason === 'stop',
        `stop ${JSON.stringify(stop)}: ${JSON.stringify(stopped.choices[0].text)}`);
  const sampled = await client.completions.create({ model, prompt: expected[0].prompt, max_tokens: 16, temperature: 1, seed: 7, n: 3 });
  const again = await client.completions.create({ model, prompt: expected[0].prompt, max_tokens: 16, temperature: 1, seed: 7, n: 3 });
  check(sampled.choices.length === 3 && sampled.choices.map((c) => c.text).join('|') === again.choices.map((c) => c.text).join('|') &&
        new Set(sampled.choices.map((c) => c.text)).size > 1, 'n = 3 sampled with a seed: reproducible, and the choices differ');

  // Errors in OpenAI's shape, after which the server goes on serving.
  await expectError(new OpenAI({ baseURL, apiKey: 'wrong', maxRetries: 0 }).models.list(), 401, 'a wrong API key');
  await expectError(client.completions.create({ model: 'no-such-model', prompt: 'x' }), 404, 'an unknown model');
  await expectError(client.completions.create({ model, prompt: 'x', max_tokens: -5 }), 400, 'negative max_tokens');
  await expectError(client.chat.completions.create({ model, messages: [] }), 400, 'no messages');
  const raw = async (body) => {
    const r = await fetch(`${baseURL}/completions`, { method: 'POST', body, headers: { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json' } });
    const j = await r.json();
    return [r.status, j.error && typeof j.error.message === 'string' ? j.error.type : 'unshaped'];
  };
  let [status, type] = await raw('{"model": ');
  check(status === 400 && type === 'invalid_request_error', `malformed JSON: ${status} ${type}`);
  [status, type] = await raw(JSON.stringify({ model, prompt: 'a'.repeat(100 * 1024 * 1024) }));
  check(status === 413 && type === 'invalid_request_error', `a 100 MB body: ${status} ${type}`);

  // A client that leaves mid-stream: the server ends its generation (counted at shutdown).
  const controller = new AbortController();
  // (8 choices of 400 tokens: still generating when the client leaves)
  const long = await client.completions.create({ model, prompt: expected[1].prompt, max_tokens: 400, n: 8, temperature: 0,
                                                 stream: true }, { signal: controller.signal });
  let seen = 0;
  try {
    for await (const chunk of long) {
      if (++seen === 2) controller.abort();
    }
  } catch (e) {
    // the abort
  }
  check(seen >= 2, 'a stream left after 2 chunks');
  const after = await client.completions.create({ model, prompt: expected[2].prompt, max_tokens: MAX, temperature: 0 });
  check(after.choices[0].text === expected[2].completion, 'still serving after the errors and the departure');
  // The departed client's session is closed on the hosts (they announce their open sessions every
  // second), not left to their idle timeout.
  const root = baseURL.replace(/\/v1$/, '');
  await new Promise((r) => setTimeout(r, 2500));  // two announcements past the departure
  let open = -1;
  for (let i = 0; i < 80 && open !== 0; i++) {
    const st = await (await fetch(`${root}/status`)).json();
    open = st.swarm.block_map.hosts.reduce((n, h) => n + h.sessions, 0);
    if (open !== 0) await new Promise((r) => setTimeout(r, 250));
  }
  check(open === 0, `every session closed on the hosts (${open} open)`);
  if (failures) {
    console.log(`${failures} checks FAILED`);
    process.exit(1);
  }
  console.log('all checks passed');
}
main().catch((e) => {
  console.log(`FAILED: ${e.stack || e}`);
  process.exit(1);
});

// modeld's OpenAI-compatible API driven by the official `openai` npm client against a real daemon
// (run by ctest as openai_client_test; scripts/setup.sh installs the client). Models are
// generated: random weights, real tokenizers and real chat templates, so the assertions are about
// the protocol and the reuse, not the words.
//
// Env: MODELD_BIN (the modeld binary), MODELD_TEMPLATES (llama.cpp's models/templates),
// MODELD_TEST_TMP (a scratch folder).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, chmodSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

let OpenAI;
try {
  ({ default: OpenAI } = await import('openai'));
} catch (e) {
  throw new Error('the openai npm package is missing: run scripts/setup.sh (it installs tests/openai)');
}

const BIN = process.env.MODELD_BIN;
const TEMPLATES = process.env.MODELD_TEMPLATES;
assert.ok(BIN && TEMPLATES, 'MODELD_BIN and MODELD_TEMPLATES must be set (ctest sets them)');

const dir = mkdtempSync(join(process.env.MODELD_TEST_TMP || '/tmp', 'openai-'));
let daemon;
let client;
let stderrText = '';

// Starts `modeld serve` and waits for its "serving ... and 127.0.0.1:PORT" line (state, not time).
function startDaemon(args) {
  return new Promise((resolve, reject) => {
    const p = spawn(BIN, ['serve', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    const timer = setTimeout(() => reject(new Error('daemon did not start within 120 s:\n' + stderrText)), 120000);
    p.stderr.on('data', (d) => {
      stderrText += d.toString();
      const m = stderrText.match(/serving .* and 127\.0\.0\.1:(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve({ proc: p, port: Number(m[1]) });
      }
    });
    p.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`daemon exited with ${code}:\n${stderrText}`));
    });
  });
}

before(async () => {
  const chat = join(dir, 'chat-tiny.gguf');
  const embed = join(dir, 'embed-tiny.gguf');
  execFileSync(BIN, ['make-model', '--preset', 'tiny', '--out', chat, '--chat-template',
    join(TEMPLATES, 'Qwen-Qwen2.5-7B-Instruct.jinja')]);
  execFileSync(BIN, ['make-model', '--preset', 'tiny-embed', '--out', embed]);
  const token = randomBytes(24).toString('hex');
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, token + '\n');
  chmodSync(tokenFile, 0o600);
  const d = await startDaemon(['--socket', join(dir, 'sock'), '--port', '-1', '--token-file', tokenFile,
    '--model', chat, '--model', embed, '--ctx-size', '2048', '--threads', '2']);
  daemon = d.proc;
  client = new OpenAI({ apiKey: token, baseURL: `http://127.0.0.1:${d.port}/v1`, maxRetries: 0, timeout: 120000 });
});

after(() => {
  if (daemon) daemon.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
});

const SYSTEM = 'You are a careful coding assistant. ' + 'Answer briefly and precisely. '.repeat(20);
const greedy = { temperature: 0, seed: 1 };

test('models: the OpenAI list shape, retrieve, and a missing model', async () => {
  const list = await client.models.list();
  const ids = list.data.map((m) => m.id).sort();
  assert.deepEqual(ids, ['chat-tiny', 'embed-tiny']);
  for (const m of list.data) {
    assert.equal(m.object, 'model');
    assert.equal(typeof m.created, 'number');
    assert.equal(m.owned_by, 'modeld');
  }
  const one = await client.models.retrieve('chat-tiny');
  assert.equal(one.id, 'chat-tiny');
  await assert.rejects(client.models.retrieve('nope'), (e) => e.status === 404 && e.code === 'model_not_found');
});

test('chat: whole and streamed answers agree, usage and finish_reason', async () => {
  const messages = [{ role: 'system', content: SYSTEM }, { role: 'user', content: 'Name a sorting algorithm.' }];
  // Distinct cache keys: two conversations. The second starts cold or from a copy of the first's
  // KV (a fork, when the prompt is long enough), which holds what a cold prefill would: the same
  // greedy answer either way.
  const whole = await client.chat.completions.create({
    model: 'chat-tiny', messages, max_tokens: 12, ...greedy, prompt_cache_key: 'whole',
  });
  assert.equal(whole.object, 'chat.completion');
  const choice = whole.choices[0];
  assert.equal(choice.message.role, 'assistant');
  assert.ok(['stop', 'length'].includes(choice.finish_reason));
  assert.ok(whole.usage.prompt_tokens > 100);
  assert.equal(whole.usage.prompt_tokens_details.cached_tokens, 0);
  assert.ok(whole.usage.completion_tokens >= 1 && whole.usage.completion_tokens <= 12);

  const stream = await client.chat.completions.create({
    model: 'chat-tiny', messages, max_tokens: 12, ...greedy, prompt_cache_key: 'streamed', stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let first = true;
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) {
      usage = chunk.usage;
      assert.equal(chunk.choices.length, 0);
      continue;
    }
    const c = chunk.choices[0];
    if (first) assert.equal(c.delta.role, 'assistant');
    first = false;
    text += c.delta.content ?? '';
    if (c.finish_reason) finish = c.finish_reason;
  }
  assert.equal(text, choice.message.content ?? '');
  assert.equal(finish, choice.finish_reason);
  assert.ok(usage, 'include_usage: a last chunk with usage');
  assert.equal(usage.prompt_tokens, whole.usage.prompt_tokens);

  // The same prompt again on the first conversation: all of it is reused (the last token may be
  // evaluated again for its logits).
  const again = await client.chat.completions.create({
    model: 'chat-tiny', messages, max_tokens: 1, ...greedy, prompt_cache_key: 'whole',
  });
  assert.ok(again.usage.prompt_tokens_details.cached_tokens >= again.usage.prompt_tokens - 1,
    JSON.stringify(again.usage));
});

// One turn: sends the conversation, appends the answer to it.
async function turn(messages, user, extra = {}) {
  messages.push({ role: 'user', content: user });
  const r = await client.chat.completions.create({ model: 'chat-tiny', messages, max_tokens: 8, ...greedy, ...extra });
  messages.push({ role: 'assistant', content: r.choices[0].message.content ?? '' });
  return r;
}

test('multi-turn: cached_tokens grows and later turns prefill only their new messages', async () => {
  const messages = [{ role: 'system', content: SYSTEM + ' Conversation M.' }];
  const t1 = await turn(messages, 'First question about hash maps?');
  const t2 = await turn(messages, 'Second question about trees?');
  const t3 = await turn(messages, 'Third question about graphs?');
  assert.ok(t2.usage.prompt_tokens_details.cached_tokens >= t1.usage.prompt_tokens,
    `turn 2 reuses turn 1's prompt: ${JSON.stringify(t2.usage)} vs ${t1.usage.prompt_tokens}`);
  assert.ok(t3.usage.prompt_tokens_details.cached_tokens >= t2.usage.prompt_tokens);
  assert.ok(t3.usage.prompt_tokens_details.cached_tokens > t2.usage.prompt_tokens_details.cached_tokens);
  // What a turn prefills is its new messages (the answer, the question, the template's markers).
  const prefilled = t3.usage.prompt_tokens - t3.usage.prompt_tokens_details.cached_tokens;
  assert.ok(prefilled < 60, `turn 3 prefilled ${prefilled} tokens`);
  assert.equal(t3.timings.prompt_n, prefilled);
});

test('two interleaved conversations both stay warm', async () => {
  const a = [{ role: 'system', content: SYSTEM + ' You are assistant A.' }];
  const b = [{ role: 'system', content: 'You review code for bugs. '.repeat(30) }];
  const a1 = await turn(a, 'A first?');
  const b1 = await turn(b, 'B first?');
  const a2 = await turn(a, 'A second?');
  const b2 = await turn(b, 'B second?');
  assert.ok(a2.usage.prompt_tokens_details.cached_tokens >= a1.usage.prompt_tokens, JSON.stringify(a2.usage));
  assert.ok(b2.usage.prompt_tokens_details.cached_tokens >= b1.usage.prompt_tokens, JSON.stringify(b2.usage));
});

const weatherTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string', enum: ['Paris', 'Tokyo'] }, unit: { type: 'string', enum: ['C', 'F'] } },
      required: ['city', 'unit'],
      additionalProperties: false,
    },
  },
};

test('tool_choice required: a random-weight model still answers with a parsed call; then a tool round trip', async () => {
  const messages = [{ role: 'system', content: 'You can call tools.' }, { role: 'user', content: 'Weather in Paris?' }];
  const r = await client.chat.completions.create({
    model: 'chat-tiny', messages, tools: [weatherTool], tool_choice: 'required', max_tokens: 200, ...greedy,
  });
  const msg = r.choices[0].message;
  assert.ok(msg.tool_calls && msg.tool_calls.length >= 1, JSON.stringify(r));
  const call = msg.tool_calls[0];
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, 'get_weather');
  assert.match(call.id, /^call_/);
  const args = JSON.parse(call.function.arguments);
  assert.ok(['Paris', 'Tokyo'].includes(args.city) && ['C', 'F'].includes(args.unit), call.function.arguments);
  if (r.choices[0].finish_reason !== 'length') assert.equal(r.choices[0].finish_reason, 'tool_calls');

  assert.equal(msg.tool_calls.length, 1, 'parallel_tool_calls defaults to false: one call');
  messages.push({ role: 'assistant', content: null, tool_calls: [call] });
  messages.push({ role: 'tool', tool_call_id: call.id, content: '{"temperature": 21}' });
  const after = await client.chat.completions.create({
    model: 'chat-tiny', messages, tools: [weatherTool], max_tokens: 6, ...greedy,
  });
  assert.equal(after.choices[0].message.role, 'assistant');
  assert.ok(after.usage.prompt_tokens > r.usage.prompt_tokens);
});

test('tool calls stream as deltas by index, id and name first', async () => {
  const stream = await client.chat.completions.create({
    model: 'chat-tiny', stream: true, max_tokens: 200, ...greedy,
    messages: [{ role: 'user', content: 'Weather in Tokyo?' }],
    tools: [weatherTool], tool_choice: { type: 'function', function: { name: 'get_weather' } },
  });
  const calls = [];
  for await (const chunk of stream) {
    for (const tc of chunk.choices[0]?.delta?.tool_calls ?? []) {
      if (!calls[tc.index]) {
        assert.ok(tc.id && tc.function.name, 'the first delta of a call carries its id and name');
        calls[tc.index] = { id: tc.id, name: tc.function.name, args: '' };
      }
      calls[tc.index].args += tc.function.arguments ?? '';
    }
  }
  assert.ok(calls.length >= 1);
  assert.equal(calls[0].name, 'get_weather');
  const args = JSON.parse(calls[0].args);
  assert.ok(['Paris', 'Tokyo'].includes(args.city), calls[0].args);
});

test('errors: OpenAI shape, status and code', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'chat-tiny', messages: [{ role: 'user', content: 'hi' }], n: 2 }),
    (e) => e.status === 400 && e.param === 'n' && e.type === 'invalid_request_error');
  const long = 'word '.repeat(5000);
  await assert.rejects(
    client.chat.completions.create({ model: 'chat-tiny', messages: [{ role: 'user', content: long }] }),
    (e) => e.status === 400 && e.code === 'context_length_exceeded' && /maximum context length/.test(e.message));
  await assert.rejects(
    client.chat.completions.create({ model: 'missing', messages: [{ role: 'user', content: 'hi' }] }),
    (e) => e.status === 404 && e.code === 'model_not_found');
  const noKey = new OpenAI({ apiKey: 'wrong-key-wrong-key', baseURL: client.baseURL, maxRetries: 0 });
  await assert.rejects(noKey.models.list(), (e) => e.status === 401);
  // A body nested past the limit is a 400 before anything recurses on it.
  const deep = await fetch(`${client.baseURL}/chat/completions`, {
    method: 'POST', headers: { Authorization: `Bearer ${client.apiKey}`, 'Content-Type': 'application/json' },
    body: `{"model":"chat-tiny","messages":${'['.repeat(100000)}${']'.repeat(100000)}}`,
  });
  assert.equal(deep.status, 400);
  // The conversations are the OpenAI API's: the native protocol may read them, not drive them.
  const sessions = await (await fetch(`${client.baseURL}/sessions`, {
    headers: { Authorization: `Bearer ${client.apiKey}` },
  })).json();
  const conv = sessions.sessions.map((s) => s.workspace).find((w) => w.startsWith('~chat-'));
  assert.ok(conv, JSON.stringify(sessions));
  const decode = await fetch(`${client.baseURL}/sessions/${conv}/decode`, {
    method: 'POST', headers: { Authorization: `Bearer ${client.apiKey}`, 'Content-Type': 'application/json' },
    body: '{"max_tokens": 1}',
  });
  assert.equal(decode.status, 400);
});

test('embeddings: float and base64 (the client default) agree', async () => {
  const b64 = await client.embeddings.create({ model: 'embed-tiny', input: ['int main() {}', 'def f(): pass'] });
  assert.equal(b64.object, 'list');
  assert.equal(b64.data.length, 2);
  assert.equal(b64.data[0].embedding.length, 64);
  const floats = await client.embeddings.create({ model: 'embed-tiny', input: 'int main() {}', encoding_format: 'float' });
  const a = floats.data[0].embedding;
  const b = b64.data[0].embedding;
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) < 1e-6);
  assert.ok(b64.usage.prompt_tokens > 0);
});

test('completions: raw prompt, whole and streamed', async () => {
  const r = await client.completions.create({ model: 'chat-tiny', prompt: 'def fibonacci(n):', max_tokens: 6, ...greedy });
  assert.equal(r.object, 'text_completion');
  assert.equal(typeof r.choices[0].text, 'string');
  assert.ok(r.usage.completion_tokens >= 1);
  const s = await client.completions.create({
    model: 'chat-tiny', prompt: 'def fibonacci(n):', max_tokens: 6, ...greedy, stream: true,
  });
  let text = '';
  for await (const c of s) text += c.choices[0]?.text ?? '';
  assert.equal(text, r.choices[0].text);
});

// The native protocol beside the OpenAI API (same listener and token): workspaces are opened and
// fed there (or by `modeld ws watch`).
async function native(method, path, body) {
  const r = await fetch(`${client.baseURL}${path}`, {
    method, headers: { Authorization: `Bearer ${client.apiKey}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  assert.equal(r.status, 200, `${method} ${path}: ${text}`);
  return text.trim().split('\n').map((l) => JSON.parse(l)).pop();
}

function codeFile(name, lines) {
  let s = '';
  for (let i = 0; i < lines; ++i) s += `int ${name}_${i}(int x) { return x * ${i} + ${i % 7}; }\n`;
  return s;
}

test('a workspace as a model: its files ahead of the conversation, an edit costs its note', async () => {
  await native('POST', '/sessions', { workspace: 'proj', model: 'chat-tiny' });
  await native('POST', '/workspaces/proj/files', { path: 'src/a.c', content: codeFile('a', 40) });
  await native('POST', '/workspaces/proj/files', { path: 'src/b.c', content: codeFile('b', 40) });
  const models = await client.models.list();
  assert.ok(models.data.some((m) => m.id === 'ws:proj'), JSON.stringify(models.data));

  const messages = [{ role: 'system', content: 'You are a coding assistant.' }];
  const ask = async (q, extra = {}) => {
    messages.push({ role: 'user', content: q });
    const r = await client.chat.completions.create({ model: 'ws:proj', messages, max_tokens: 6, ...greedy, ...extra });
    assert.equal(r.model, 'ws:proj');
    messages.push({ role: 'assistant', content: r.choices[0].message.content ?? '' });
    return r;
  };
  const t1 = await ask('What does a_3 return?');
  const files = (await native('GET', '/workspaces/proj')).context_tokens;
  assert.ok(files > 800, `the files are in the context: ${files} tokens`);
  assert.ok(t1.usage.prompt_tokens > files, JSON.stringify(t1.usage));

  // An edit saved, then a question: the turn prefills the change note, the answer before it and
  // the question, not the files.
  await native('POST', '/workspaces/proj/files', { path: 'src/a.c', content: codeFile('a', 40).replace('x * 3 + 3', 'x - 3') });
  const t2 = await ask('And now?');
  const prefilled2 = t2.usage.prompt_tokens - t2.usage.prompt_tokens_details.cached_tokens;
  // (The note itself is prefilled by the ask or, if it came first, by the eager prefill.)
  assert.ok(prefilled2 * 4 < files, `turn 2 prefilled ${prefilled2} tokens, the files are ${files}: ${JSON.stringify(t2.usage)}`);
  let context = (await native('GET', '/workspaces/proj/context')).text;
  assert.ok(context.includes('x - 3') && context.includes('And now?'));

  // The same conversation streamed: the same reuse, the answer as deltas.
  messages.push({ role: 'user', content: 'Streamed?' });
  const stream = await client.chat.completions.create({
    model: 'ws:proj', messages, max_tokens: 6, ...greedy, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    else text += chunk.choices[0].delta.content ?? '';
  }
  messages.push({ role: 'assistant', content: text });
  assert.ok(usage.prompt_tokens - usage.prompt_tokens_details.cached_tokens < 60, JSON.stringify(usage));

  // The tool rewrites its history (a summary instead of the first exchange): only the
  // conversation is replaced; the files and the note stay and are not prefilled again.
  const rewritten = [messages[0], { role: 'user', content: 'Summary: we looked at a_3.' }];
  const t4 = await client.chat.completions.create({
    model: 'ws:proj', messages: [...rewritten, { role: 'user', content: 'Go on.' }], max_tokens: 4, ...greedy,
  });
  const prefilled4 = t4.usage.prompt_tokens - t4.usage.prompt_tokens_details.cached_tokens;
  assert.ok(prefilled4 * 4 < files, `turn 4 prefilled ${prefilled4} tokens, the files are ${files}`);
  context = (await native('GET', '/workspaces/proj/context')).text;
  assert.ok(context.includes('Summary: we looked at a_3.') && !context.includes('What does a_3 return?'));
  assert.ok(context.includes('x - 3'), 'the change note stays');

  // The header names the workspace for a tool that cannot change its model name.
  const viaHeader = await client.chat.completions.create(
    { model: 'chat-tiny', messages: [...rewritten, { role: 'user', content: 'Go on.' }], max_tokens: 1, ...greedy },
    { headers: { 'X-Modeld-Workspace': 'proj' } });
  assert.ok(viaHeader.usage.prompt_tokens_details.cached_tokens > files, JSON.stringify(viaHeader.usage));

  // What a workspace cannot serve is refused up front, and changes nothing.
  await assert.rejects(
    client.chat.completions.create({ model: 'ws:nope', messages: [{ role: 'user', content: 'hi' }] }),
    (e) => e.status === 404 && e.code === 'model_not_found');
  await assert.rejects(
    client.chat.completions.create({
      model: 'ws:proj', messages: [{ role: 'user', content: 'hi' }],
      tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }],
    }),
    (e) => e.status === 400 && e.param === 'tools');
  assert.ok((await native('GET', '/workspaces/proj/context')).text.includes('Summary: we looked at a_3.'));
});

test('edit-aware re-sent content, opt-in: an edited early message costs its note, not what follows', async () => {
  await native('POST', '/sessions', { workspace: 'resent', model: 'chat-tiny' });
  const file = codeFile('r', 60);
  const first = (f) => `Here is src/r.c:\n${f}\nWhat does r_3 do?`;
  const messages = [{ role: 'system', content: 'You are a coding assistant.' }, { role: 'user', content: first(file) }];
  const r1 = await client.chat.completions.create({ model: 'ws:resent:edit_aware', messages, max_tokens: 4, ...greedy });
  assert.equal(r1.model, 'ws:resent:edit_aware');
  messages.push({ role: 'assistant', content: r1.choices[0].message.content ?? '' });
  messages.push({ role: 'user', content: 'And r_4?' });
  // The tool re-sends the file, edited, inside its first message.
  messages[1].content = first(file.replace('x * 3 + 3', 'x - 3'));
  const r2 = await client.chat.completions.create({ model: 'ws:resent:edit_aware', messages, max_tokens: 4, ...greedy });
  const prefilled2 = r2.usage.prompt_tokens - r2.usage.prompt_tokens_details.cached_tokens;
  assert.ok(prefilled2 * 4 < r1.usage.prompt_tokens, `prefilled ${prefilled2} of ${JSON.stringify(r2.usage)}`);
  const context = (await native('GET', '/workspaces/resent/context')).text;
  assert.ok(context.includes('<message-change index="1" kind="edit">'), context.slice(-600));
  messages.push({ role: 'assistant', content: r2.choices[0].message.content ?? '' });

  // Without the opt-in, the same kind of edit replaces the conversation from that message on.
  messages[1].content = first(file.replace('x * 5 + 5', 'x - 5'));
  messages.push({ role: 'user', content: 'And r_5?' });
  const r3 = await client.chat.completions.create({ model: 'ws:resent', messages, max_tokens: 4, ...greedy });
  const prefilled3 = r3.usage.prompt_tokens - r3.usage.prompt_tokens_details.cached_tokens;
  assert.ok(prefilled3 * 2 > r1.usage.prompt_tokens, `prefilled ${prefilled3} of ${JSON.stringify(r3.usage)}`);

  await assert.rejects(
    client.chat.completions.create({ model: 'ws:resent', messages, max_tokens: 1 },
      { headers: { 'X-Modeld-Assembly': 'sometimes' } }),
    (e) => e.status === 400);
});

test('a workspace model through background compactions loses and mixes nothing', async () => {
  await native('POST', '/sessions', { workspace: 'compacting', model: 'chat-tiny', config: { n_ctx: 1024 } });
  const lines = [];
  for (let i = 0; i < 40; ++i) lines.push(`int c_${i} = ${i};`);
  const content = () => lines.join('\n') + '\n';
  await native('POST', '/workspaces/compacting/files', { path: 'src/c.c', content: content() });
  const messages = [{ role: 'system', content: 'You are a coding assistant.' }];
  let compactions = 0;
  for (let turn = 0; turn < 12; ++turn) {
    for (let k = 0; k < 3; ++k) lines[(turn * 3 + k) % 40] = `long c_${(turn * 3 + k) % 40} = ${turn * 100 + k};`;
    await native('POST', '/workspaces/compacting/files', { path: 'src/c.c', content: content() });
    messages.push({ role: 'user', content: `Question ${turn}?` });
    const r = await client.chat.completions.create({ model: 'ws:compacting', messages, max_tokens: 2, ...greedy });
    messages.push({ role: 'assistant', content: r.choices[0].message.content ?? '' });
    compactions = (await native('GET', '/workspaces/compacting')).compactions;
  }
  assert.ok(compactions >= 1, `no compaction in 12 turns (${compactions})`);
  // Folded once more by hand: the context then holds the file exactly as last put, once, and the
  // whole conversation in order.
  await native('POST', '/workspaces/compacting/compact', {});
  const context = (await native('GET', '/workspaces/compacting/context')).text;
  assert.ok(context.includes(content()), 'the file as last put');
  assert.equal(context.split('<file path="src/c.c"').length, 2, 'one block for the file');
  let at = -1;
  for (let turn = 0; turn < 12; ++turn) {
    const next = context.indexOf(`Question ${turn}?`);
    assert.ok(next > at, `question ${turn} in its place`);
    at = next;
  }
});

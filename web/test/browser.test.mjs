// The browser proof of issue #9: the consumer compiled to WebAssembly reads a DynamoDB Local
// stream inside headless Chromium and shows the changes on its page.
//
// Starts DynamoDB Local (with CORS) on a free loopback port, creates a table with a
// NEW_AND_OLD_IMAGES stream, serves web/dist on another loopback port, drives Debian's Chromium
// with playwright-core, writes items with the AWS SDK for JavaScript v3 and asserts the page
// shows every insert / modify / remove in order and a replica equal to the table. A screenshot
// is saved to target/browser/page.png either way. Nothing is skipped: a missing piece fails
// with what to install. Run through `scripts/wasm.sh test`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CreateTableCommand,
  DeleteItemCommand,
  DescribeTableCommand,
  DynamoDBClient,
  ListTablesCommand,
  PutItemCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const dist = path.join(repo, 'web', 'dist');
const artifacts = path.join(repo, 'target', 'browser');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const cache = process.env.DDBSTREAM_CACHE || path.join(repo, '.cache');
const ddbEnvFile = path.join(cache, 'dynamodb-local', 'env');

const TABLE = 'orders';
const CREDENTIALS = { accessKeyId: 'local', secretAccessKey: 'local' };

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function waitFor(what, timeoutMs, probe) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

function readDdbEnv() {
  if (!fs.existsSync(ddbEnvFile)) {
    throw new Error(`DynamoDB Local is not installed (${ddbEnvFile} missing): run scripts/install-dynamodb-local.sh`);
  }
  const env = {};
  for (const line of fs.readFileSync(ddbEnvFile, 'utf8').split('\n')) {
    const m = line.match(/^([A-Z_]+)=(.*)$/);
    if (m) env[m[1]] = m[2];
  }
  return env;
}

async function startDynamoDbLocal(pageOrigin) {
  const env = readDdbEnv();
  const port = await freePort();
  // -cors: the page (another loopback port, so another origin) calls DynamoDB Local directly.
  // DynamoDB Local 3.x (Jetty 12) answers CORS only for origins named exactly; '*' allows none.
  const java = spawn('java', [
    '-Xmx512m', `-Djava.library.path=${env.DDB_LOCAL_LIB}`, '-jar', env.DDB_LOCAL_JAR,
    '-inMemory', '-port', String(port), '-disableTelemetry', '-cors', pageOrigin,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (chunk) => {
    output += chunk;
    if (process.env.DDB_LOCAL_ECHO) process.stderr.write(chunk);
  };
  java.stdout.on('data', keep);
  java.stderr.on('data', keep);
  let exited = null;
  java.on('exit', (code, signal) => { exited = `exit ${code ?? signal}`; });
  java.on('error', (err) => { exited = `could not start java: ${err.message} (install a Java 17+ runtime)`; });
  const endpoint = `http://127.0.0.1:${port}`;
  const client = new DynamoDBClient({ endpoint, region: 'us-east-1', credentials: CREDENTIALS });
  await waitFor('DynamoDB Local to answer', 60_000, async () => {
    if (exited) throw new Error(`DynamoDB Local stopped (${exited}):\n${output}`);
    await client.send(new ListTablesCommand({}));
    return true;
  }).catch((err) => {
    java.kill('SIGKILL');
    throw err;
  });
  return { endpoint, client, stop: () => java.kill('SIGKILL') };
}

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.wasm': 'application/wasm',
};

async function servePage() {
  if (!fs.existsSync(path.join(dist, 'pkg', 'dynamodb_stream_web_bg.wasm'))) {
    throw new Error(`${dist} has no built page: run scripts/wasm.sh build`);
  }
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    const rel = url.pathname === '/' ? 'index.html' : decodeURIComponent(url.pathname).slice(1);
    const file = path.resolve(dist, rel);
    if (!file.startsWith(dist + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': MIME[path.extname(file)] || 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { url: `http://127.0.0.1:${server.address().port}/`, stop: () => server.close() };
}

async function createTable(client) {
  await client.send(new CreateTableCommand({
    TableName: TABLE,
    AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }],
    KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
    BillingMode: 'PAY_PER_REQUEST',
    StreamSpecification: { StreamEnabled: true, StreamViewType: 'NEW_AND_OLD_IMAGES' },
  }));
  await waitFor('the table to be active', 30_000, async () => {
    const { Table } = await client.send(new DescribeTableCommand({ TableName: TABLE }));
    return Table.TableStatus === 'ACTIVE';
  });
}

test('the page shows a DynamoDB Local stream read by the consumer in Chromium', { timeout: 240_000 }, async (t) => {
  if (!fs.existsSync(chromiumPath)) {
    throw new Error(`${chromiumPath} not found: install Debian's chromium (apt-get install chromium), or set CHROMIUM`);
  }
  fs.mkdirSync(artifacts, { recursive: true });

  const site = await servePage();
  t.after(() => site.stop());

  const ddb = await startDynamoDbLocal(new URL(site.url).origin);
  t.after(() => ddb.stop());
  await createTable(ddb.client);

  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ddbstream-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    viewport: { width: 1280, height: 900 },
    // Quiet on a closed network: no background fetches, no QUIC, no updates.
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  t.after(async () => {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  });
  const page = context.pages()[0] || await context.newPage();
  const log = [];
  page.on('console', (msg) => log.push(`console.${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (err) => log.push(`page error: ${err.message}`));

  const screenshot = path.join(artifacts, 'page.png');
  try {
    const query = new URLSearchParams({
      endpoint: ddb.endpoint, region: 'us-east-1', table: TABLE, ...CREDENTIALS, remember: 'on',
    });
    await page.goto(`${site.url}?${query}`);
    await page.waitForFunction(() => document.getElementById('status').textContent === 'Ready.', null, { timeout: 30_000 });
    await page.click('#start');
    await page.waitForFunction(
      () => ['running', 'error'].includes(document.getElementById('status').dataset.state),
      null, { timeout: 60_000 },
    );
    const status = await page.textContent('#status');
    assert.match(status, /^Reading arn:aws:dynamodb:/, `the consumer did not start: ${status}`);

    const put = (item) => ddb.client.send(new PutItemCommand({ TableName: TABLE, Item: item }));
    await put({ pk: { S: 'order-1' }, status: { S: 'new' }, total: { N: '42' } });
    await put({ pk: { S: 'order-2' }, status: { S: 'new' }, total: { N: '12345678901234567890.123456789' } });
    await put({ pk: { S: 'order-3' }, status: { S: 'new' }, total: { N: '7' } });
    await ddb.client.send(new UpdateItemCommand({
      TableName: TABLE,
      Key: { pk: { S: 'order-1' } },
      UpdateExpression: 'SET #s = :s',
      ExpressionAttributeNames: { '#s': 'status' },
      ExpressionAttributeValues: { ':s': { S: 'shipped' } },
    }));
    await ddb.client.send(new DeleteItemCommand({ TableName: TABLE, Key: { pk: { S: 'order-2' } } }));

    await page.waitForFunction(() => document.querySelectorAll('#changes li').length >= 5, null, { timeout: 60_000 });
    // The list shows the newest first.
    const changes = await page.$$eval('#changes li', (lis) => lis.reverse().map((li) => [li.dataset.kind, li.textContent]));
    assert.deepEqual(changes.map(([kind]) => kind), ['insert', 'insert', 'insert', 'modify', 'remove']);
    assert.match(changes[0][1], /order-1/);
    assert.match(changes[3][1], /order-1.*shipped/);
    assert.match(changes[4][1], /order-2/);

    const rows = await page.$$eval('#replica tbody tr', (trs) => trs.map((tr) => Object.fromEntries(
      [...tr.cells].map((td) => [td.dataset.attribute, td.textContent]),
    )));
    assert.deepEqual(rows, [
      { pk: 'order-1', status: 'shipped', total: '42' },
      { pk: 'order-3', status: 'new', total: '7' },
    ]);
    // The 38-digit number of the removed item reached the page with every digit.
    assert.match(await page.textContent('#changes'), /12345678901234567890\.123456789/);

    // Graceful shutdown in the page: drain, final checkpoint, stop.
    await page.click('#stop');
    await page.waitForFunction(() => document.getElementById('status').dataset.state !== 'running', null, { timeout: 30_000 });
    assert.equal(await page.textContent('#status'), 'Stopped.');

    // Positions were kept in localStorage: starting again resumes after the last record, so
    // nothing is shown twice and only the new item arrives.
    const stored = await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('dynamodb-stream/')));
    assert.equal(stored.length, 1, `one checkpoint entry in localStorage: ${stored}`);
    await page.click('#start');
    await page.waitForFunction(
      () => ['running', 'error'].includes(document.getElementById('status').dataset.state),
      null, { timeout: 60_000 },
    );
    assert.match(await page.textContent('#status'), /^Reading /);
    await put({ pk: { S: 'order-4' }, status: { S: 'new' }, total: { N: '1' } });
    await page.waitForFunction(() => document.querySelectorAll('#changes li').length >= 6, null, { timeout: 60_000 });
    await new Promise((r) => setTimeout(r, 1500)); // time for a wrong re-delivery to show up
    const after = await page.$$eval('#changes li', (lis) => lis.reverse().map((li) => [li.dataset.kind, li.textContent]));
    assert.equal(after.length, 6, `resumed from localStorage without re-delivery: ${after.map(([k, text]) => `${k} ${text}`).join('; ')}`);
    assert.match(after[5][1], /order-4/);
    assert.equal(await page.$$eval('#replica tbody tr', (trs) => trs.length), 3);

    // "Fetch now": read what is there, then stop; each fetch continues after the last one.
    await page.click('#stop');
    await page.waitForFunction(() => document.getElementById('status').textContent === 'Stopped.', null, { timeout: 30_000 });
    await put({ pk: { S: 'order-5' }, status: { S: 'new' }, total: { N: '5' } });
    await put({ pk: { S: 'order-6' }, status: { S: 'new' }, total: { N: '6' } });
    const fetchOnce = async () => {
      await page.click('#fetch');
      await page.waitForFunction(
        () => ['fetched', 'error'].includes(document.getElementById('status').dataset.state),
        null, { timeout: 60_000 },
      );
      return page.textContent('#status');
    };
    assert.equal(await fetchOnce(), 'Fetched 2 changes.');
    const fetched = await page.$$eval('#changes li', (lis) => lis.reverse().map((li) => li.textContent));
    assert.equal(fetched.length, 8, fetched.join('; '));
    assert.match(fetched[6], /order-5/);
    assert.match(fetched[7], /order-6/);
    assert.equal(await fetchOnce(), 'Fetched 0 changes.');
    await put({ pk: { S: 'order-7' }, status: { S: 'new' }, total: { N: '7' } });
    assert.equal(await fetchOnce(), 'Fetched 1 change.');
    assert.equal(await page.$$eval('#changes li', (lis) => lis.length), 9);
    assert.equal(await page.$$eval('#replica tbody tr', (trs) => trs.length), 6);
  } catch (err) {
    console.log(`--- page log ---\n${log.join('\n')}\n--- page status: ${await page.textContent('#status').catch(() => '?')}`);
    throw err;
  } finally {
    await page.screenshot({ path: screenshot, fullPage: true }).catch(() => {});
    console.log(`screenshot: ${screenshot}`);
  }
});

// The page around the WebAssembly consumer (pkg/ is written by scripts/wasm.sh).
import init, { start, fetchNow, StartOptions } from './pkg/dynamodb_stream_web.js';

const form = document.getElementById('connect');
const stopButton = document.getElementById('stop');
const startButton = document.getElementById('start');
const fetchButton = document.getElementById('fetch');
const statusLine = document.getElementById('status');
const changesList = document.getElementById('changes');
const eventsList = document.getElementById('events');
const replicaTable = document.getElementById('replica');

// Key (canonical JSON of the item's keys) -> item, in arrival order.
const replica = new Map();
let changeCount = 0;
let tail = null;

function setStatus(state, text) {
  statusLine.dataset.state = state;
  statusLine.textContent = text;
}

// Canonical text of a DynamoDB value for display (numbers arrive as strings to keep 38 digits).
function show(value) {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function keyOf(keys) {
  return JSON.stringify(Object.keys(keys).sort().map((k) => [k, keys[k]]));
}

function onChange(line) {
  const change = JSON.parse(line);
  changeCount += 1;
  document.getElementById('change-count').textContent = String(changeCount);

  const li = document.createElement('li');
  li.className = 'change';
  li.dataset.kind = change.kind;
  li.dataset.key = keyOf(change.keys);
  const kind = document.createElement('span');
  kind.className = `kind kind-${change.kind}`;
  kind.textContent = change.kind + (change.ttl ? ' (ttl)' : '');
  li.append(kind, ' ', JSON.stringify(change.keys));
  if (change.newImage) li.append(' → ', JSON.stringify(change.newImage));
  changesList.prepend(li);

  const key = keyOf(change.keys);
  if (change.kind === 'remove') {
    replica.delete(key);
  } else if (change.newImage) {
    replica.set(key, change.newImage);
  } else {
    // A stream without new images (KEYS_ONLY, OLD_IMAGE): the keys are all we know.
    replica.set(key, { ...(replica.get(key) || {}), ...change.keys });
  }
  renderReplica(key);
}

function renderReplica(changedKey) {
  const columns = [];
  for (const item of replica.values()) {
    for (const name of Object.keys(item)) if (!columns.includes(name)) columns.push(name);
  }
  const head = replicaTable.tHead;
  head.replaceChildren();
  const headRow = head.insertRow();
  for (const name of columns) {
    const th = document.createElement('th');
    th.textContent = name;
    headRow.append(th);
  }
  const body = replicaTable.tBodies[0];
  body.replaceChildren();
  for (const [key, item] of replica) {
    const row = body.insertRow();
    row.className = 'item';
    row.dataset.key = key;
    if (key === changedKey) row.classList.add('flash');
    for (const name of columns) {
      const cell = row.insertCell();
      cell.dataset.attribute = name;
      cell.textContent = name in item ? show(item[name]) : '';
    }
  }
  const n = replica.size;
  document.getElementById('replica-count').textContent = `${n} item${n === 1 ? '' : 's'}`;
}

function onEvent(text) {
  const li = document.createElement('li');
  li.textContent = `${new Date().toISOString().slice(11, 23)} ${text}`;
  eventsList.append(li);
}

function optionsFromForm() {
  const data = new FormData(form);
  const options = new StartOptions(
    data.get('endpoint').trim(),
    data.get('region').trim(),
    data.get('table').trim(),
    data.get('accessKeyId').trim(),
    data.get('secretAccessKey'),
  );
  options.sessionToken = data.get('sessionToken');
  options.fromLatest = data.get('from') === 'latest';
  options.remember = data.get('remember') === 'on';
  return [options, data.get('table')];
}

form.addEventListener('submit', async (e) => {
  e.preventDefault();
  const [options, table] = optionsFromForm();
  startButton.disabled = true;
  fetchButton.disabled = true;
  setStatus('starting', `Resolving the stream of ${table}…`);
  try {
    tail = await start(options, onChange, onEvent);
    setStatus('running', `Reading ${tail.streamArn}`);
    stopButton.disabled = false;
  } catch (err) {
    setStatus('error', `Could not start: ${err.message || err}`);
    startButton.disabled = false;
    fetchButton.disabled = false;
  }
});

// Pull style: read what is there now, then stop (the npm package's fetchStreamState()).
fetchButton.addEventListener('click', async () => {
  if (!form.reportValidity()) return;
  const [options, table] = optionsFromForm();
  startButton.disabled = true;
  fetchButton.disabled = true;
  setStatus('fetching', `Reading ${table}'s stream up to now…`);
  try {
    const n = await fetchNow(options, onChange, onEvent);
    setStatus('fetched', `Fetched ${n} change${n === 1 ? '' : 's'}.`);
  } catch (err) {
    setStatus('error', `Fetch failed: ${err.message || err}`);
  }
  startButton.disabled = false;
  fetchButton.disabled = false;
});

stopButton.addEventListener('click', async () => {
  stopButton.disabled = true;
  try {
    await tail.stop();
    setStatus('idle', 'Stopped.');
  } catch (err) {
    setStatus('error', `Stop failed: ${err.message || err}`);
  }
  tail = null;
  startButton.disabled = false;
  fetchButton.disabled = false;
});

// Query parameters prefill the form (handy for links and tests): ?endpoint=…&table=…
for (const [name, value] of new URLSearchParams(location.search)) {
  const field = form.elements.namedItem(name);
  if (field && field.type === 'checkbox') field.checked = !['', '0', 'false', 'off'].includes(value);
  else if (field) field.value = value;
}

await init();
setStatus('idle', 'Ready.');

// The npm contender of benches/contenders.rs: the npm package `dynamodb-stream` on the AWS SDK
// for JavaScript v3, driven the way its README says, by calling `fetchStreamState()` again and
// again (here back to back: the canned endpoint has no rate limit), counting the record events
// it emits.
//
//   node driver.js --endpoint http://127.0.0.1:PORT --arn STREAM_ARN --expected N [--unmarshall]
//
// Prints one JSON line: {"records": N, "seconds": S, "fetches": F}, where S runs from before the
// first fetchStreamState() until the N-th record event (node's start-up is not counted).
//
// How the package reads: each fetchStreamState() lists the shards (DescribeStream), gets a
// LATEST iterator for shards it has none for, then makes one GetRecords call per shard, ten
// shards at a time, and emits a `modify record` (`insert record`, `remove record`) event per
// record. The canned endpoint serves LATEST from the first page, so the package reads every
// record once; a shard read to its end would be picked up again by the next DescribeStream, so
// the driver stops as soon as it has seen the expected count.
'use strict'

const DynamoDBStream = require('dynamodb-stream')
const { DynamoDBStreams } = require('@aws-sdk/client-dynamodb-streams')
const { unmarshall } = require('@aws-sdk/util-dynamodb')

function arg(name) {
  const i = process.argv.indexOf(name)
  return i >= 0 ? process.argv[i + 1] : undefined
}

async function main() {
  const endpoint = arg('--endpoint')
  const streamArn = arg('--arn')
  const expected = Number(arg('--expected'))
  if (!endpoint || !streamArn || !(expected > 0)) {
    throw new Error('usage: driver.js --endpoint URL --arn ARN --expected N [--unmarshall]')
  }
  const client = new DynamoDBStreams({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'bench', secretAccessKey: 'bench' },
    maxAttempts: 1,
  })
  const stream = new DynamoDBStream(
    client,
    streamArn,
    process.argv.includes('--unmarshall') ? unmarshall : undefined
  )
  let records = 0
  const count = () => {
    records++
  }
  stream.on('insert record', count)
  stream.on('modify record', count)
  stream.on('remove record', count)

  // A bound, so a broken run ends instead of polling forever.
  const deadline = setTimeout(() => {
    console.error(`timed out after 600 s with ${records} of ${expected} records`)
    process.exit(2)
  }, 600_000)
  deadline.unref()

  const started = process.hrtime.bigint()
  let fetches = 0
  while (records < expected) {
    await stream.fetchStreamState()
    fetches++
    if (fetches > 1_000_000) throw new Error('too many fetches')
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  console.log(JSON.stringify({ records, seconds, fetches }))
  client.destroy()
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})

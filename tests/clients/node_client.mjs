// The official Node.js client (@clickhouse/client, as `make clients` installs it) against
// `sluice warehouse`: run by tests/test_warehouse_clients.py with the server's URL and password
// in SLUICE_CH_URL / SLUICE_CH_PASSWORD, the node_modules folder in NODE_PATH_CLIENTS and a table
// name of its own in SLUICE_CH_TABLE. Prints one JSON object: what each call returned.
import { createRequire } from 'node:module'

const require = createRequire(process.env.NODE_PATH_CLIENTS + '/')
const { createClient, ClickHouseLogLevel } = require('@clickhouse/client')
const version = require('@clickhouse/client/package.json').version

const table = process.env.SLUICE_CH_TABLE
const options = {
  url: process.env.SLUICE_CH_URL,
  username: 'sluice',
  password: process.env.SLUICE_CH_PASSWORD,
  log: { level: ClickHouseLogLevel.OFF }, // the errors below are expected: they are printed as results
}
const out = { version }

async function rows(client, query, extra = {}) {
  const result = await client.query({ query, format: 'JSONEachRow', ...extra })
  return result.json()
}

async function errorOf(promise) {
  try {
    await promise
    return null
  } catch (e) {
    return { code: e.code, type: e.type, message: String(e.message) }
  }
}

const client = createClient(options)
out.ping = (await client.ping()).success
out.pingSelect = (await client.ping({ select: true })).success
await client.command({ query: `CREATE TABLE ${table} (id UInt32, name String, at DateTime) ENGINE = MergeTree ORDER BY id` })

const values = [
  { id: 1, name: 'one', at: '2024-01-01 00:00:00' },
  { id: 2, name: "it's", at: '2024-01-02 00:00:00' },
]
const inserted = await client.insert({ table, values, format: 'JSONEachRow' })
out.insertSummary = inserted.summary ?? null
out.countAfterInsert = await rows(client, `SELECT count() AS n FROM ${table}`)

// Request and response compressed (gzip), as `compression: {request, response}` asks
const compressed = createClient({ ...options, compression: { request: true, response: true } })
await compressed.insert({ table, values: [{ id: 3, name: 'three', at: '2024-01-03 00:00:00' }], format: 'JSONEachRow' })
out.countCompressed = await rows(compressed, `SELECT count() AS n FROM ${table}`)
await compressed.close()

out.params = await rows(client, `SELECT id, name FROM ${table} WHERE id > {min:UInt32} AND name != {skip:String} ORDER BY id`, {
  query_params: { min: 1, skip: 'three' },
})
out.csv = await (await client.query({ query: `SELECT id FROM ${table} ORDER BY id`, format: 'CSV' })).text()
out.json = (await (await client.query({ query: `SELECT id FROM ${table} ORDER BY id`, format: 'JSON' })).json()).data

const stream = (await client.query({ query: `SELECT number FROM numbers(1000)`, format: 'JSONEachRow' })).stream()
let streamed = 0
for await (const batch of stream) streamed += batch.length
out.streamed = streamed

out.syntaxError = await errorOf(client.query({ query: 'SELEC 1' }))
out.unknownTable = await errorOf(client.query({ query: 'SELECT * FROM no_such_table_here' }))
out.badInsert = await errorOf(client.insert({ table, values: [{ id: 'not a number' }], format: 'JSONEachRow' }))
out.countAfterBadInsert = await rows(client, `SELECT count() AS n FROM ${table}`)
const stranger = createClient({ ...options, password: 'wrong' })
out.authError = await errorOf(stranger.query({ query: 'SELECT 1' }))
await stranger.close()

// A session's SET stays in it; another client (no session) does not see it
const a = createClient({ ...options, session_id: `node-a-${table}` })
await a.command({ query: 'SET max_threads = 3' })
out.sessionSetting = await rows(a, "SELECT getSetting('max_threads') AS v")
out.otherSetting = await rows(client, "SELECT getSetting('max_threads') AS v")
await a.command({ query: 'SET readonly = 1' })
out.sessionReadonly = await errorOf(a.command({ query: `INSERT INTO ${table} VALUES (9, 'x', now())` }))
out.othersWrite = (await client.command({ query: `INSERT INTO ${table} VALUES (10, 'ten', now())` })).summary ?? null
await a.close()

await client.command({ query: `DROP TABLE ${table}` })
await client.close()
console.log(JSON.stringify(out))

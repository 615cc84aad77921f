// posthog-node, unmodified from npm, pointed at the gateway by `host` alone.
// Usage: node posthog_node.cjs PROJECT_TOKEN BASE_URL. Exits non-zero on any error the SDK reports.
const { PostHog } = require('posthog-node')

const [token, host] = process.argv.slice(2)
const client = new PostHog(token, { host, flushAt: 50, flushInterval: 60000, fetchRetryDelay: 200 })
const errors = []
client.on('error', (err) => errors.push(String(err && (err.message || err.status) || err)))

client.identify({ distinctId: 'user-node', properties: { email: 'node@example.com', $anon_distinct_id: 'anon-node' } })
client.capture({
  distinctId: 'user-node',
  event: '$feature_flag_called',
  properties: { $feature_flag: 'new-onboarding', $feature_flag_response: 'variant-b' },
})
client.capture({ distinctId: 'user-node', event: 'signed up', properties: { plan: 'team' } })

client.shutdown(60000).then(() => {
  if (errors.length) {
    console.error(errors.join('\n'))
    process.exit(1)
  }
})

// @segment/analytics-node, unmodified from npm, pointed at the gateway by `host` alone.
// Usage: node segment_node.cjs WRITE_KEY BASE_URL. Exits non-zero on any error the SDK reports.
const { Analytics } = require('@segment/analytics-node')

const [writeKey, host] = process.argv.slice(2)
const analytics = new Analytics({ writeKey, host, maxRetries: 5, flushInterval: 60000 })
const errors = []
analytics.on('error', (err) => errors.push(String(err && (err.reason || err.message || err.code) || err)))

analytics.identify({ userId: 'user-node', traits: { plan: 'team' } })
analytics.group({ userId: 'user-node', groupId: 'acme-inc', traits: { name: 'Acme' } })
analytics.track({
  userId: 'user-node',
  event: 'Experiment Viewed',
  properties: { experiment_id: 'exp_pricing', experiment_name: 'Pricing', variation_id: 'annual' },
})
analytics.track({ userId: 'user-node', event: 'Order Completed', properties: { revenue: 99 } })

analytics.closeAndFlush({ timeout: 60000 }).then(() => {
  if (errors.length) {
    console.error(errors.join('\n'))
    process.exit(1)
  }
})

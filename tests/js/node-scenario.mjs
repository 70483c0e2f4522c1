// Drives the real @segment/analytics-node SDK through trackyard's end-to-end scenario.
//
// Usage: node node-scenario.mjs <host> <writeKey> [burst]
//    or: TRACKYARD_HOST=... TRACKYARD_WRITE_KEY=... node node-scenario.mjs
//
// Prints one JSON object on stdout once the client has flushed and closed:
//   {"messageIds": [...], "sent": [<each message as the SDK delivered it>], "errors": [...]}
// The test (tests/e2e/test_sdk_node.py) compares "sent" with what trackyard stored.
import { Analytics } from '@segment/analytics-node'

const host = process.argv[2] ?? process.env.TRACKYARD_HOST
const writeKey = process.argv[3] ?? process.env.TRACKYARD_WRITE_KEY
const burst = Number(process.argv[4] ?? process.env.TRACKYARD_BURST ?? 200)
if (!host || !writeKey || !Number.isInteger(burst) || burst < 0) {
  console.error('usage: node node-scenario.mjs <host> <writeKey> [burst]')
  process.exit(2)
}

const USER = 'node-user-1'
const ORDER_COMPLETED = {
  checkout_id: 'fksdjfsdjfisjf9sdfjsd9f',
  order_id: '50314b8e9bcf000000000000',
  affiliation: 'Google Store',
  total: 27.5,
  subtotal: 22.5,
  revenue: 25.0,
  shipping: 3,
  tax: 2,
  discount: 2.5,
  coupon: 'hasbros',
  currency: 'USD',
  products: [
    {
      product_id: '507f1f77bcf86cd799439011',
      sku: '45790-32',
      name: 'Monopoly: 3rd Edition',
      price: 19,
      quantity: 1,
      category: 'Games',
      url: 'https://www.example.com/product/path',
      image_url: 'https://www.example.com/product/path.jpg',
    },
    {
      product_id: '505bd76785ebb509fc183733',
      sku: '46493-32',
      name: 'Uno Card Game',
      price: 3,
      quantity: 2,
      category: 'Games',
    },
  ],
}

const analytics = new Analytics({ writeKey, host, flushInterval: 200, maxRetries: 3 })
const sent = []
const errors = []
analytics.on('error', (error) => {
  errors.push(String(error?.reason ?? error?.code ?? error))
})

const pending = []
function call(method, params) {
  pending.push(
    new Promise((resolve) => {
      analytics[method](params, (err, ctx) => {
        if (err) {
          errors.push(`${method}: ${String(err)}`)
        } else if (ctx) {
          // After delivery ctx.event is the message as it went on the wire (minus the
          // envelope's sentAt): messageId, timestamp, context.library, _metadata, …
          sent.push(JSON.parse(JSON.stringify(ctx.event)))
        }
        resolve()
      })
    })
  )
}

call('identify', {
  userId: USER,
  traits: { email: 'ada@example.com', name: 'Ada Lovelace', plan: 'enterprise', logins: 5 },
})
call('track', { userId: USER, event: 'Order Completed', properties: ORDER_COMPLETED })
call('page', {
  userId: USER,
  category: 'Docs',
  name: 'Pricing',
  properties: { url: 'https://example.com/pricing', title: 'Pricing', referrer: 'https://example.com/' },
})
call('screen', { userId: USER, name: 'Home', properties: { variation: 'blue' } })
call('group', {
  userId: USER,
  groupId: 'group-42',
  traits: { name: 'Initech', industry: 'Software', employees: 120 },
})
call('alias', { userId: USER, previousId: 'node-anon-1' })
for (let i = 0; i < burst; i++) {
  call('track', { userId: USER, event: 'Burst Event', properties: { index: i } })
}

await analytics.closeAndFlush({ timeout: 20000 })
// Every callback has fired once the client drained; the bound keeps a stuck one from hanging.
await Promise.race([Promise.all(pending), new Promise((resolve) => setTimeout(resolve, 5000))])

const report = JSON.stringify({ messageIds: sent.map((message) => message.messageId), sent, errors })
const status = errors.length === 0 && sent.length === burst + 6 ? 0 : 1
// Exit only once the pipe has taken the whole report (stdout to a pipe is asynchronous).
process.stdout.write(report + '\n', () => process.exit(status))

// The live debugger: a source's events as they arrive, over Server-Sent Events.
'use strict'

const MAX_SHOWN = 200

function setUpDebugger () {
  const list = document.getElementById('debugger')
  if (!list) return
  const state = document.querySelector('[data-live-state]')
  const empty = document.querySelector('[data-debugger-empty]')
  const pause = document.querySelector('[data-debugger-pause]')
  const clear = document.querySelector('[data-debugger-clear]')
  const held = []
  let paused = false

  const setState = (text, live) => {
    state.textContent = text
    state.classList.toggle('is-live', live)
  }

  const row = (item, failed) => {
    const entry = trackyard.element('li', failed ? 'ev ev-failed ev-new' : 'ev ev-new')
    const details = trackyard.element('details')
    const summary = trackyard.element('summary')
    const at = trackyard.element('time', '', new Date(item.received_at).toLocaleTimeString())
    at.dateTime = item.received_at
    const kind = failed ? 'failed' : item.type
    summary.append(
      at,
      trackyard.element('span', `badge type-${kind}`, kind),
      trackyard.element('span', 'ev-name', failed ? item.reason : (item.name || '—')),
      trackyard.element('span', 'ev-user muted', failed ? item.code : item.user)
    )
    details.append(summary, trackyard.element('pre', 'code', JSON.stringify(item.event, null, 2)))
    entry.append(details)
    return entry
  }

  const show = (item, failed) => {
    list.prepend(row(item, failed))
    while (list.children.length > MAX_SHOWN) list.lastElementChild.remove()
    empty.hidden = true
  }

  const receive = (failed) => (message) => {
    const item = JSON.parse(message.data)
    if (paused) {
      held.push([item, failed])
      pause.textContent = `Resume (${held.length} new)`
    } else {
      show(item, failed)
    }
  }

  const stream = new EventSource(`/api/v1/sources/${encodeURIComponent(list.dataset.source)}/live`)
  stream.addEventListener('open', () => setState('Live', true))
  stream.addEventListener('error', () => setState('Reconnecting…', false))
  stream.addEventListener('event', receive(false))
  stream.addEventListener('failure', receive(true))
  window.addEventListener('pagehide', () => stream.close())

  pause.addEventListener('click', () => {
    paused = !paused
    pause.setAttribute('aria-pressed', String(paused))
    if (!paused) {
      for (const [item, failed] of held.splice(0)) show(item, failed)
    }
    pause.textContent = paused ? 'Resume' : 'Pause'
  })
  clear.addEventListener('click', () => {
    list.replaceChildren()
    empty.hidden = false
  })
}

document.addEventListener('DOMContentLoaded', setUpDebugger)

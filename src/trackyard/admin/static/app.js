// trackyard web app: small progressive enhancements over server-rendered pages.
'use strict'

const trackyard = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content

  async function api (method, url, body) {
    const response = await fetch(url, {
      method,
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf() },
      body: body === undefined ? undefined : JSON.stringify(body)
    })
    const data = response.status === 204 ? null : await response.json()
    if (!response.ok) throw new Error((data && data.message) || `HTTP ${response.status}`)
    return data
  }

  function element (tag, className, text) {
    const node = document.createElement(tag)
    if (className) node.className = className
    if (text !== undefined) node.textContent = text
    return node
  }

  let toast = null
  function announce (message, isError) {
    if (!toast) {
      toast = element('div', 'toast')
      toast.setAttribute('role', 'status')
      document.body.append(toast)
    }
    toast.textContent = message
    toast.classList.toggle('is-error', Boolean(isError))
    clearTimeout(announce.timer)
    announce.timer = setTimeout(() => { toast.textContent = '' }, 4000)
  }

  return { api, element, announce }
})()

document.documentElement.classList.add('js')

async function copyText (text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text)
    return
  }
  const area = trackyard.element('textarea')
  area.value = text
  area.setAttribute('readonly', '')
  area.className = 'visually-hidden'
  document.body.append(area)
  area.select()
  document.execCommand('copy')
  area.remove()
}

function setUpCopyButtons () {
  for (const button of document.querySelectorAll('[data-copy]')) {
    const label = button.textContent
    button.addEventListener('click', async () => {
      try {
        await copyText(document.getElementById(button.dataset.copy).textContent)
        button.textContent = 'Copied'
        trackyard.announce('Copied to the clipboard')
      } catch (error) {
        trackyard.announce(`Could not copy: ${error.message}`, true)
      }
      setTimeout(() => { button.textContent = label }, 1500)
    })
  }
}

function setUpConfirmations () {
  for (const form of document.querySelectorAll('form[data-confirm]')) {
    form.addEventListener('submit', (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault()
    })
  }
}

// The on/off switch: flips through the API at once; without JavaScript the form posts.
function setUpSwitches () {
  for (const form of document.querySelectorAll('.switch-form')) {
    const box = form.querySelector('input[type="checkbox"]')
    const text = form.querySelector('[data-switch-text]')
    const name = form.dataset.destination
    box.addEventListener('change', async () => {
      const on = box.checked
      box.disabled = true
      try {
        await trackyard.api('POST', `/api/v1/destinations/${encodeURIComponent(name)}/${on ? 'enable' : 'disable'}`)
        if (text) text.textContent = on ? 'On' : 'Off'
        trackyard.announce(on ? `${name} is on: new events are delivered` : `${name} is off`)
      } catch (error) {
        box.checked = !on
        trackyard.announce(`Could not switch ${name}: ${error.message}`, true)
      } finally {
        box.disabled = false
        box.focus()
      }
    })
  }
}

function setUpTabs () {
  for (const tabs of document.querySelectorAll('[data-tabs]')) {
    const buttons = [...tabs.querySelectorAll('[role="tab"]')]
    const select = (chosen) => {
      for (const button of buttons) {
        const selected = button === chosen
        button.setAttribute('aria-selected', String(selected))
        button.tabIndex = selected ? 0 : -1
        document.getElementById(button.getAttribute('aria-controls')).hidden = !selected
      }
      chosen.focus()
    }
    buttons.forEach((button, index) => {
      button.addEventListener('click', () => select(button))
      button.addEventListener('keydown', (event) => {
        const moves = { ArrowRight: 1, ArrowLeft: -1, Home: -index, End: buttons.length - 1 - index }
        if (!(event.key in moves)) return
        event.preventDefault()
        select(buttons[(index + moves[event.key] + buttons.length) % buttons.length])
      })
    })
  }
}

function setUpCatalogSearch () {
  const input = document.querySelector('[data-catalog-search]')
  if (!input) return
  const count = document.querySelector('[data-catalog-count]')
  const none = document.querySelector('[data-catalog-none]')
  const filter = () => {
    const words = input.value.toLowerCase().split(/\s+/).filter(Boolean)
    let shown = 0
    for (const section of document.querySelectorAll('[data-category]')) {
      let inSection = 0
      for (const card of section.querySelectorAll('[data-search]')) {
        const match = words.every((word) => card.dataset.search.includes(word))
        card.hidden = !match
        if (match) inSection++
      }
      section.hidden = inSection === 0
      shown += inSection
    }
    count.textContent = `${shown} destination${shown === 1 ? '' : 's'}`
    none.hidden = shown !== 0
  }
  input.addEventListener('input', filter)
  input.form.addEventListener('submit', (event) => { event.preventDefault(); filter() })
}

function settingsOf (form) {
  const settings = {}
  for (const [name, value] of new FormData(form)) {
    if (name.startsWith('s.') && typeof value === 'string') settings[name.slice(2)] = value
  }
  for (const [name, value] of Object.entries(settings)) {
    if (value.trim() === '') delete settings[name]
  }
  return settings
}

function showTestResult (output, result) {
  const labels = { delivered: 'Delivered', retry: 'Not delivered (would be retried)', give_up: 'Refused', skipped: 'Not sent' }
  output.replaceChildren()
  const good = result.verdict === 'delivered'
  output.append(trackyard.element('strong', good ? 'ok-text' : 'bad-text', labels[result.verdict] || result.verdict))
  output.append(` · HTTP ${result.status || '—'}`)
  if (!good) output.append(` · ${result.reason}`)
  if (result.request || result.response) {
    const details = trackyard.element('details')
    details.append(trackyard.element('summary', '', 'Request and response'))
    details.append(trackyard.element('h3', '', 'Request'), trackyard.element('pre', 'code', result.request))
    details.append(trackyard.element('h3', '', 'Response'), trackyard.element('pre', 'code', result.response || '(none)'))
    output.append(details)
  }
}

function setUpTestEvents () {
  for (const button of document.querySelectorAll('[data-test-event]')) {
    const output = button.parentElement.querySelector('output')
    button.addEventListener('click', async () => {
      const body = { settings: settingsOf(button.form) }
      if (button.dataset.destination) body.destination = button.dataset.destination
      button.disabled = true
      output.textContent = 'Sending a test event…'
      try {
        showTestResult(output, await trackyard.api('POST', `/api/v1/catalog/${encodeURIComponent(button.dataset.type)}/test`, body))
      } catch (error) {
        output.replaceChildren(trackyard.element('strong', 'bad-text', 'Not sent: '), error.message)
      } finally {
        button.disabled = false
      }
    })
  }
}

// Live counts on a destination's page.
function setUpStatusRefresh () {
  const stats = document.querySelector('[data-status-url]')
  if (!stats) return
  const refresh = async () => {
    try {
      const response = await fetch(stats.dataset.statusUrl, { credentials: 'same-origin' })
      if (!response.ok) return
      const status = await response.json()
      for (const node of stats.querySelectorAll('[data-stat]')) node.textContent = status[node.dataset.stat]
    } catch (error) {
      // the server may be restarting; the next tick tries again
    }
  }
  setInterval(refresh, 2000)
}

function replayBody (form) {
  const value = (name) => form.elements[name].value.trim()
  const body = {}
  if (value('since')) body.since = value('since')
  if (value('until')) body.until = value('until')
  const events = value('events').split(',').map((name) => name.trim()).filter(Boolean)
  if (events.length) body.events = events
  return body
}

function setUpReplayPreview () {
  const button = document.querySelector('[data-replay-preview]')
  if (!button) return
  const output = button.form.querySelector('[data-replay-count]')
  button.addEventListener('click', async () => {
    button.disabled = true
    output.textContent = 'Counting…'
    try {
      const url = `/api/v1/destinations/${encodeURIComponent(button.dataset.destination)}/replays/preview`
      const preview = await trackyard.api('POST', url, replayBody(button.form))
      output.replaceChildren(
        trackyard.element('strong', '', `${preview.sent} event${preview.sent === 1 ? '' : 's'} will be sent`),
        ` (${preview.read} read, ${preview.filtered} filtered out).`
      )
    } catch (error) {
      output.replaceChildren(trackyard.element('strong', 'bad-text', 'Cannot replay: '), error.message)
    } finally {
      button.disabled = false
    }
  })
}

// Progress bars of running replays, polled until they end.
function setUpReplayProgress () {
  for (const item of document.querySelectorAll('[data-replay-active="true"]')) {
    const field = (name) => item.querySelector(`[data-replay-field="${name}"]`)
    const timer = setInterval(async () => {
      try {
        const response = await fetch(`/api/v1/replays/${item.dataset.replayId}`, { credentials: 'same-origin' })
        if (!response.ok) return
        const job = await response.json()
        item.querySelector('progress').value = job.percent
        field('percent').textContent = `${job.percent}%`
        field('state').textContent = job.state
        field('state').className = `badge replay-${job.state}`
        field('counts').textContent = `read ${job.read} of ${job.total} · sent ${job.sent} · delivered ${job.delivered} · failed ${job.failed} · filtered ${job.filtered}`
        if (job.state !== 'pending' && job.state !== 'running') {
          clearInterval(timer)
          item.dataset.replayActive = 'false'
          const cancel = item.querySelector('[data-replay-cancel]')
          if (cancel) cancel.remove()
          trackyard.announce(`Replay ${job.id} ${job.state}`)
        }
      } catch (error) {
        // the server may be restarting; the next tick tries again
      }
    }, 1000)
  }
}

function focusFormError () {
  const error = document.getElementById('form-error')
  if (error) error.focus()
}

document.addEventListener('DOMContentLoaded', () => {
  setUpCopyButtons()
  setUpConfirmations()
  setUpSwitches()
  setUpTabs()
  setUpCatalogSearch()
  setUpTestEvents()
  setUpStatusRefresh()
  setUpReplayPreview()
  setUpReplayProgress()
  focusFormError()
})

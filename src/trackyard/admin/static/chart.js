// trackyard's charts: per-minute series drawn as SVG lines, with hover read-outs.
'use strict'

const SVG = 'http://www.w3.org/2000/svg'
const HEIGHT = 220
const PAD = { left: 42, right: 12, top: 10, bottom: 24 }

function svgNode (tag, attributes) {
  const node = document.createElementNS(SVG, tag)
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value)
  return node
}

// Both API shapes become [{label, cls, total, values: Map(minute → count)}].
function seriesOf (data) {
  if (data.sources) {
    return data.sources.map((source, index) => ({
      label: source.name,
      cls: `series-${index % 6}`,
      total: source.total,
      values: new Map(source.counts)
    }))
  }
  const destination = data.destinations[0] || { minutes: [] }
  return [['delivered', 'Delivered', 'series-ok'], ['retried', 'Retried', 'series-warn'], ['failed', 'Failed', 'series-bad']]
    .map(([key, label, cls]) => ({
      label,
      cls,
      total: destination.minutes.reduce((sum, minute) => sum + minute[key], 0),
      values: new Map(destination.minutes.map((minute) => [minute.minute, minute[key]]))
    }))
}

// The top of the y axis: twice a round step (1, 2 or 5 × 10ⁿ), so its half is round too.
function axisTop (peak) {
  const half = Math.max(1, peak / 2)
  const power = 10 ** Math.floor(Math.log10(half))
  return 2 * [1, 2, 5, 10].map((step) => step * power).find((step) => step >= half)
}

// Minutes between x labels: as few as fit, about one per 80 px.
function tickMinutes (span, plotWidth) {
  const fitting = Math.max(2, Math.floor(plotWidth / 80))
  return [15, 30, 60, 120, 180, 240, 360, 720, 1440].find((every) => span / every <= fitting) || 1440
}

function clock (minute) {
  return new Date(minute * 60000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
}

function drawChart (container, data) {
  const series = seriesOf(data)
  const since = data.since_minute
  const span = data.until_minute - since
  const width = Math.max(container.clientWidth, 280)
  const peak = Math.max(0, ...series.flatMap((s) => [...s.values.values()]))
  const top = axisTop(peak)
  const x = (minute) => PAD.left + ((minute - since) / span) * (width - PAD.left - PAD.right)
  const y = (count) => HEIGHT - PAD.bottom - (count / top) * (HEIGHT - PAD.top - PAD.bottom)

  const svg = svgNode('svg', { viewBox: `0 0 ${width} ${HEIGHT}`, role: 'img', preserveAspectRatio: 'none' })
  const summary = series.map((s) => `${s.label}: ${s.total}`).join(', ')
  svg.setAttribute('aria-label', `${container.parentElement.querySelector('figcaption').textContent}. ${summary}. Peak ${peak} per minute.`)
  for (const fraction of [0, 0.5, 1]) {
    svg.append(svgNode('line', { class: 'grid', x1: PAD.left, x2: width - PAD.right, y1: y(top * fraction), y2: y(top * fraction) }))
    const label = svgNode('text', { class: 'axis-label', x: PAD.left - 6, y: y(top * fraction) + 4, 'text-anchor': 'end' })
    label.textContent = String(Math.round(top * fraction))
    svg.append(label)
  }
  const tickEvery = tickMinutes(span, width - PAD.left - PAD.right)
  for (let minute = Math.ceil(since / tickEvery) * tickEvery; minute <= data.until_minute; minute += tickEvery) {
    const label = svgNode('text', { class: 'axis-label', x: x(minute), y: HEIGHT - 6, 'text-anchor': 'middle' })
    label.textContent = clock(minute)
    svg.append(label)
  }
  for (const s of series) {
    const points = []
    for (let minute = since; minute <= data.until_minute; minute++) {
      points.push(`${x(minute).toFixed(1)},${y(s.values.get(minute) || 0).toFixed(1)}`)
    }
    const line = `M${points.join('L')}`
    svg.append(svgNode('path', { class: `area ${s.cls}`, d: `${line}L${x(data.until_minute)},${y(0)}L${x(since)},${y(0)}Z` }))
    svg.append(svgNode('path', { class: `line ${s.cls}`, d: line }))
  }
  const cursor = svgNode('line', { class: 'cursor', y1: PAD.top, y2: HEIGHT - PAD.bottom, visibility: 'hidden' })
  svg.append(cursor)

  const tip = trackyard.element('div', 'chart-tip')
  tip.hidden = true
  svg.addEventListener('mousemove', (event) => {
    const box = svg.getBoundingClientRect()
    const position = ((event.clientX - box.left) / box.width) * width
    const minute = Math.round(since + ((position - PAD.left) / (width - PAD.left - PAD.right)) * span)
    if (minute < since || minute > data.until_minute) return
    cursor.setAttribute('x1', x(minute))
    cursor.setAttribute('x2', x(minute))
    cursor.setAttribute('visibility', 'visible')
    tip.textContent = `${clock(minute)} — ${series.map((s) => `${s.label} ${s.values.get(minute) || 0}`).join(' · ')}`
    tip.hidden = false
    tip.style.left = `${Math.min(event.clientX - box.left + 12, box.width - tip.offsetWidth)}px`
  })
  svg.addEventListener('mouseleave', () => { tip.hidden = true; cursor.setAttribute('visibility', 'hidden') })

  const legend = trackyard.element('ul', 'legend')
  for (const s of series) {
    const item = trackyard.element('li', s.cls)
    item.append(trackyard.element('span', 'swatch'), trackyard.element('span', 'legend-label', s.label), trackyard.element('span', 'muted', String(s.total)))
    legend.append(item)
  }
  container.replaceChildren(svg, tip, legend)
}

function setUpCharts () {
  for (const container of document.querySelectorAll('[data-chart-data]')) {
    let data = JSON.parse(document.getElementById(container.dataset.chartData).textContent)
    drawChart(container, data)
    let pending = 0
    window.addEventListener('resize', () => {
      cancelAnimationFrame(pending)
      pending = requestAnimationFrame(() => drawChart(container, data))
    })
    const url = container.dataset.refresh
    if (!url) continue
    setInterval(async () => {
      try {
        const response = await fetch(url, { credentials: 'same-origin' })
        if (!response.ok) return
        data = await response.json()
        drawChart(container, data)
        const total = document.querySelector(`[data-series-total="${container.id}"]`)
        if (total) total.textContent = String(seriesOf(data).reduce((sum, s) => sum + s.total, 0))
      } catch (error) {
        // the server may be restarting; the next tick tries again
      }
    }, 15000)
  }
}

document.addEventListener('DOMContentLoaded', setUpCharts)

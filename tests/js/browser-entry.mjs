// Entry point of the browser bundle the e2e tests build with esbuild: it exposes the real
// @segment/analytics-next npm package to the test page as window.AnalyticsBrowser.
import { AnalyticsBrowser } from '@segment/analytics-next'

window.AnalyticsBrowser = AnalyticsBrowser

-- wrk done() hook: one JSON line with throughput, error count and latency percentiles (ms).
-- Status errors are non-2xx/3xx answers (scenario (d) expects them: 503 CIRCUIT_OPEN).
done = function(summary, latency, requests)
  io.write(string.format(
    '{"requests":%d,"rps":%.1f,"errors":%d,"status_errors":%d,"socket_errors":%d,' ..
    '"duration_s":%.3f,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f}\n',
    summary.requests, summary.requests / (summary.duration / 1e6),
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.status + summary.errors.timeout,
    summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end

/**
 * The node's metrics: one prom-client registry per node. Figures the node keeps anyway
 * (counters in the driver, block sync, the archiver) are read when /metrics is scraped (a
 * `collect` callback), not mirrored into prom-client on every change.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Buckets of the latency histograms, in seconds: 100 µs (an fsync on a fast disk) to 10 s. */
const LATENCY_BUCKETS_S = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10];

/** A label value, cut to this many characters (error texts). */
const LABEL_CHARS_MAX = 200;

export class Metrics {
  readonly registry = new Registry();

  gauge(name: string, help: string, read: () => number): void {
    new Gauge({ name, help, registers: [this.registry], collect() { this.set(read()); } });
  }

  counter(name: string, help: string, read: () => number): void {
    new Counter({ name, help, registers: [this.registry], collect() { this.reset(); this.inc(read()); } });
  }

  /** A family of samples by one label, read when scraped (none: the family is empty). */
  labelled(type: 'gauge' | 'counter', name: string, help: string, label: string, read: () => Iterable<readonly [string, number]>): void {
    const common = { name, help, labelNames: [label], registers: [this.registry] };
    const samples = (): [Record<string, string>, number][] => [...read()].map(([v, n]) => [{ [label]: v.slice(0, LABEL_CHARS_MAX) }, n]);
    if (type === 'gauge') new Gauge({ ...common, collect() { this.reset(); for (const [l, n] of samples()) this.set(l, n); } });
    else new Counter({ ...common, collect() { this.reset(); for (const [l, n] of samples()) this.inc(l, n); } });
  }

  /** A constant `_info` gauge: one sample, value 1, carrying `labels` (build info). */
  info(name: string, help: string, labels: Record<string, string>): void {
    new Gauge({ name, help, labelNames: Object.keys(labels), registers: [this.registry], collect() { this.set(labels, 1); } });
  }

  /** An `_info` gauge whose one sample (value 1) carries `text` as its `error` label, while
   *  there is one. */
  lastError(name: string, help: string, read: () => string | null | undefined): void {
    this.labelled('gauge', name, help, 'error', () => {
      const text = read();
      return text ? [[text, 1] as const] : [];
    });
  }

  /** HTTP requests answered, by route, method and status, and how long they took. */
  httpObserver(): (route: string, method: string, status: number, seconds: number) => void {
    const seconds = new Histogram({
      name: 'pangea_http_request_duration_seconds',
      help: 'HTTP requests answered, by route, method and status, and how long they took.',
      labelNames: ['route', 'method', 'status'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
      registers: [this.registry],
    });
    return (route, method, status, s) => seconds.observe({ route, method, status: String(status) }, s);
  }

  /** A histogram of durations in seconds, observed in milliseconds (latencies the driver
   *  measures: log writes, applies, commits). */
  latency(name: string, help: string): (ms: number) => void {
    const h = new Histogram({ name, help, buckets: LATENCY_BUCKETS_S, registers: [this.registry] });
    return (ms) => h.observe(ms / 1000);
  }

  /** The Prometheus text exposition. */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}

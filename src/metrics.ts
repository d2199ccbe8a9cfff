/** Metrics kept with prom-client, beside the node's own gauges (node.ts). */
import { Histogram, Registry } from 'prom-client';

export class HttpMetrics {
  readonly registry = new Registry();
  private readonly seconds = new Histogram({
    name: 'pangea_http_request_duration_seconds',
    help: 'HTTP requests answered, by route, method and status, and how long they took.',
    labelNames: ['route', 'method', 'status'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    registers: [this.registry],
  });

  readonly observe = (route: string, method: string, status: number, seconds: number): void => {
    this.seconds.observe({ route, method, status: String(status) }, seconds);
  };

  text(): Promise<string> {
    return this.registry.metrics();
  }
}

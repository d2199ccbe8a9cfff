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

/**
 * Prometheus text exposition written by hand, for figures the node already keeps (cheaper
 * than mirroring every counter into prom-client): one HELP and TYPE line per family.
 */
export class PromText {
  private readonly lines: string[] = [];

  gauge(name: string, help: string, value: number, labels?: Record<string, string>): this {
    return this.family('gauge', name, help, [[labels ?? {}, value]]);
  }

  counter(name: string, help: string, value: number, labels?: Record<string, string>): this {
    return this.family('counter', name, help, [[labels ?? {}, value]]);
  }

  /** A family with several labelled samples. */
  family(type: 'gauge' | 'counter', name: string, help: string, samples: readonly (readonly [Record<string, string>, number])[]): this {
    this.lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) {
      const l = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',');
      this.lines.push(`${name}${l ? `{${l}}` : ''} ${value}`);
    }
    return this;
  }

  toString(): string {
    return this.lines.join('\n') + '\n';
  }
}

/** A label value as the exposition format wants it, cut to 200 characters. */
export function escapeLabel(text: string): string {
  return text.slice(0, 200).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, ' ');
}

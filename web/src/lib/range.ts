// The time window a report covers, as the Stats page keeps it in its URL:
// `?range=24h|7d|30d|month`, or `?from=…&to=…` (RFC 3339) for a custom one.
// A preset is relative to when it is read, so the same link shows the
// same span ending now.

import type { Step } from './types';

export type Preset = '24h' | '7d' | '30d' | 'month';

/** `text` is the preset's button; `title` heads the figures it shows. */
export const PRESETS: { value: Preset; text: string; title: string }[] = [
  { value: '24h', text: '24 h', title: 'Last 24 hours' },
  { value: '7d', text: '7 d', title: 'Last 7 days' },
  { value: '30d', text: '30 d', title: 'Last 30 days' },
  { value: 'month', text: 'This month', title: 'This month (UTC)' },
];

/** What `/stats` with no range shows. */
export const DEFAULT_PRESET: Preset = '7d';

/** pacer reports on at most this many days at once. */
const MAX_DAYS = 400;
/** Up to this many days, a chart has a point per hour; beyond, per (UTC) day. */
const HOURLY_DAYS = 2;

const HOUR_MS = 3600_000;
const DAY_MS = 24 * HOUR_MS;

export interface Window {
  from: Date;
  to: Date;
  /** The preset it came from; null for a custom window. */
  preset: Preset | null;
  step: Step;
}

function isPreset(v: string | null): v is Preset {
  return PRESETS.some((p) => p.value === v);
}

function presetWindow(preset: Preset, now: Date): Window {
  const to = new Date(now);
  let from: Date;
  switch (preset) {
    case '24h':
      from = new Date(to.getTime() - DAY_MS);
      break;
    case '7d':
      from = new Date(to.getTime() - 7 * DAY_MS);
      break;
    case '30d':
      from = new Date(to.getTime() - 30 * DAY_MS);
      break;
    case 'month':
      // Roll-ups keep UTC days, so the month is UTC's too.
      from = new Date(Date.UTC(to.getUTCFullYear(), to.getUTCMonth(), 1));
      break;
  }
  return { from, to, preset, step: stepFor(from, to) };
}

function stepFor(from: Date, to: Date): Step {
  return to.getTime() - from.getTime() <= HOURLY_DAYS * DAY_MS ? 'hour' : 'day';
}

/**
 * The window `query` asks for at `now`, or why it cannot be read. A custom
 * window needs `from`; `to` defaults to now. An unknown `range` is the
 * default one.
 */
export function windowOf(query: URLSearchParams, now: Date): Window | { error: string } {
  const rawFrom = query.get('from');
  const rawTo = query.get('to');
  if (rawFrom === null && rawTo === null) {
    const range = query.get('range');
    return presetWindow(isPreset(range) ? range : DEFAULT_PRESET, now);
  }
  if (!rawFrom) return { error: 'A custom range needs a start: pick “From”, or one of the presets.' };
  const from = new Date(rawFrom);
  const to = rawTo ? new Date(rawTo) : new Date(now);
  if (Number.isNaN(from.getTime())) return { error: `“${rawFrom}” is not a date and time.` };
  if (Number.isNaN(to.getTime())) return { error: `“${rawTo}” is not a date and time.` };
  if (to <= from) return { error: 'The range ends before it starts: pick a “To” after “From”.' };
  if (to.getTime() - from.getTime() > MAX_DAYS * DAY_MS) {
    return { error: `pacer reports on at most ${MAX_DAYS} days at once: narrow the range.` };
  }
  return { from, to, preset: null, step: stepFor(from, to) };
}

/** RFC 3339 in UTC without milliseconds when they are zero, for readable URLs. */
export function iso(d: Date): string {
  return d.toISOString().replace('.000Z', 'Z');
}

const pad = (n: number) => n.toString().padStart(2, '0');

/** A time as a `datetime-local` input holds it: local time, to the minute. */
export function toLocalInput(d: Date): string {
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** A `datetime-local` input's value (local time) as a time; null when empty or malformed. */
export function fromLocalInput(value: string): Date | null {
  if (!value) return null;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

/**
 * A step's start as a chart and its table label it: hours in local time
 * (`12-07 14:00`), days as the UTC day the roll-ups keep (`2026-12-07`).
 */
export function stepLabel(start: string, step: Step): string {
  const d = new Date(start);
  if (step === 'day') return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
  return `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

// Turning pacer's RFC 3339 times and numbers into text people read.

import type { Job, JobState } from './types';

/** `1h 02m`, `4m 05s`, `12s`, `0.4s`. */
export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '—';
  if (seconds < 0) seconds = 0;
  // Steps of a timeline are often milliseconds apart.
  if (seconds < 1) return `${Math.round(seconds * 1000)}ms`;
  if (seconds < 10) return `${(Math.round(seconds * 10) / 10).toString()}s`;
  const s = Math.round(seconds);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const pad = (n: number) => n.toString().padStart(2, '0');
  if (d > 0) return `${d}d ${pad(h)}h`;
  if (h > 0) return `${h}h ${pad(m)}m`;
  if (m > 0) return `${m}m ${pad(sec)}s`;
  return `${sec}s`;
}

export function seconds(from: string, to: string | Date): number {
  const end = typeof to === 'string' ? Date.parse(to) : to.getTime();
  return (end - Date.parse(from)) / 1000;
}

/** `3m ago`, `in 2h`, `just now`. */
export function ago(iso: string | null | undefined, now: Date = new Date()): string {
  if (!iso) return '—';
  const s = (now.getTime() - Date.parse(iso)) / 1000;
  if (Math.abs(s) < 5) return 'just now';
  const text = duration(Math.abs(s)).split(' ')[0];
  return s >= 0 ? `${text} ago` : `in ${text}`;
}

/** Local date and time, to the second: `2026-11-01 14:03:22`. */
export function dateTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const pad = (n: number) => n.toString().padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Time only, with milliseconds: timelines move in sub-second steps. */
export function timeOfDay(iso: string): string {
  const d = new Date(iso);
  const pad = (n: number, w = 2) => n.toString().padStart(w, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function usd(v: number | null | undefined, digits = 4): string {
  if (v === null || v === undefined) return '—';
  return `$${v.toFixed(digits)}`;
}

/** Whole micro-dollars (how pacer keeps money) as dollars. */
export function microUsd(v: number | null | undefined, digits = 4): string {
  return usd(v === null || v === undefined ? v : v / 1_000_000, digits);
}

/** A sum of micro-dollars: cents once it reaches a dollar, else four decimals so small sums show. */
export function money(micro: number): string {
  return microUsd(micro, micro < 1_000_000 ? 4 : 2);
}

/** Runner minutes: one decimal under ten, whole minutes above. */
export function minutes(m: number): string {
  return m < 10 ? (Math.round(m * 10) / 10).toString() : Math.round(m).toString();
}

/** Milliseconds as a duration. */
export function millis(ms: number | null | undefined): string {
  return duration(ms === null || ms === undefined ? ms : ms / 1000);
}

const WAITING_STATES: JobState[] = ['unmatched', 'waiting', 'queued', 'claimed', 'starting'];
const DONE_STATES: JobState[] = ['completed', 'failed', 'cancelled'];

export function isFinal(state: JobState): boolean {
  return state === 'completed' || state === 'cancelled';
}

/** When the job started running on a runner, if it did. */
function runningAt(job: Job): string | null {
  return job.transitions.find((t) => t.state === 'running')?.at ?? null;
}

function endedAt(job: Job): string | null {
  if (!DONE_STATES.includes(job.state)) return null;
  const last = [...job.transitions].reverse().find((t) => DONE_STATES.includes(t.state));
  return last?.at ?? job.updated_at;
}

/** When the job was first queued (a job held for approval queues later than it arrives). */
function queuedAt(job: Job): string {
  return job.transitions.find((t) => t.state === 'queued')?.at ?? job.created_at;
}

/**
 * Queue time, as `/api/stats` counts it: from `queued` to the first
 * `running`; still counting while it waits. A job that ended without
 * running has none.
 */
export function queueSeconds(job: Job, now: Date = new Date()): number | null {
  const running = runningAt(job);
  if (running) return Math.max(0, seconds(queuedAt(job), running));
  if (WAITING_STATES.includes(job.state)) return seconds(queuedAt(job), now);
  return null;
}

/** Run time: from running until it ended; still counting while it runs. */
export function runSeconds(job: Job, now: Date = new Date()): number | null {
  const running = runningAt(job);
  if (!running) return null;
  const end = endedAt(job);
  return end ? seconds(running, end) : seconds(running, now);
}

export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

// The shapes the console API answers (docs/architecture.md, "HTTP contract"; README "The console API").
// Only the fields the console reads are typed; the API may send more.

export type Role = 'admin' | 'viewer';

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

export interface AuthInfo {
  /** false when the server runs with `auth.disabled`: no sign-in at all. */
  enabled: boolean;
  local: boolean;
  oidc: { issuer_host: string } | null;
}

export interface User {
  id: string;
  email: string | null;
  role: Role;
  disabled: boolean;
  /** Signs in through the IdP (OIDC subject linked). */
  sso?: boolean;
  /** Has a local password, so may sign in with it and change it. */
  local_password?: boolean;
  created_at?: string;
  updated_at?: string;
}

export interface Project {
  id: string;
  name: string;
  scope: 'repo' | 'org';
  org: string | null;
  label: string;
  runner_group_id: number;
  /** Jobs of public repositories get runners too (off unless turned on). */
  allow_public_repos: boolean;
  created_at: string;
  updated_at: string;
}

export type Market = 'on-demand' | 'spot' | 'spot-fallback';

export interface Pool {
  id: string;
  project_id: string;
  name: string;
  labels: string[];
  instance_types: string[];
  subnets: string[];
  security_groups: string[];
  ami: string;
  instance_profile: string | null;
  market: Market;
  max_runners: number;
  root_volume_gb: number;
  boot_timeout: string;
  max_lifetime: string;
  idle_timeout: string;
  priority: number;
  active_runners: number;
  degraded?: { reason: string; since: string; retry_at: string } | null;
  created_at: string;
  updated_at: string;
}

export interface RepoBinding {
  id: string;
  repo: string;
  project_id: string;
  created_at: string;
  updated_at: string;
}

export const JOB_STATES = [
  'unmatched',
  'waiting',
  'queued',
  'claimed',
  'starting',
  'running',
  'completed',
  'failed',
  'cancelled',
] as const;
export type JobState = (typeof JOB_STATES)[number];

export interface Transition {
  state: JobState;
  at: string;
  cause: 'webhook' | 'orchestrator' | 'reaper' | 'runner' | 'operator';
  note?: string | null;
}

export interface Job {
  id: string;
  github_job_id: number;
  run_id: number;
  run_attempt: number;
  repo: string;
  labels: string[];
  workflow_name: string | null;
  job_name: string | null;
  sender: string | null;
  html_url: string | null;
  project_id: string | null;
  pool_id: string | null;
  runner_id: string | null;
  runner_name: string | null;
  state: JobState;
  conclusion: string | null;
  attempts: number;
  failure_reason: string | null;
  cost_usd: number | null;
  transitions: Transition[];
  created_at: string;
  updated_at: string;
}

export const RUNNER_STATES = ['pending', 'registered', 'busy', 'done', 'failed', 'reaped'] as const;
export type RunnerState = (typeof RUNNER_STATES)[number];
export const LIVE_RUNNER_STATES: RunnerState[] = ['pending', 'registered', 'busy'];

export interface Runner {
  id: string;
  pool_id: string;
  project_id: string;
  job_id: string | null;
  name: string;
  state: RunnerState;
  instance_id: string | null;
  instance_type: string | null;
  availability_zone: string | null;
  market: string | null;
  price_per_hour_usd: number | null;
  github_runner_id: number | null;
  error_tail: string | null;
  created_at: string;
  updated_at: string;
}

/** `GET /api/jobs/{id}`: the job with the runner that took it. */
export interface JobView extends Job {
  runner: Runner | null;
}

export interface AuditEvent {
  id: string;
  at: string;
  actor: { kind: 'user' | 'github_sender' | 'workload' | 'system'; id: string };
  client_ip: string | null;
  action: string;
  target: string | null;
  detail: unknown;
}

export interface StatsBucket {
  key: string;
  name: string;
  jobs: number;
  completed: number;
  failed: number;
  cancelled: number;
  unmatched: number;
  runner_minutes: number;
  queue_p50_seconds: number | null;
  queue_p95_seconds: number | null;
}

export interface Stats {
  from: string;
  to: string;
  group_by: 'project' | 'pool' | 'repo' | 'day';
  in_flight: { queued: number; claimed: number; starting: number; running: number };
  total: StatsBucket;
  buckets: StatsBucket[];
}

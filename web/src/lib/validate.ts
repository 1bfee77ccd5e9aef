// Checks a form makes before it sends anything: the shape of what was
// typed (names, AWS ids, durations, numbers), so several mistakes show at
// once. The server is the judge: whatever it refuses comes back as a 422
// naming the field, shown beside that field (FormState). Rules that need
// Unicode's view of text (labels: their length in UTF-8 bytes, control and
// invisible formatting characters) or another object (a repository outside
// its project's org) are left to it, so the console cannot disagree with it.

export type Errors = Record<string, string>;

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const LOGIN = /^[A-Za-z0-9][A-Za-z0-9-]{0,38}$/;
const REPO_NAME = /^[A-Za-z0-9._-]{1,100}$/;

export function name(v: string): string | null {
  return NAME.test(v) ? null : "must be 1–64 characters of letters, digits, '-', '_' or '.', starting with a letter or digit";
}

export function login(v: string): string | null {
  return LOGIN.test(v) ? null : `"${v}" is not a GitHub account name (letters, digits and '-', at most 39)`;
}

export function repo(v: string): string | null {
  const s = v.trim();
  const [owner, rest, ...more] = s.split('/');
  if (rest === undefined || more.length > 0) return `"${s}" is not owner/name, like acme/app`;
  if (login(owner)) return `"${owner}" is not a GitHub account name`;
  if (!REPO_NAME.test(rest) || rest === '.' || rest === '..') return "a repository name is letters, digits, '-', '_' or '.'";
  return null;
}

export function email(v: string): string | null {
  const s = v.trim();
  const at = s.indexOf('@');
  if (at <= 0 || at === s.length - 1 || s.indexOf('@', at + 1) !== -1 || /\s/.test(s) || s.length > 254) {
    return `"${s}" is not an email address`;
  }
  return null;
}

export function int(v: string, min: number, max: number): string | null {
  const n = Number(v.trim());
  if (!/^-?\d+$/.test(v.trim()) || n < min || n > max) return `must be a whole number from ${min} to ${max}`;
  return null;
}

const UNIT_SECONDS: Record<string, number> = { ns: 1e-9, us: 1e-6, 'µs': 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 };

/** Seconds in a Go duration (`90s`, `10m`, `1h30m`), or null if it is not one. */
export function goDuration(v: string): number | null {
  const s = v.trim();
  if (!s || s === '0') return s === '0' ? 0 : null;
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/gy;
  let total = 0;
  let consumed = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * UNIT_SECONDS[m[2]];
    consumed = re.lastIndex;
  }
  return consumed === s.length ? total : null;
}

export function durationBetween(v: string, minS: number, maxS: number, minText: string, maxText: string): string | null {
  const d = goDuration(v);
  if (d === null) return `"${v.trim()}" is not a duration like 90s, 10m or 1h30m`;
  if (d < minS || d > maxS) return `must be between ${minText} and ${maxText}`;
  return null;
}

/** Splits a list typed as `a, b c` (commas or spaces) into its items. */
export function words(v: string): string[] {
  return v
    .split(/[\s,]+/)
    .map((x) => x.trim())
    .filter(Boolean);
}

/** Splits a list of labels typed as `linux, arm64` (commas only: a label may hold a space). */
export function labelList(v: string): string[] {
  return v
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
}

const AWS_ID = (prefix: string) => new RegExp(`^${prefix}[0-9a-f]{8,17}$`);
const INSTANCE_TYPE = /^[a-z0-9-]+\.[a-z0-9-]+$/;

export function listOf(items: string[], what: string, ok: (s: string) => boolean, required: boolean): string | null {
  if (required && items.length === 0) return 'needs at least one entry';
  const seen = new Set<string>();
  for (const i of items) {
    if (!ok(i)) return `"${i}" is not ${what}`;
    if (seen.has(i)) return `lists "${i}" twice`;
    seen.add(i);
  }
  return null;
}

export const instanceType = (s: string) => INSTANCE_TYPE.test(s);
export const subnet = (s: string) => AWS_ID('subnet-').test(s);
export const securityGroup = (s: string) => AWS_ID('sg-').test(s);

export function ami(v: string): string | null {
  const s = v.trim();
  if (AWS_ID('ami-').test(s)) return null;
  if (/^resolve:ssm:\/[A-Za-z0-9/_.:-]+$/.test(s)) return null;
  return `"${s}" is not an AMI id (ami-…) or resolve:ssm:/parameter/path`;
}

export function instanceProfile(v: string): string | null {
  const s = v.trim();
  if (!s) return null;
  const nameOk = (n: string) => n.length > 0 && n.length <= 128 && /^[A-Za-z0-9+=,.@_/-]+$/.test(n);
  if (s.startsWith('arn:')) {
    const i = s.indexOf(':instance-profile/');
    return s.includes(':iam::') && i > 0 && nameOk(s.slice(i + ':instance-profile/'.length)) ? null : `"${s}" is not an instance profile name or ARN`;
  }
  return nameOk(s) && !s.includes('/') ? null : `"${s}" is not an instance profile name or ARN`;
}

/** Keeps only the errors that are set. */
export function collect(entries: Record<string, string | null>): Errors {
  const out: Errors = {};
  for (const [k, v] of Object.entries(entries)) if (v) out[k] = v;
  return out;
}

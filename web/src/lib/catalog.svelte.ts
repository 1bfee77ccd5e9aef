// Projects and pools by id, so every page can show names instead of ids.
// Small lists: loaded whole, refreshed when a page changes one of them.

import { listAll } from './api';
import type { Pool, Project } from './types';

export const catalog = $state({
  projects: [] as Project[],
  pools: [] as Pool[],
  loaded: false,
});

let inflight: Promise<void> | null = null;

export function refreshCatalog(): Promise<void> {
  inflight ??= (async () => {
    try {
      const [projects, pools] = await Promise.all([listAll<Project>('/api/projects'), listAll<Pool>('/api/pools')]);
      projects.sort((a, b) => a.name.localeCompare(b.name));
      pools.sort((a, b) => a.name.localeCompare(b.name));
      catalog.projects = projects;
      catalog.pools = pools;
      catalog.loaded = true;
    } finally {
      inflight = null;
    }
  })();
  return inflight;
}

export function projectName(id: string | null | undefined): string {
  if (!id) return '—';
  return catalog.projects.find((p) => p.id === id)?.name ?? id;
}

export function poolName(id: string | null | undefined): string {
  if (!id) return '—';
  return catalog.pools.find((p) => p.id === id)?.name ?? id;
}

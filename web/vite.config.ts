import { defineConfig } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';

// `npm run dev` serves the console with hot reload and hands every /api
// request to a running pacer (default: `make run` on 127.0.0.1:3000), so the
// session cookie stays same-origin exactly as in production.
const pacer = process.env.PACER_URL ?? 'http://127.0.0.1:3000';

export default defineConfig({
  plugins: [svelte()],
  server: {
    host: '127.0.0.1',
    port: 5173,
    proxy: {
      '/api': { target: pacer, changeOrigin: false },
      '/healthz': { target: pacer },
    },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // One small bundle; no source maps shipped to S3 or into the binary.
    sourcemap: false,
    target: 'es2022',
  },
});

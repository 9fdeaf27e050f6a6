/// <reference types="vitest/config" />
import { defineConfig } from 'vite';

// No framework plugin: Vite's own transform compiles TSX with React's automatic runtime, and
// the dashboard has no use for fast refresh in production. Fewer packages, same output.
export default defineConfig({
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    // The server's CSP forbids inline scripts and styles: everything goes to files.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
  },
  server: {
    proxy: {
      '/v1': { target: process.env.ATLASBRIDGE_SERVER ?? 'http://127.0.0.1:8480', ws: true },
    },
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});

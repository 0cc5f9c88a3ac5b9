import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  cpuPerResponse,
  gatewayCpu,
  mainThreadCpuMs,
  processTreeCpuMs,
  processTreeRss,
  servingThreadsCpuMs,
} from './process-tree-stats.js';

const ownRssKiB = (pid: number) =>
  Number(/^VmRSS:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? Number.NaN);

describe('processTreeRss', () => {
  it('sums the RSS of a process and its children', async () => {
    const child = spawn(process.execPath, ['-e', "setTimeout(() => {}, 10_000); process.stdout.write('ready\\n');"], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    try {
      // Started (however slowly), then settled: its RSS no longer moves much between two reads.
      await once(child.stdout!, 'data');
      await new Promise((resolve) => setTimeout(resolve, 300));
      const tree = processTreeRss(process.pid);
      const pids = tree.processes.map((entry) => entry.pid);
      expect(pids).toContain(process.pid);
      expect(pids).toContain(child.pid);
      const childAlone = processTreeRss(child.pid!);
      expect(childAlone.processes).toHaveLength(1);
      // Read independently from /proc; RSS moves a little between two reads.
      expect(Math.abs(childAlone.totalKiB - ownRssKiB(child.pid!))).toBeLessThan(2048);
      expect(tree.totalKiB).toBe(tree.processes.reduce((sum, entry) => sum + entry.rssKiB, 0));
      expect(tree.totalKiB).toBeGreaterThan(childAlone.totalKiB);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('returns an empty tree for a process that does not exist', () => {
    expect(processTreeRss(2 ** 22 + 12345)).toEqual({ totalKiB: 0, processes: [] });
  });
});

describe('processTreeCpuMs', () => {
  it('grows by about the CPU time a child burns', async () => {
    // The child says when its busy loop starts and stays busy until it is killed, so the window measured below lies
    // inside the loop however late the timers fire.
    const child = spawn(
      process.execPath,
      ['-e', "process.stdout.write('busy\\n'); const end = Date.now() + 20_000; while (Date.now() < end);"],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    try {
      await once(child.stdout!, 'data');
      await new Promise((resolve) => setTimeout(resolve, 100));
      const started = performance.now();
      const before = processTreeCpuMs(child.pid!);
      await new Promise((resolve) => setTimeout(resolve, 400));
      const after = processTreeCpuMs(child.pid!);
      const wallMs = performance.now() - started;
      // A busy loop for the wall time between the two reads (400 ms, more if the timer fired late): at least a few
      // ticks of CPU even on a crowded machine, never more than that wall time and a few ticks of rounding.
      expect(after - before).toBeGreaterThanOrEqual(30);
      expect(after - before).toBeLessThanOrEqual(wallMs + 50);
    } finally {
      child.kill('SIGKILL');
    }
  });
});

describe('mainThreadCpuMs', () => {
  it("counts the main thread's time and not a worker thread's", async () => {
    // The main thread idles while a worker thread burns CPU until the child is killed; the child says when the worker
    // is running, so the window measured below lies inside the worker's loop however late the timers fire.
    const script =
      "const { Worker } = require('node:worker_threads');" +
      "const worker = new Worker('const end = Date.now() + 20_000; while (Date.now() < end);', { eval: true });" +
      "worker.on('online', () => process.stdout.write('online\\n'));" +
      'setTimeout(() => {}, 20_000);';
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      await once(child.stdout!, 'data');
      await new Promise((resolve) => setTimeout(resolve, 150));
      const processBefore = processTreeCpuMs(child.pid!);
      const mainBefore = mainThreadCpuMs(child.pid!);
      await new Promise((resolve) => setTimeout(resolve, 400));
      const processTime = processTreeCpuMs(child.pid!) - processBefore;
      const mainTime = mainThreadCpuMs(child.pid!) - mainBefore;
      expect(processTime).toBeGreaterThanOrEqual(30);
      expect(mainTime).toBeLessThan(processTime / 2);
    } finally {
      child.kill('SIGKILL');
    }
  });
});

describe('servingThreadsCpuMs', () => {
  it("counts the main threads of a cluster's workers, not its idle primary", async () => {
    // Like a cluster: the primary idles while its two children burn CPU on their main threads until killed. The
    // primary says when both run, so the window below lies inside their loops however late the timers fire.
    const burn = "'const end = Date.now() + 20_000; while (Date.now() < end);'";
    const script =
      "const { spawn } = require('node:child_process');" +
      `const children = [0, 1].map(() => spawn(process.execPath, ['-e', ${burn}], { stdio: 'ignore' }));` +
      "Promise.all(children.map((child) => new Promise((resolve) => child.on('spawn', resolve))))" +
      ".then(() => process.stdout.write('running\\n'));" +
      "process.on('SIGTERM', () => { for (const child of children) child.kill('SIGKILL'); process.exit(0); });" +
      'setTimeout(() => {}, 20_000);';
    const primary = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      await once(primary.stdout!, 'data');
      await new Promise((resolve) => setTimeout(resolve, 150));
      const servingBefore = servingThreadsCpuMs(primary.pid!);
      const primaryBefore = mainThreadCpuMs(primary.pid!);
      await new Promise((resolve) => setTimeout(resolve, 400));
      const serving = servingThreadsCpuMs(primary.pid!) - servingBefore;
      const primaryTime = mainThreadCpuMs(primary.pid!) - primaryBefore;
      expect(processTreeRss(primary.pid!).processes).toHaveLength(3);
      expect(serving).toBeGreaterThanOrEqual(30);
      expect(primaryTime).toBeLessThan(serving / 4);
    } finally {
      primary.kill('SIGTERM');
      await once(primary, 'exit');
    }
  });
});

describe('cpuPerResponse', () => {
  it('divides the CPU between two readings by the responses, tree and main thread apart', () => {
    expect(cpuPerResponse({ treeMs: 100, mainMs: 40 }, { treeMs: 350, mainMs: 190 }, 1000)).toEqual({
      cpuUs: 250,
      mainCpuUs: 150,
    });
  });

  it('reads a live process with its main thread inside its tree', () => {
    const reading = gatewayCpu(process.pid);
    expect(reading.treeMs).toBeGreaterThan(0);
    expect(reading.mainMs).toBeLessThanOrEqual(reading.treeMs);
  });
});

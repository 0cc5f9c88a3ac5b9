/**
 * Resident memory and CPU time of a process and all its descendants, read from Linux's `/proc` (`VmRSS` of
 * `/proc/PID/status`, `utime + stime` of `/proc/PID/stat`), so that a gateway running several worker processes is
 * measured whole.
 */
import { readdirSync, readFileSync } from 'node:fs';

/** RSS of one process tree, KiB. */
export interface ProcessTreeRss {
  /** Sum over the tree, KiB. */
  totalKiB: number;
  /** Each process of the tree: pid, parent pid, command name and RSS in KiB. */
  processes: { pid: number; parent: number; name: string; rssKiB: number }[];
}

function readStatus(pid: number): { name: string; parent: number; rssKiB: number } | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch (error: unknown) {
    // The process ended between listing /proc and reading it: it simply is not part of the tree any more.
    void error;
    return undefined;
  }
  const field = (key: string) => new RegExp(`^${key}:\\s*(.*)$`, 'm').exec(text)?.[1]?.trim();
  // Kernel threads and zombies have no VmRSS line: they hold no user memory.
  const rss = field('VmRSS');
  return {
    name: field('Name') ?? '?',
    parent: Number(field('PPid') ?? 0),
    rssKiB: rss === undefined ? 0 : Number.parseInt(rss, 10),
  };
}

/** RSS of `rootPid` and every process below it. */
export function processTreeRss(rootPid: number): ProcessTreeRss {
  const childrenOf = new Map<number, number[]>();
  const statuses = new Map<number, { name: string; parent: number; rssKiB: number }>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    const status = readStatus(pid);
    if (status === undefined) continue;
    statuses.set(pid, status);
    const siblings = childrenOf.get(status.parent) ?? [];
    siblings.push(pid);
    childrenOf.set(status.parent, siblings);
  }
  const processes: ProcessTreeRss['processes'] = [];
  const pending = [rootPid];
  while (pending.length > 0) {
    const pid = pending.pop()!;
    const status = statuses.get(pid);
    if (status === undefined) continue;
    processes.push({ pid, parent: status.parent, name: status.name, rssKiB: status.rssKiB });
    pending.push(...(childrenOf.get(pid) ?? []));
  }
  return { totalKiB: processes.reduce((sum, process) => sum + process.rssKiB, 0), processes };
}

/** Clock ticks per second of `/proc/PID/stat` times (`getconf CLK_TCK`; 100 on Linux). */
const clockTicksPerSecond = 100;

/** utime + stime of `/proc/<path>/stat`: a process (`PID`) or one of its threads (`PID/task/TID`). */
function readCpuTicks(path: number | string): number {
  let text: string;
  try {
    text = readFileSync(`/proc/${path}/stat`, 'utf8');
  } catch (error: unknown) {
    // Gone since the tree was listed: its time is no longer counted anywhere we can read.
    void error;
    return 0;
  }
  // The command name (field 2) may hold spaces and parentheses: count fields from the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
  return Number(fields[11]) + Number(fields[12]);
}

/** CPU time (user + system) used so far by `rootPid` and every live process below it, ms (10 ms resolution). */
export function processTreeCpuMs(rootPid: number): number {
  const { processes } = processTreeRss(rootPid);
  const ticks = processes.reduce((sum, entry) => sum + readCpuTicks(entry.pid), 0);
  return (ticks * 1000) / clockTicksPerSecond;
}

/**
 * CPU time (user + system) used so far by the main thread of process `pid` alone, ms (10 ms resolution). With
 * `processTreeCpuMs` of a one-process gateway it splits the gateway's time between the event loop and its other
 * threads (the settle and checkpoint threads, the garbage collector's helpers, libuv's pool).
 */
export function mainThreadCpuMs(pid: number): number {
  return (readCpuTicks(`${pid}/task/${pid}`) * 1000) / clockTicksPerSecond;
}

/**
 * CPU time used so far by the serving threads below `rootPid`, ms: the main threads of the tree's leaf processes.
 * A one-process gateway is its own leaf; a cluster's primary, which only starts and watches its workers, is not.
 */
export function servingThreadsCpuMs(rootPid: number): number {
  const { processes } = processTreeRss(rootPid);
  const parents = new Set(processes.map((entry) => entry.parent));
  return processes
    .filter((entry) => !parents.has(entry.pid))
    .reduce((sum, entry) => sum + mainThreadCpuMs(entry.pid), 0);
}

/** CPU used so far by a gateway, ms: its whole process tree, and its serving threads alone. */
export interface GatewayCpu {
  treeMs: number;
  mainMs: number;
}

/** A reading of `GatewayCpu` for the gateway whose (main) process is `pid`. */
export function gatewayCpu(pid: number): GatewayCpu {
  return { treeMs: processTreeCpuMs(pid), mainMs: servingThreadsCpuMs(pid) };
}

/** CPU per response between two readings, µs: the whole tree (`cpuUs`) and the main thread (`mainCpuUs`). */
export function cpuPerResponse(
  before: GatewayCpu,
  after: GatewayCpu,
  responses: number,
): { cpuUs: number; mainCpuUs: number } {
  return {
    cpuUs: ((after.treeMs - before.treeMs) * 1000) / responses,
    mainCpuUs: ((after.mainMs - before.mainMs) * 1000) / responses,
  };
}

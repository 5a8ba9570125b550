import type { LastError, StreamCounters } from './stream-stats.ts';
import type { UpdateStatus } from '../update/updater.ts';

/** The long-running commands that serve a control socket. */
export type AgentRole = 'publish' | 'socksd' | 'bind' | 'relay';
export const AGENT_ROLES: readonly AgentRole[] = ['publish', 'socksd', 'bind', 'relay'];

/** Where an agent's relay link stands. */
export interface LinkStatus {
  connected: boolean;
  /** The relay dialled (host:port) for the current session, or the one being tried. */
  relay?: string;
  /** The relay's proven address once connected. */
  relayAddress?: string;
  /** Whether the relay's address is pinned (the session is refused if it differs). */
  pinned: boolean;
  /** ms since the epoch: when the current session came up. */
  since?: number;
  lastError?: LastError;
  /** The relays given by --relay or the config, in order of preference. */
  configured?: string[];
  /** Relays learned from pinned relays (tried after the configured ones fail), most recently seen first. */
  learned?: Array<{ relay: string; lastSeen: number }>;
  /** Addresses of relays that said they retire (tried last). */
  retired?: string[];
  /** The current (or last) relay is a learned one. */
  onLearned?: boolean;
}

/** One published port as the device runs it. */
export interface PortStatus {
  port: number;
  mode: string;
  /** host:port the device connects to */
  local: string;
  /** private ports: how many addresses the allow list holds */
  allowed?: number;
}

/** One name a device claims. */
export interface NameStatus {
  name: string;
  state: 'pending' | 'held' | 'refused';
  relay?: string;
  holder?: string;
  message?: string;
}

/**
 * What one running agent reports on its control socket (and `diode status
 * --json` prints, in a list). Fields a role does not have are absent.
 */
export interface AgentStatus {
  role: AgentRole;
  pid: number;
  version: string;
  address: string;
  /** ms since the epoch */
  startedAt: number;
  /** Connected to a relay (publish, socksd, bind), or listening (relay). */
  connected: boolean;
  link?: LinkStatus;
  ports?: PortStatus[];
  /** publish: the names it claims and where each stands (held, refused by whom, pending). */
  names?: NameStatus[];
  /** What this agent listens on (socksd, bind, relay, its gateway). */
  listening?: string[];
  streams: StreamCounters;
  /** relay: agent sessions now */
  sessions?: number;
  /** relay: bytes streams make it hold now (partial frames, unanswered early bytes, what slow far sides have not taken) */
  buffered?: number;
  /** publish: releases (update-keys), the last check, rollbacks */
  update?: UpdateStatus;
  /** relay: its named counters (the ones it prints on shutdown) */
  counters?: Record<string, number>;
  /** relay: it retires (diode relay --retire-to): where its agents go, how many moved, until when */
  retiring?: { to: string[]; since: number; deadline: number; moved: number; remaining: number };
  lastError?: LastError;
}

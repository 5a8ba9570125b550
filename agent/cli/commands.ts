import type { FlagSpec, ParsedArgs } from './args.ts';
import { DEFAULT_GATEWAY_LIMITS } from '../gateway/limits.ts';
import { RELAY_LIMIT_FLAGS } from '../relay/config.ts';

export interface CommandContext {
  home: string;
  /**
   * Resolves when SIGINT/SIGTERM arrives; long-running commands await it and
   * clean up. Reading it installs the handlers (from then on the signals no
   * longer end the process by themselves): see CommandSpec.untilStopped.
   */
  readonly stopSignal: Promise<string>;
}

export interface CommandModule {
  run(args: ParsedArgs, ctx: CommandContext): Promise<number | void>;
}

export interface CommandSpec {
  name: string;
  summary: string;
  usage: string;
  flags: FlagSpec[];
  /** More help after the flags (loaded only for --help). */
  details?: () => Promise<string>;
  /** Loaded lazily so `diode publish` never loads the fleet admin code. */
  load: () => Promise<CommandModule>;
  /**
   * The command parses its own arguments (`service install` takes another
   * command's flags): it gets them as positionals, unparsed; `flags` is only
   * for --help.
   */
  rawArgs?: boolean;
  /**
   * The command runs until stopped and cleans up on SIGINT/SIGTERM
   * (ctx.stopSignal): the handlers are installed before it starts. Others
   * keep the signals' default action, so that `kill` ends a `diode proxy`
   * or a `diode query` at once (a handler nobody awaited swallowed them).
   */
  untilStopped?: boolean;
}

const home: FlagSpec = { name: 'home', type: 'string', placeholder: 'DIR', description: 'state directory (key, config); env DIODE_HOME; default ~/.config/diode, for root /var/lib/diode while root owns it' };
const help: FlagSpec = { name: 'help', type: 'boolean', description: 'show this help' };
const logLevel: FlagSpec = { name: 'log-level', type: 'string', placeholder: 'LEVEL', description: 'stderr log level: debug, info, warn or error; env DIODE_LOG; default info' };
const metrics: FlagSpec = { name: 'metrics', type: 'string', placeholder: 'HOST:PORT', description: 'serve Prometheus metrics on http://HOST:PORT/metrics and /healthz (e.g. 127.0.0.1:9464)' };
const logFormat: FlagSpec = { name: 'log-format', type: 'string', placeholder: 'text|json', description: 'log line format on stderr; env DIODE_LOG_FORMAT (default text)' };
const relay: FlagSpec = { name: 'relay', type: 'string', multiple: true, placeholder: 'HOST:PORT', description: 'relay to use (comma-separated list allowed); overrides the "relays" config key' };

export const COMMANDS: readonly CommandSpec[] = [
  {
    name: 'publish',
    untilStopped: true,
    summary: 'publish local ports of this device through a relay',
    usage: 'diode publish -public 22:22 [-private 80:8080,0xADDR[,0xADDR]] [--name kitchen] [--relay host:port]',
    flags: [
      { name: 'public', type: 'string', multiple: true, placeholder: '[HOST:]LOCAL[:REMOTE][,...]', description: 'publish to anyone' },
      { name: 'private', type: 'string', multiple: true, placeholder: '[HOST:]LOCAL[:REMOTE],0xADDR[,0xADDR...]', description: 'publish to the listed client addresses only' },
      { name: 'protected', type: 'string', multiple: true, placeholder: '[HOST:]LOCAL[:REMOTE][,...]', description: 'publish to members of the fleet contract (config keys fleet, rpc)' },
      { name: 'name', type: 'string', multiple: true, placeholder: 'NAME', description: 'claim NAME at the relay, so clients reach this device as NAME.diode (first claim wins); default: the "name" config key' },
      relay,
      metrics,
      { name: 'status-file', type: 'string', placeholder: 'PATH', description: 'write the relay link\'s state (state=, text=) to PATH whenever it changes (e.g. /run/diode/link.status)' },
      logFormat,
      home,
      logLevel,
      help,
    ],
    load: () => import('./commands/publish.ts'),
  },
  {
    name: 'socksd',
    untilStopped: true,
    summary: 'run a local SOCKS5/4a proxy that resolves <name>.diode and <address>.diode',
    usage: 'diode socksd [--listen 127.0.0.1:1080 [--allow-remote]] [--fallback direct|refuse] [--relay host:port]',
    flags: [
      { name: 'listen', type: 'string', placeholder: 'HOST:PORT', defaultValue: '127.0.0.1:1080', description: 'where the proxy listens (port 0 picks a free one); beyond loopback needs --allow-remote' },
      { name: 'allow-remote', type: 'boolean', description: 'allow --listen on a non-loopback address: anyone who reaches it then acts with this machine\'s key' },
      { name: 'fallback', type: 'string', placeholder: 'direct|refuse', defaultValue: 'refuse', description: 'names that are not <address>.diode: refuse them, or connect directly (DNS lookup and TCP from this machine; for a browser\'s system proxy). For a client on another machine (--allow-remote) never to this machine\'s loopback, its own or link-local addresses' },
      relay,
      metrics,
      logFormat,
      home,
      logLevel,
      help,
    ],
    load: () => import('./commands/socksd.ts'),
  },
  {
    name: 'proxy',
    summary: "connect stdin/stdout to a device port (ssh's ProxyCommand)",
    usage: 'diode proxy <name or address>.diode <port> [--relay host:port]   (in ~/.ssh/config: ProxyCommand diode proxy %h %p)',
    flags: [relay, logFormat, home, logLevel, help],
    load: () => import('./commands/proxy.ts'),
  },
  {
    name: 'ssh-config',
    summary: 'print (or --install) the ~/.ssh/config block that makes `ssh user@<name>.diode` work',
    usage: 'diode ssh-config [--install] [--relay host:port] [--home DIR]',
    flags: [
      { name: 'install', type: 'boolean', description: 'add the block to ~/.ssh/config once (keeps the rest, writes a backup)' },
      relay,
      home,
      logLevel,
      help,
    ],
    load: () => import('./commands/ssh-config.ts'),
  },
  {
    name: 'bind',
    untilStopped: true,
    summary: 'forward a 127.0.0.1 port to a device port',
    usage: 'diode bind <local-port>:<name or address>.diode:<remote-port>[,...] [...] [--relay host:port]',
    flags: [
      { name: 'bind', type: 'string', multiple: true, placeholder: 'LOCAL:NAME.diode:REMOTE[,...]', description: 'same as a positional spec (as the Diode client\'s -bind)' },
      relay,
      logFormat,
      home,
      logLevel,
      help,
    ],
    load: () => import('./commands/bind.ts'),
  },
  {
    name: 'relay',
    untilStopped: true,
    summary: 'run a relay that authenticates agents and routes their streams',
    usage: 'diode relay [--listen 0.0.0.0:41046] [--retire-to 0xB@host:41046] [--cluster redis://host:6379 --advertise host:41046 --cluster-allow 0xA,0xB,0xC] [--gateway-socks 0.0.0.0:1080] [--gateway-http 0.0.0.0:80 --gateway-domain example.org] [--gateway-https 0.0.0.0:443 --gateway-cert FILE --gateway-key FILE]',
    flags: [
      { name: 'listen', type: 'string', placeholder: 'HOST:PORT', defaultValue: '0.0.0.0:41046', description: 'where agents connect (port 0 picks a free one)' },
      { name: 'cluster', type: 'string', placeholder: 'REDIS-URL[,...]', description: 'join a relay cluster sharing the device map in Redis: redis://host:port, a Redis Cluster (redis://h1:p1,redis://h2:p2 or redis+cluster://h1:p1,h2:p2) or Sentinel (redis+sentinel://h1:p1,h2:p2/MASTER)' },
      { name: 'advertise', type: 'string', placeholder: 'HOST:PORT', description: 'with --cluster: where the other relays reach this one (its --listen as seen from them)' },
      { name: 'advertise-agents', type: 'string', placeholder: 'HOST:PORT', description: 'with --cluster: where agents reach this relay, as the relays of the cluster name it to their agents (pinned; default: --advertise)' },
      { name: 'cluster-allow', type: 'string', multiple: true, placeholder: '0xADDR[,0xADDR...]', description: 'with --cluster: addresses of the relays of the cluster: the only ones that may link to this one, that it links to, and whose device map entries it believes (diode address --home <their home>)' },
      { name: 'cluster-password-file', type: 'string', placeholder: 'FILE', description: 'with --cluster: the Redis password (or ACL user\'s password; the user goes in the URL) from the first line of FILE, not readable by every user; or set DIODE_CLUSTER_PASSWORD. A password in the --cluster URL is refused (the process list shows it)' },
      { name: 'gateway-socks', type: 'string', placeholder: 'HOST:PORT', description: 'public SOCKS5/4a gateway to PUBLIC ports of <address>.diode (no agent needed)' },
      { name: 'gateway-http', type: 'string', placeholder: 'HOST:PORT', description: 'public HTTP gateway: Host <address>[-<port>].<gateway-domain> reaches that PUBLIC port (80 by default)' },
      { name: 'gateway-https', type: 'string', placeholder: 'HOST:PORT', description: 'HTTPS on the same router as --gateway-http (needs --gateway-cert, --gateway-key)' },
      { name: 'gateway-domain', type: 'string', placeholder: 'DOMAIN', description: 'domain the HTTP(S) and SOCKS gateways serve as <address>.DOMAIN (.diode always works)' },
      { name: 'gateway-cert', type: 'string', placeholder: 'FILE', description: 'PEM certificate (chain) for --gateway-https' },
      { name: 'gateway-key', type: 'string', placeholder: 'FILE', description: 'PEM private key for --gateway-https' },
      { name: 'gateway-max-conns', type: 'string', placeholder: 'N', defaultValue: String(DEFAULT_GATEWAY_LIMITS.maxConns), description: 'concurrent gateway connections in total; over it: SOCKS general failure, HTTP 503' },
      { name: 'gateway-max-conns-per-ip', type: 'string', placeholder: 'N', defaultValue: String(DEFAULT_GATEWAY_LIMITS.maxConnsPerIp), description: 'concurrent gateway connections per IPv4 address / IPv6 /64; over it: SOCKS general failure, HTTP 429' },
      { name: 'gateway-idle-timeout', type: 'string', placeholder: 'SECONDS', defaultValue: String(DEFAULT_GATEWAY_LIMITS.idleTimeoutMs / 1000), description: 'close a gateway connection after this long with no byte either way' },
      { name: 'releases', type: 'string', placeholder: 'DIR', description: 'serve the signed releases in DIR (diode release sign writes them) to agents; read again every minute and on SIGHUP' },
      { name: 'retire-to', type: 'string', multiple: true, placeholder: '0xADDR@HOST:PORT[,...]', description: 'retire this relay: tell every agent to move to these (pinned) relays, then exit when none is left; given while a relay of this --home runs, the order goes to that relay' },
      { name: 'retire-deadline', type: 'string', placeholder: 'SECONDS', description: 'with --retire-to: exit at the latest this long after the order, closing what is left (default 600)' },
      ...RELAY_LIMIT_FLAGS.map((f): FlagSpec => ({ ...f, type: 'string' })),
      metrics,
      logFormat,
      home,
      logLevel,
      help,
    ],
    load: () => import('./commands/relay.ts'),
  },
  {
    name: 'query',
    summary: 'ask the relay whether a device is online and which of its ports you may use; --ping times the round trip',
    usage: 'diode query <name> | 0x<address> [--ping [--count N]] [--json] [--relay host:port]   (exit 0: online, 1: offline or no such name, 3: unknown, no relay answered)',
    flags: [
      { name: 'ping', type: 'boolean', description: 'also measure round trips to the device through the relay' },
      { name: 'count', type: 'string', placeholder: 'N', description: 'round trips for --ping (default 3)' },
      { name: 'json', type: 'boolean', description: 'print one JSON object' },
      relay,
      home,
      logLevel,
      help,
    ],
    load: () => import('./commands/query.ts'),
  },
  {
    name: 'name',
    summary: 'your own names for devices (set | list | rm), and forget a name this machine pinned from a relay',
    usage: [
      'diode name set <name> 0x<address>   name a device yourself: <name>.diode reaches it (looked up before any relay)',
      'diode name list [--json]            your names, and the ones pinned when a relay first taught them',
      'diode name rm <name>                remove one of your names',
      'diode name forget <name>            drop a pin (after a device really changed its key): the next lookup pins anew',
    ].join('\n'),
    flags: [{ name: 'json', type: 'boolean', description: 'list: print a JSON array' }, home, logLevel, help],
    load: () => import('./commands/name.ts'),
  },
  {
    name: 'status',
    summary: 'show the agents running with this state directory: relay, ports, streams, last error',
    usage: 'diode status [--json]   (exit 0: connected, 1: running but not connected, 3: nothing runs)',
    flags: [{ name: 'json', type: 'boolean', description: 'print a JSON array, one object per agent, for scripts' }, home, help],
    load: () => import('./commands/status.ts'),
  },
  {
    name: 'service',
    summary: 'install | uninstall | status: run publish, socksd, bind or relay as a systemd service',
    usage: [
      'diode service install [--user] [--print] <publish|socksd|bind|relay> [its flags]',
      '  e.g. sudo diode service install publish -public 22:22 --relay 0xRELAY@relay.example.org:41046',
      '  writes /etc/systemd/system/diode-<command>.service (--user: ~/.config/systemd/user/), enables and starts it;',
      '  --print only prints the unit',
      'diode service uninstall [--user] <command>     stops, disables and removes the unit (the key stays)',
      'diode service status [--user] [<command>]      systemctl status of the diode units',
    ].join('\n'),
    flags: [
      { name: 'user', type: 'boolean', description: 'a user unit (systemctl --user) instead of a system one' },
      { name: 'print', type: 'boolean', description: 'install: print the unit, change nothing' },
      help,
    ],
    rawArgs: true,
    load: () => import('./commands/service.ts'),
  },
  {
    name: 'address',
    summary: "print this machine's client address (creates the key on first run)",
    usage: 'diode address [--qr]',
    flags: [
      { name: 'qr', type: 'boolean', description: 'also draw the address as a QR code (black on white, 4-module quiet zone: scans on light and dark themes and the Linux console)' },
      { name: 'qr-theme', type: 'string', placeholder: 'color|light|dark', description: 'with --qr: color draws explicit black on white; light/dark draw plain characters for a light/dark terminal background (no colour codes)' },
      home,
      logLevel,
      help,
    ],
    load: () => import('./commands/address.ts'),
  },
  {
    name: 'config',
    summary: 'show or change settings',
    usage: 'diode config -set relays=host:port [-set key=value] | -list | -delete key',
    flags: [
      { name: 'set', type: 'string', multiple: true, placeholder: 'KEY=VALUE', description: 'set a key (validated)' },
      { name: 'delete', type: 'string', multiple: true, placeholder: 'KEY', description: 'remove a key' },
      { name: 'list', type: 'boolean', description: 'print every key that is set, then the relays in effect and where they come from' },
      relay,
      home,
      logLevel,
      help,
    ],
    details: async () => {
      const { CONFIG_KEYS } = await import('../config/keys.ts');
      const width = Math.max(...Object.keys(CONFIG_KEYS).map((k) => k.length)) + 4;
      return ['keys (in <home>/config.json):', ...Object.entries(CONFIG_KEYS).map(([k, v]) => `  ${k.padEnd(width)}${v.description}`)].join('\n');
    },
    load: () => import('./commands/config.ts'),
  },
  {
    name: 'update',
    summary: 'apply a signed release by hand (the checks an agent makes on one from its relay), then restart into it',
    usage: 'diode update --from FILE [--home DIR]   (FILE: the executable, its FILE.release.json beside it; or the manifest)',
    flags: [
      { name: 'from', type: 'string', placeholder: 'FILE', description: 'the release to apply: the executable or its .release.json' },
      home,
      logLevel,
      help,
    ],
    load: () => import('./commands/update.ts'),
  },
  {
    name: 'release',
    summary: 'make a release key, sign a release (an executable and its manifest) for relays to serve',
    usage: [
      'diode release keygen --key-file FILE      make a release key (mode 0600); prints its address for update-keys',
      'diode release sign --key-file FILE EXECUTABLE [--out MANIFEST] [--arch ARCH] [--release-version V]',
      '  writes EXECUTABLE.release.json (version, architecture, size, SHA-256, signature); copy both to a relay\'s --releases DIR',
    ].join('\n'),
    flags: [
      { name: 'key-file', type: 'string', placeholder: 'FILE', description: 'the release key (0x + 64 hex digits, mode 0600)' },
      { name: 'out', type: 'string', placeholder: 'FILE', description: 'sign: where the manifest goes (default EXECUTABLE.release.json)' },
      { name: 'arch', type: 'string', placeholder: 'ARCH', description: 'sign: linux-x64, linux-arm64 or linux-armv7; read from the ELF header, needed only for a file that is not ELF' },
      { name: 'release-version', type: 'string', placeholder: 'V', description: 'sign: the version, read from the build\'s diode-version mark; needed only for a file without one' },
      logLevel,
      help,
    ],
    load: () => import('./commands/release.ts'),
  },
  {
    name: 'fleet',
    summary: 'administer a fleet contract: deploy | add | remove | list | check | ui',
    usage: [
      'diode fleet <subcommand> [flags]',
      '  deploy               deploy a new fleet contract owned by the admin key; prints its address',
      '  add 0xADDR...        add client addresses to the fleet',
      '  remove 0xADDR...     remove client addresses from the fleet',
      '  list                 print every member, one per line',
      '  check 0xADDR         exit 0 if a member, 1 if not, 3 on an error',
      '  ui                   serve the admin web page (an injected wallet such as MetaMask signs)',
      'The admin key (deploy, add, remove) comes from $DIODE_ADMIN_KEY or --admin-key-file, never from a flag value.',
    ].join('\n'),
    flags: [
      { name: 'rpc', type: 'string', placeholder: 'URL', description: 'JSON-RPC endpoint of the chain; default: the "rpc" config key' },
      { name: 'fleet', type: 'string', placeholder: '0xADDR', description: 'fleet contract address; default: the "fleet" config key' },
      { name: 'admin-key-file', type: 'string', placeholder: 'FILE', description: 'file holding the admin private key (64 hex digits); default: $DIODE_ADMIN_KEY' },
      { name: 'listen', type: 'string', placeholder: 'HOST:PORT', defaultValue: '127.0.0.1:0', description: 'ui: where the page is served (port 0 picks a free one)' },
      home,
      logLevel,
      help,
    ],
    load: () => import('./commands/fleet.ts'),
  },
];

/** Flags also accepted before the command (`diode --home X address`), for the commands that take them. */
export const GLOBAL_FLAGS: readonly FlagSpec[] = [home, relay, logLevel];

export function findCommand(name: string): CommandSpec | undefined {
  return COMMANDS.find((c) => c.name === name);
}

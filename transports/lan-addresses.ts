/**
 * The LAN's addresses: where a device's LAN node listens and whether it
 * can, which addresses its links admit, and whether the peers it is told
 * to dial are among them (createDevice asks before it opens anything).
 * Apart from the libp2p transport, which loads libp2p: this module loads
 * nothing but Node's `net` (and the multiaddr parser when asked).
 */
import { BlockList, createServer as createNetServer, isIPv6 } from 'node:net'
import type { Multiaddr } from '@multiformats/multiaddr'
import { InvalidOptionsError } from '../core/errors.js'

/** Which remote addresses a node dials and accepts. */
export type LanScope = 'loopback' | 'lan'

const LOOPBACK = new BlockList()
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4')
LOOPBACK.addAddress('::1', 'ipv6')

const PRIVATE_LAN = new BlockList()
PRIVATE_LAN.addSubnet('10.0.0.0', 8, 'ipv4')
PRIVATE_LAN.addSubnet('172.16.0.0', 12, 'ipv4')
PRIVATE_LAN.addSubnet('192.168.0.0', 16, 'ipv4')
PRIVATE_LAN.addSubnet('169.254.0.0', 16, 'ipv4')
PRIVATE_LAN.addSubnet('fc00::', 7, 'ipv6')
PRIVATE_LAN.addSubnet('fe80::', 10, 'ipv6')

/** True when `ma` is an IP address within `scope` (names are never in scope). */
export function addressInScope(ma: Multiaddr, scope: LanScope): boolean {
  const ip = ma.getComponents().find((c) => c.name === 'ip4' || c.name === 'ip6')
  if (ip?.value === undefined) return false
  const family = ip.name === 'ip6' ? 'ipv6' : 'ipv4'
  if (LOOPBACK.check(ip.value, family)) return true
  return scope === 'lan' && PRIVATE_LAN.check(ip.value, family)
}

/** The multiaddr a LAN node listens on (127.0.0.1 and a free port unless told). */
export function listenAddress(host: string, port: number | undefined): string {
  return `/${isIPv6(host) ? 'ip6' : 'ip4'}/${host}/tcp/${port ?? 0}`
}

/**
 * Whether a LAN node could listen at `host`:`port` now (a port in use, an
 * address this host lacks): `INVALID_OPTIONS` as createLanNode's own
 * failure says it. createDevice asks before it opens anything: found only
 * at the LAN's start, the device had written its data directory and joined
 * its server, which then bound its id to a key no retry on a fresh
 * directory had (a probe).
 */
export async function checkLanListen(host = '127.0.0.1', port?: number): Promise<void> {
  const probe = createNetServer()
  try {
    await new Promise<void>((resolve, reject) => {
      probe.once('error', reject)
      probe.listen({ host, port: port ?? 0, exclusive: true }, resolve)
    })
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? ''
    // Checked before the data directory is opened: a second copy of a
    // running device is told here, not by the directory's lock (a review).
    const hint =
      code === 'EADDRINUSE' ? ' (another process holds it: is this device running already?)' : ''
    const why = `${code}: ${(error as Error).message}${hint}`
    throw new InvalidOptionsError(
      `cannot listen on the LAN at ${listenAddress(host, port)}: ${why}`.slice(0, 300),
    )
  } finally {
    await new Promise<void>((resolve) =>
      probe.listening ? probe.close(() => resolve()) : resolve(),
    )
  }
}

/**
 * Checks the LAN peers' addresses: `INVALID_OPTIONS` naming the first that
 * is no multiaddr, or that no link would ever dial (not over TCP, or not an
 * IP address in scope: the links admit loopback and private addresses
 * only, and never a name). Accepted, such a peer was redialled for ever,
 * with nothing said (a probe: `''`, `/ip4/8.8.8.8/…`, `/…/udp/…/quic-v1`,
 * `/dns4/…`). createDevice asks before it opens anything, so a bad one
 * changes nothing.
 */
export async function checkLanPeers(
  peers: readonly string[],
  scope: LanScope = 'lan',
): Promise<void> {
  if (peers.length === 0) return
  const { multiaddr } = await import('@multiformats/multiaddr')
  for (const addr of peers) {
    let ma: Multiaddr
    try {
      ma = multiaddr(addr)
    } catch (cause) {
      throw new InvalidOptionsError(`LAN peer ${JSON.stringify(addr)} is not a multiaddr`, cause)
    }
    // Exactly an IP address, a TCP port and maybe a peer id: the TCP
    // transport dials nothing else (`/ws`, `/tls`, a zone, a relay: a review).
    const names = ma.getComponents().map((c) => c.name)
    const [ip, tcp, p2p, ...rest] = names
    if (
      (ip !== 'ip4' && ip !== 'ip6') ||
      tcp !== 'tcp' ||
      (p2p !== undefined && p2p !== 'p2p') ||
      rest.length > 0
    )
      throw new InvalidOptionsError(
        `LAN peer ${JSON.stringify(addr)} is not over TCP (/ip4/<address>/tcp/<port>/p2p/<peer id>)`,
      )
    if (!addressInScope(ma, scope))
      throw new InvalidOptionsError(
        `LAN peer ${JSON.stringify(addr)} is not a ${scope === 'lan' ? 'loopback or private' : 'loopback'} IP address: LAN links never dial it`,
      )
  }
}

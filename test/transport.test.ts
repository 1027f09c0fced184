/** Every transport runs the same contract. */
import type { AddressInfo } from 'node:net'
import { WebSocketServer } from 'ws'
import type { Connection } from '../core/transport.js'
import { memoryPair } from '../transports/memory-transport.js'
import { wrapWebSocket, wsConnect } from '../transports/ws-transport.js'
import { runTransportContract } from './contracts/transport.contract.js'

runTransportContract('memory', async () => {
  const [a, b] = memoryPair()
  return { a, b, cleanup: async () => undefined }
})

runTransportContract('WebSocket on 127.0.0.1', async () => {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  await new Promise((resolve) => wss.once('listening', resolve))
  const accepted = new Promise<Connection>((resolve) =>
    wss.once('connection', (ws) => resolve(wrapWebSocket(ws, 'client'))),
  )
  const a = await wsConnect(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`)
  const b = await accepted
  return {
    a,
    b,
    cleanup: async () => {
      a.close()
      b.close()
      await new Promise((resolve) => wss.close(resolve))
    },
  }
})

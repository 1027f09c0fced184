/**
 * The user a refusal concerns travels at the end of the server's error
 * message (` (user "<id>")`, PROTOCOL.md "Refusals"); a device reads it
 * back exactly, and what parses the rest of the message never sees it: a
 * user id may hold any text ("; peer time 5" included).
 */
import { describe, expect, it } from 'vitest'
import { InvalidRecordError } from '../core/errors.js'
import { userOfMessage, withUser, withoutUser } from '../peers/sync-session/inbound.js'

describe("the user named by a server's error message", () => {
  it('is read back exactly, whatever the id holds, and stripped for the parsers', () => {
    const base = "update holds a stamp 3 ahead of this peer's time 2; peer time 1796000000000"
    for (const id of ['u1', 'x; peer time 5 (user "y")', 'quote " and \\ back', '💳 card', ')']) {
      const message = withUser(new InvalidRecordError('x', { userId: id }), base)
      expect(userOfMessage(message)).toBe(id)
      expect(withoutUser(message)).toBe(base)
    }
    // No user: the message as it is.
    expect(withUser(new InvalidRecordError('x'), base)).toBe(base)
    expect(userOfMessage(base)).toBeUndefined()
    expect(withoutUser(base)).toBe(base)
  })
})

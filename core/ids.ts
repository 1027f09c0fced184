/**
 * Branded identifiers. A `UserId` and a `WriterId` are both strings on the
 * wire; the brands stop one being passed where the other is meant.
 */
declare const userIdBrand: unique symbol
declare const writerIdBrand: unique symbol

/** The id of a user record. */
export type UserId = string & { readonly [userIdBrand]: true }
/** The id of a writer: `server` or a device id. */
export type WriterId = string & { readonly [writerIdBrand]: true }
/** A device id is a writer id other than `server`. */
export type DeviceId = WriterId

/** The server's writer id. */
export const SERVER_ID = 'server' as WriterId

/** Brands a string already validated as a user id. */
export const asUserId = (id: string): UserId => id as UserId
/** Brands a string already validated as a writer id. */
export const asWriterId = (id: string): WriterId => id as WriterId

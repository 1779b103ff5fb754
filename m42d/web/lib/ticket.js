// Room tickets as a client sees them: structure only, no key.
// Python twin: m42d/ticket.py (Ticket.parse, Seat, the size constants).
//
// Rules (docs/protocol.md, "Ticket (42 bytes)"):
// * ticket = version:u8 (=1) | key_id:u8 | room_id:16 | expires:u64be | mac:16.
// * A client cannot verify the MAC (the relay holds the key), so `expires` as
//   read here is the relay's unauthenticated claim, good for display only.
// * Any 42 bytes with version 1 are structurally valid; anything else is
//   MalformedTicket with the twin's message.

import { readU64, toBytes } from "./bytes.js";
import { TicketError } from "./errors.js";

/** @typedef {import("./bytes.js").Bytes} Bytes */
/** @typedef {"A" | "B"} Seat */

export const TICKET_SIZE = 42;
export const TOKEN_SIZE = 16;
export const ROOM_ID_SIZE = 16;
export const TICKET_VERSION = 1;
/** The bytes the ticket MAC covers. */
export const SIGNED_SIZE = 26;

/** @type {Readonly<Record<Seat, number>>} wire value: the ASCII code of the letter */
export const SEAT_BYTE = Object.freeze({ A: 0x41, B: 0x42 });

/** The ticket bytes do not have the version-1 layout (length or version). */
export class MalformedTicket extends TicketError {}

/**
 * @typedef {object} Ticket
 * @property {number} version
 * @property {number} keyId
 * @property {Bytes} roomId 16 bytes
 * @property {bigint} expires unix seconds, as the relay claims it
 * @property {Bytes} mac 16 bytes
 */

/**
 * Decode the structure of a ticket (no key needed: clients read the room id).
 * @param {Uint8Array} data
 * @returns {Readonly<Ticket>}
 * @throws {MalformedTicket} wrong length or unknown version
 */
export function parseTicket(data) {
  if (data.length !== TICKET_SIZE) {
    throw new MalformedTicket(`ticket must be ${TICKET_SIZE} bytes, got ${data.length}`);
  }
  if (data[0] !== TICKET_VERSION) throw new MalformedTicket(`unsupported ticket version ${data[0]}`);
  return Object.freeze({
    version: data[0],
    keyId: data[1],
    roomId: toBytes(data.subarray(2, 18)),
    expires: readU64(data, 18),
    mac: toBytes(data.subarray(SIGNED_SIZE, TICKET_SIZE)),
  });
}


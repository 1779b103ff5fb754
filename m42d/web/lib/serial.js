// One-at-a-time execution for the async state machines (Noise CipherState and
// HandshakeState, the STREAM decryptor). Python twin: none; the Python cores
// are synchronous, so each call there runs to completion before the next.
//
// Rules:
// * WebCrypto is asynchronous, so a state machine's methods return promises.
//   Operations on one machine run strictly in call order, each after the
//   previous one settled, exactly as if they were synchronous: a caller that
//   does not await (or two callers) cannot make two decryptions use the same
//   nonce or interleave two handshake steps.
// * A failed operation does not stop the queue; the next one runs and sees
//   whatever state the failure left (e.g. a handshake marked failed).

export class Serial {
  /** @type {Promise<unknown>} */
  #tail = Promise.resolve();

  /**
   * Run `operation` after every operation queued before it has settled.
   * @template T
   * @param {() => Promise<T>} operation
   * @returns {Promise<T>}
   */
  run(operation) {
    const result = this.#tail.then(operation);
    this.#tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}

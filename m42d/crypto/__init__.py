"""Cryptographic cores of m42d: the Noise engine, file STREAM AEAD and the SAS.

Nothing here does I/O or imports trio; everything runs on ``cryptography``
primitives that browsers also offer through WebCrypto (X25519, AES-GCM,
SHA-256, HKDF, HMAC), so a browser client can interoperate.
"""

// Sealed purchases in the browser: libsodium's sealed box (crypto_box_seal) with TweetNaCl and
// BLAKE2b, and the protocol v1 message that carries it in the paying transaction.
//
// A sealed box is anonymous public-key encryption: only the holder of the recipient's secret key
// opens it, and it does not say who sealed it. libsodium's layout, which PyNaCl's SealedBox
// opens: a fresh X25519 key pair (epk, esk) for every message,
//   nonce  = BLAKE2b-192(epk ‖ recipient_pk)           (24 bytes, no key)
//   output = epk (32 bytes) ‖ crypto_box(message, nonce, recipient_pk, esk)   (16-byte MAC first)
// so the output is 48 bytes longer than the message.
import nacl from "../vendor/tweetnacl-fast.mjs";
import { blake2b } from "../vendor/blakejs.mjs";

export const SEALED_PREFIX = "sealed1:";
// One transaction's message field: 2187 trytes (a longer message would need more transactions).
export const MAX_MESSAGE_TRYTES = 2187;
// PyOTA's AsciiTrytesCodec: a byte b is the two trytes ALPHABET[b % 27], ALPHABET[b / 27].
export const TRYTE_ALPHABET = "9ABCDEFGHIJKLMNOPQRSTUVWXYZ";

const PUBLIC_KEY_BYTES = nacl.box.publicKeyLength; // 32
const NONCE_BYTES = nacl.box.nonceLength; // 24
export const SEAL_OVERHEAD = PUBLIC_KEY_BYTES + nacl.box.overheadLength; // 48

function sealNonce(ephemeralPublicKey, recipientPublicKey) {
  const input = new Uint8Array(2 * PUBLIC_KEY_BYTES);
  input.set(ephemeralPublicKey, 0);
  input.set(recipientPublicKey, PUBLIC_KEY_BYTES);
  return blake2b(input, undefined, NONCE_BYTES);
}

function checkBytes(value, name, length) {
  if (!(value instanceof Uint8Array)) throw new TypeError(`${name} must be a Uint8Array`);
  if (length !== undefined && value.length !== length) {
    throw new Error(`${name} must be ${length} bytes, not ${value.length}`);
  }
}

// libsodium crypto_box_seal: `messageBytes` sealed to `recipientPublicKey` (X25519, 32 bytes).
export function sealedBox(messageBytes, recipientPublicKey) {
  checkBytes(messageBytes, "message");
  checkBytes(recipientPublicKey, "public key", PUBLIC_KEY_BYTES);
  const ephemeral = nacl.box.keyPair();
  try {
    const nonce = sealNonce(ephemeral.publicKey, recipientPublicKey);
    const boxed = nacl.box(messageBytes, nonce, recipientPublicKey, ephemeral.secretKey);
    const out = new Uint8Array(PUBLIC_KEY_BYTES + boxed.length);
    out.set(ephemeral.publicKey, 0);
    out.set(boxed, PUBLIC_KEY_BYTES);
    return out;
  } finally {
    ephemeral.secretKey.fill(0); // used once, then forgotten
  }
}

// libsodium crypto_box_seal_open: the message, or null if the box does not open with this key
// pair (wrong key, altered or truncated box).
export function openSealedBox(box, publicKey, secretKey) {
  checkBytes(box, "box");
  checkBytes(publicKey, "public key", PUBLIC_KEY_BYTES);
  checkBytes(secretKey, "secret key", nacl.box.secretKeyLength);
  if (box.length < SEAL_OVERHEAD) return null;
  const ephemeralPublicKey = box.subarray(0, PUBLIC_KEY_BYTES);
  const nonce = sealNonce(ephemeralPublicKey, publicKey);
  return nacl.box.open(box.subarray(PUBLIC_KEY_BYTES), nonce, ephemeralPublicKey, secretKey);
}

// PyOTA 2.1.0 TryteString.from_bytes: two trytes per byte, the low "digit" first.
export function bytesToTrytes(bytes) {
  checkBytes(bytes, "bytes");
  let out = "";
  for (const b of bytes) out += TRYTE_ALPHABET[b % 27] + TRYTE_ALPHABET[Math.floor(b / 27)];
  return out;
}

// Standard base64 with padding (what Python's base64.b64decode reads).
export function bytesToBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

export function base64ToBytes(text) {
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

// Protocol v1: the message trytes of the transaction that pays a quote. The payload (JSON, UTF-8)
// sealed to the seller's key, as the ASCII text "sealed1:" + base64(box), as PyOTA's trytes of
// that text. It must fit one transaction's message: about 765 bytes of JSON at most.
export function sealedMessage(payload, sellerPublicKeyB64) {
  const key = base64ToBytes(sellerPublicKeyB64);
  if (key.length !== PUBLIC_KEY_BYTES) {
    throw new Error(`the seller's key must be ${PUBLIC_KEY_BYTES} bytes, not ${key.length}`);
  }
  const json = new TextEncoder().encode(JSON.stringify(payload));
  const text = SEALED_PREFIX + bytesToBase64(sealedBox(json, key));
  // base64 is ASCII: one byte per character.
  const trytes = bytesToTrytes(Uint8Array.from(text, (ch) => ch.charCodeAt(0)));
  if (trytes.length > MAX_MESSAGE_TRYTES) {
    throw new Error(
      `the sealed message is ${trytes.length} trytes, more than one transaction holds ` +
        `(${MAX_MESSAGE_TRYTES}): the payload is too long`,
    );
  }
  return trytes;
}

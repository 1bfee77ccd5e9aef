// A fresh RSA-2048 private key as a JWK (RS256, with a random kid): the key provider.mjs signs with.
//
//   node tests/oidc/signing-key.mjs      prints one on stdout
//
// The Rust SSO harness runs it once per test process and hands the key to every provider.mjs it
// starts, so a loaded machine pays for RSA key generation (seconds under load) once, not once per
// provider start.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import process from 'node:process';
import { pathToFileURL } from 'node:url';

export function rsaSigningKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    ...privateKey.export({ format: 'jwk' }),
    kid: `test-rsa-${randomBytes(6).toString('hex')}`,
    use: 'sig',
    alg: 'RS256',
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.stdout.write(`${JSON.stringify(rsaSigningKey())}\n`);
}

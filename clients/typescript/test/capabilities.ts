// Calls GetCapabilities once per case of a config, with that case's connection options (address, API key,
// TLS files), and prints each case's outcome as JSON: "OK" and the gateway's limits, or the gRPC code name.
// Usage: node dist/test/capabilities.js CONFIG.json, where the config is {"cases": [{"name", "address",
// "apiKey"?, "tls"?: {"ca"?, "cert"?, "key"?} (PEM file paths) or true}]}.

import { readFileSync } from "node:fs";
import { Code, ConnectError, createHemascopeClient, type TlsOptions } from "../src/index.js";

interface TlsFiles {
  ca?: string;
  cert?: string;
  key?: string;
}

interface Case {
  name: string;
  address: string;
  apiKey?: string;
  tls?: TlsFiles | true;
}

function tlsOptions(files: TlsFiles | true | undefined): TlsOptions | boolean | undefined {
  if (files === undefined || files === true) return files;
  const options: TlsOptions = {};
  if (files.ca !== undefined) options.ca = readFileSync(files.ca);
  if (files.cert !== undefined) options.cert = readFileSync(files.cert);
  if (files.key !== undefined) options.key = readFileSync(files.key);
  return options;
}

async function outcome(item: Case): Promise<Record<string, unknown>> {
  const tls = tlsOptions(item.tls);
  const client = createHemascopeClient({
    address: item.address,
    timeoutMs: 20_000,
    ...(item.apiKey !== undefined ? { apiKey: item.apiKey } : {}),
    ...(tls !== undefined ? { tls } : {}),
  });
  try {
    const capabilities = await client.analysis.getCapabilities({});
    return { code: "OK", max_streams_per_caller: capabilities.maxStreamsPerCaller };
  } catch (error) {
    return { code: Code[ConnectError.from(error).code] };
  } finally {
    client.close();
  }
}

const configPath = process.argv[2];
if (configPath === undefined) throw new Error("usage: capabilities.js CONFIG.json");
const cases = (JSON.parse(readFileSync(configPath, "utf8")) as { cases: Case[] }).cases;
const results: Record<string, unknown> = {};
for (const item of cases) {
  results[item.name] = await outcome(item);
}
process.stdout.write(JSON.stringify(results) + "\n");

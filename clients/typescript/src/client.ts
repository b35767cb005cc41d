// A gRPC (HTTP/2) connection to the Hemascope gateway with typed clients for both of its public APIs:
// AnalysisService and the Open Inference Protocol (KServe v2 GRPCInferenceService), and for its
// administrative GatewayAdminService (PromoteBundle; API keys with the admin role only).

import type * as http2 from "node:http2";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { GatewayAdminService } from "./gen/hemascope/v1/admin_pb.js";
import { AnalysisService } from "./gen/hemascope/v1/analysis_pb.js";
import { GRPCInferenceService } from "./gen/grpc_service_pb.js";

/** The metadata entry the gateway reads the API key from. */
export const API_KEY_HEADER = "x-api-key";

/** TLS towards the gateway: PEM strings or buffers; omitted fields fall back to Node's defaults. */
export interface TlsOptions {
  /** CA certificate(s) that signed the gateway's certificate; default: Node's bundled roots. */
  ca?: string | Buffer;
  /** Client certificate, for a gateway that requires one (mutual TLS). */
  cert?: string | Buffer;
  /** The client certificate's private key. */
  key?: string | Buffer;
  /** Name to check the gateway's certificate against, when it differs from the address's host. */
  serverName?: string;
}

export interface HemascopeClientOptions {
  /** The gateway: "host:port", or a URL ("https://host:port") whose scheme decides TLS. */
  address: string;
  /** API key, sent as `x-api-key` on every call. */
  apiKey?: string;
  /** TLS: `true` for Node's default roots, or explicit certificates. Default: plaintext. */
  tls?: boolean | TlsOptions;
  /** Deadline of every call that sets none itself, in milliseconds. Default: none. */
  timeoutMs?: number;
  /** Further interceptors, run after the one adding the API key. */
  interceptors?: Interceptor[];
}

export interface HemascopeClient {
  /** Hemascope's own API: Analyze, AnalyzeStream, GetCapabilities. */
  readonly analysis: Client<typeof AnalysisService>;
  /** The Open Inference Protocol (KServe v2): model `hemascope` (see kserve.ts for its tensors). */
  readonly kserve: Client<typeof GRPCInferenceService>;
  /** Administrative calls (PromoteBundle): the gateway answers only an API key whose role is admin. */
  readonly admin: Client<typeof GatewayAdminService>;
  /** Closes the HTTP/2 connection; calls still running fail. */
  close(): void;
}

/** The transport's base URL for an address. */
export function baseUrl(address: string, tls: boolean): string {
  if (/^https?:\/\//.test(address)) {
    return address;
  }
  return `${tls ? "https" : "http"}://${address}`;
}

function nodeOptions(tls: HemascopeClientOptions["tls"]): http2.SecureClientSessionOptions {
  if (tls === undefined || typeof tls === "boolean") {
    return {};
  }
  const options: http2.SecureClientSessionOptions = {};
  if (tls.ca !== undefined) options.ca = tls.ca;
  if (tls.cert !== undefined) options.cert = tls.cert;
  if (tls.key !== undefined) options.key = tls.key;
  if (tls.serverName !== undefined) options.servername = tls.serverName;
  return options;
}

/** An interceptor that sends `apiKey` as the `x-api-key` metadata entry. */
export function apiKeyInterceptor(apiKey: string): Interceptor {
  return (next) => async (request) => {
    request.header.set(API_KEY_HEADER, apiKey);
    return next(request);
  };
}

/** Connects (lazily, on the first call) to the gateway at `options.address`. */
export function createHemascopeClient(options: HemascopeClientOptions): HemascopeClient {
  const url = baseUrl(options.address, options.tls !== undefined && options.tls !== false);
  if (url.startsWith("http://") && options.tls !== undefined && options.tls !== false) {
    throw new Error(`TLS options given for a plaintext address: ${options.address}`);
  }
  const sessionOptions = nodeOptions(options.tls);
  const sessionManager = new Http2SessionManager(url, {}, sessionOptions);
  const interceptors = [
    ...(options.apiKey !== undefined ? [apiKeyInterceptor(options.apiKey)] : []),
    ...(options.interceptors ?? []),
  ];
  const transport = createGrpcTransport({
    baseUrl: url,
    sessionManager,
    nodeOptions: sessionOptions,
    interceptors,
    ...(options.timeoutMs !== undefined ? { defaultTimeoutMs: options.timeoutMs } : {}),
  });
  return {
    analysis: createClient(AnalysisService, transport),
    kserve: createClient(GRPCInferenceService, transport),
    admin: createClient(GatewayAdminService, transport),
    close: () => sessionManager.abort(),
  };
}

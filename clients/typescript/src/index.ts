// The Hemascope gateway's TypeScript client: generated messages and services (src/gen, from protos/ and
// the KServe v2 contract), a connection helper with API key and TLS options, and KServe tensor helpers.

export * from "./client.js";
export * from "./kserve.js";
export * from "./gen/hemascope/v1/admin_pb.js";
export * from "./gen/hemascope/v1/analysis_pb.js";
export * from "./gen/hemascope/v1/classifier_pb.js";
export * from "./gen/hemascope/v1/common_pb.js";
export * from "./gen/hemascope/v1/detector_pb.js";
export * from "./gen/hemascope/v1/explain_pb.js";
export * from "./gen/hemascope/v1/feature_pb.js";
/** The KServe v2 (`inference` package) messages and GRPCInferenceService. */
export * as inference from "./gen/grpc_service_pb.js";
export { create } from "@bufbuild/protobuf";
export { Code, ConnectError } from "@connectrpc/connect";

// Unit tests of the hand-written parts of the client (node:test; tests/unit/test_ts_client.py runs them):
// the KServe tensor packing and the connection options. What travels over the wire is checked against a
// real gateway by interop.ts.

import assert from "node:assert/strict";
import { test } from "node:test";
import {
  baseUrl,
  create,
  createHemascopeClient,
  decodeBoolTensor,
  GatewayAdminService,
  decodeBytesTensor,
  decodeFp32Tensor,
  encodeBytesTensor,
  imageInferRequest,
  inference,
  readImageInferences,
} from "../src/index.js";

const bytes = (...values: number[]): Uint8Array => new Uint8Array(values);
const text = (value: string): Uint8Array => new TextEncoder().encode(value);

test("BYTES tensors: 4-byte little-endian length, then the data; empty elements kept", () => {
  const raw = encodeBytesTensor([text("ab"), bytes(), bytes(0xff)]);
  assert.deepEqual(raw, bytes(2, 0, 0, 0, 0x61, 0x62, 0, 0, 0, 0, 1, 0, 0, 0, 0xff));
  assert.deepEqual(decodeBytesTensor(raw), [text("ab"), bytes(), bytes(0xff)]);
  assert.deepEqual(decodeBytesTensor(bytes()), []);
});

test("BYTES tensors: data cut short is refused", () => {
  assert.throws(() => decodeBytesTensor(bytes(5, 0, 0, 0, 1, 2)), /element cut short/);
  assert.throws(() => decodeBytesTensor(bytes(1, 0, 0, 0, 7, 1, 0)), /length prefix cut short/);
});

test("BYTES tensors: a view into a larger buffer decodes from its own offset", () => {
  const backing = bytes(9, 9, 9, 1, 0, 0, 0, 0x41);
  assert.deepEqual(decodeBytesTensor(backing.subarray(3)), [text("A")]);
});

test("FP32 and BOOL tensors are little-endian arrays", () => {
  assert.deepEqual(Array.from(decodeFp32Tensor(bytes(0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0))), [1, -2]);
  assert.throws(() => decodeFp32Tensor(bytes(0, 0, 0x80)), /FP32 tensor of 3 bytes/);
  assert.deepEqual(decodeBoolTensor(bytes(1, 0, 1)), [true, false, true]);
});

test("imageInferRequest: model hemascope, IMAGE BYTES [n], parameters only when given", () => {
  const request = imageInferRequest([text("x"), text("yz")], { models: ["svm", "xgboost"], malignantThreshold: 0.3 });
  assert.equal(request.modelName, "hemascope");
  assert.deepEqual(
    request.inputs.map((t) => [t.name, t.datatype, t.shape]),
    [["IMAGE", "BYTES", [2n]]],
  );
  assert.deepEqual(request.rawInputContents, [encodeBytesTensor([text("x"), text("yz")])]);
  assert.deepEqual(request.parameters["models"]?.parameterChoice, { case: "stringParam", value: "svm,xgboost" });
  assert.deepEqual(request.parameters["malignant_threshold"]?.parameterChoice, { case: "doubleParam", value: 0.3 });
  assert.deepEqual(Object.keys(imageInferRequest([text("x")]).parameters), []);
});

function fp32(values: number[]): Uint8Array {
  const raw = new Uint8Array(values.length * 4);
  values.forEach((value, index) => new DataView(raw.buffer).setFloat32(index * 4, value, true));
  return raw;
}

function response(probabilities: number[], classes = "a,b"): inference.ModelInferResponse {
  const outputs: [string, string, bigint[], Uint8Array][] = [
    ["LABEL", "BYTES", [2n], encodeBytesTensor([text("b"), text("a")])],
    ["PROBABILITIES", "FP32", [2n, 2n], fp32(probabilities)],
    ["MALIGNANT_PROBABILITY", "FP32", [2n], fp32([0.5, 0.25])],
    ["REFER", "BOOL", [2n], bytes(0, 1)],
    ["CONTENT_HASH", "BYTES", [2n], encodeBytesTensor([text("h1"), text("h2")])],
  ];
  return create(inference.ModelInferResponseSchema, {
    modelName: "hemascope",
    parameters: { classes: { parameterChoice: { case: "stringParam", value: classes } } },
    outputs: outputs.map(([name, datatype, shape]) => ({ name, datatype, shape })),
    rawOutputContents: outputs.map(([, , , raw]) => raw),
  });
}

test("readImageInferences: one record per row, probabilities by the response's class order", () => {
  assert.deepEqual(readImageInferences(response([0.25, 0.75, 0.5, 0.5])), [
    { label: "b", probabilities: { a: 0.25, b: 0.75 }, malignantProbability: 0.5, refer: false, contentHash: "h1" },
    { label: "a", probabilities: { a: 0.5, b: 0.5 }, malignantProbability: 0.25, refer: true, contentHash: "h2" },
  ]);
});

test("readImageInferences: a PROBABILITIES tensor that does not fit the classes is refused", () => {
  assert.throws(() => readImageInferences(response([0.25, 0.75, 0.5])), /PROBABILITIES holds 3 values for 2 images/);
  assert.throws(() => readImageInferences(response([0.25, 0.75, 0.5, 0.5], "a,b,c")), /PROBABILITIES holds 4/);
});

test("connection options: the scheme follows TLS; TLS options on an http:// URL are refused", () => {
  assert.equal(baseUrl("gateway:50050", false), "http://gateway:50050");
  assert.equal(baseUrl("gateway:50050", true), "https://gateway:50050");
  assert.equal(baseUrl("https://gateway:443", false), "https://gateway:443");
  assert.throws(() => createHemascopeClient({ address: "http://gateway:1", tls: true }), /TLS options given/);
  createHemascopeClient({ address: "gateway:1", tls: { serverName: "gateway.lab" } }).close();
});

test("the admin client calls GatewayAdminService.PromoteBundle", () => {
  const client = createHemascopeClient({ address: "gateway:1", apiKey: "hsk_admin" });
  assert.equal(GatewayAdminService.typeName, "hemascope.v1.GatewayAdminService");
  assert.equal(GatewayAdminService.method.promoteBundle.name, "PromoteBundle");
  assert.equal(typeof client.admin.promoteBundle, "function");
  client.close();
});
